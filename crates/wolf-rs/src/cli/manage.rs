//! `pair`, `sessions` and `clients`: the running host's pairings, sessions and paired clients,
//! through its API socket; `clients` reads or edits the clients file when no host runs.

use std::path::Path;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::{ClientsAction, Paths, api_error, api_off, api_post, api_socket, client, exit};
use crate::state::clients::{self, PairedClient, matches_selector, selector_matches};

fn not_running(paths: &Paths, sock: &Path) -> u8 {
    eprintln!("no wolf-rs host is running with state directory {} (no {})", paths.state_dir.display(), sock.display());
    exit::NOT_RUNNING
}

/// A GET on the API: its answer as `T`, or the exit code after saying what failed (`offline`:
/// what to do when no host answers).
async fn api_get<T: serde::de::DeserializeOwned>(
    sock: &Path,
    route: &str,
    offline: impl FnOnce() -> u8,
) -> std::result::Result<T, u8> {
    match client::call(sock, Method::GET, route, None).await {
        Ok(Some((s, body))) if s.is_success() => serde_json::from_str(&body).map_err(|e| {
            eprintln!("unexpected answer from the host: {e}");
            exit::FAILURE
        }),
        Ok(Some((_, body))) => Err(api_error(&body)),
        Ok(None) => Err(offline()),
        Err(e) => {
            eprintln!("{e}");
            Err(exit::FAILURE)
        }
    }
}

pub(super) async fn pair(paths: &Paths, pin: String, secret: Option<String>) -> u8 {
    let Some(sock) = api_socket(paths).await else { return api_off("pair") };
    // Without a secret the host picks the only pairing that waits (wolf-rs's extension of Wolf's body).
    let body = serde_json::json!({ "pin": pin, "pair_secret": secret }).to_string();
    match client::call(&sock, Method::POST, "/api/v1/pair/client", Some(body)).await {
        Ok(None) => not_running(paths, &sock),
        Ok(Some((s, _))) if s.is_success() => {
            println!("PIN handed to the pairing: the client shows whether it matched");
            exit::OK
        }
        Ok(Some((_, body))) => api_error(&body),
        Err(e) => {
            eprintln!("{e}");
            exit::FAILURE
        }
    }
}

/// A pairing that waits, as `pair --list` prints it.
#[derive(Debug, Serialize)]
struct Waiting {
    secret: String,
    device_name: String,
    uniqueid: String,
    ip: String,
    waiting_s: u64,
}

pub(super) async fn pair_list(paths: &Paths) -> u8 {
    use crate::api_wire::PendingPairsResponse;
    let Some(sock) = api_socket(paths).await else { return api_off("pair") };
    match api_get::<PendingPairsResponse>(&sock, "/api/v1/pair/pending", || not_running(paths, &sock)).await {
        Ok(r) => {
            let list: Vec<Waiting> = r
                .requests
                .into_iter()
                .map(|p| Waiting {
                    secret: p.pair_secret,
                    device_name: p.device_name,
                    uniqueid: p.uniqueid,
                    ip: p.client_ip,
                    waiting_s: p.waiting_s,
                })
                .collect();
            println!("{}", serde_json::to_string(&list).unwrap_or_default());
            exit::OK
        }
        Err(code) => code,
    }
}

pub(super) async fn sessions_list(paths: &Paths, as_json: bool) -> u8 {
    use crate::api_wire::SessionRecordsResponse;
    let Some(sock) = api_socket(paths).await else { return api_off("sessions") };
    let list = match api_get::<SessionRecordsResponse>(&sock, "/api/v1/sessions/records", || not_running(paths, &sock))
        .await
    {
        Ok(r) => r.sessions,
        Err(code) => return code,
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
        return exit::OK;
    }
    if list.is_empty() {
        println!("no sessions");
    }
    for s in list {
        let runner = match &s.runner {
            crate::runners::RunnerHandle::None => "none".to_owned(),
            crate::runners::RunnerHandle::Process { pid, .. } => format!("pid {pid}"),
            crate::runners::RunnerHandle::Docker { container_id } => {
                format!("container {}", container_id.get(..12).unwrap_or(container_id))
            }
        };
        println!(
            "{:<6} {:<10} app={:<4} {:<14} client={} {} runner={runner}",
            s.id,
            s.state.as_str(),
            s.app_id,
            s.mode,
            s.client_ip,
            s.client_fingerprint.get(..16).unwrap_or(&s.client_fingerprint),
        );
    }
    exit::OK
}

/// A paired client as the CLI shows it (no certificate body).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClientView {
    fingerprint: String,
    name: String,
    uniqueid: String,
    ip: String,
    paired_at: u64,
}

impl From<&PairedClient> for ClientView {
    fn from(c: &PairedClient) -> Self {
        ClientView {
            fingerprint: c.fingerprint.clone(),
            name: c.name.clone(),
            uniqueid: c.uniqueid.clone(),
            ip: c.ip.clone(),
            paired_at: c.paired_at,
        }
    }
}

impl From<crate::api_wire::Client> for ClientView {
    fn from(c: crate::api_wire::Client) -> Self {
        ClientView { fingerprint: c.fingerprint, name: c.name, uniqueid: c.uniqueid, ip: c.ip, paired_at: c.paired_at }
    }
}

fn print_clients(list: &[ClientView], as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
        return;
    }
    if list.is_empty() {
        println!("no paired clients");
    }
    for c in list {
        println!("{}  {:<24} {:<16} paired_at={}", &c.fingerprint, c.name, c.ip, c.paired_at);
    }
}

/// No host answers: the clients file, read directly.
async fn list_offline(paths: &Paths, as_json: bool) -> u8 {
    let path = paths.clients();
    match tokio::task::spawn_blocking(move || clients::read_file(&path)).await {
        Ok(Ok(list)) => {
            print_clients(&list.iter().map(ClientView::from).collect::<Vec<_>>(), as_json);
            exit::OK
        }
        Ok(Err(e)) => {
            eprintln!("{e}");
            exit::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            exit::FAILURE
        }
    }
}

pub(super) async fn clients_cmd(paths: &Paths, action: ClientsAction) -> u8 {
    use crate::api_wire::ClientsResponse;
    let sock = api_socket(paths).await;
    match action {
        // The file is what the host wrote last: read it when no host answers (or none can be asked).
        ClientsAction::List { json } => {
            let Some(sock) = sock else { return list_offline(paths, json).await };
            match client::call(&sock, Method::GET, "/api/v1/clients", None).await {
                Ok(None) => list_offline(paths, json).await,
                Ok(Some((s, body))) if s.is_success() => match serde_json::from_str::<ClientsResponse>(&body) {
                    Ok(r) => {
                        print_clients(&r.clients.into_iter().map(ClientView::from).collect::<Vec<_>>(), json);
                        exit::OK
                    }
                    Err(e) => {
                        eprintln!("unexpected answer from the host: {e}");
                        exit::FAILURE
                    }
                },
                Ok(Some((_, body))) => api_error(&body),
                Err(e) => {
                    eprintln!("{e}");
                    exit::FAILURE
                }
            }
        }
        // With the API off a running host cannot be told apart from none: editing its file under
        // it would be undone by its next write.
        ClientsAction::Remove { selector } => {
            let Some(sock) = sock else { return api_off("clients remove") };
            let listed = match client::call(&sock, Method::GET, "/api/v1/clients", None).await {
                Ok(None) => return remove_offline(paths, selector).await,
                Ok(Some((s, body))) if s.is_success() => serde_json::from_str::<ClientsResponse>(&body),
                Ok(Some((_, body))) => return api_error(&body),
                Err(e) => {
                    eprintln!("{e}");
                    return exit::FAILURE;
                }
            };
            let listed = match listed {
                Ok(r) => r.clients,
                Err(e) => {
                    eprintln!("unexpected answer from the host: {e}");
                    return exit::FAILURE;
                }
            };
            remove_online(&sock, &selector, listed).await
        }
    }
}

/// Unpair, through the API, each listed client `selector` picks.
async fn remove_online(sock: &Path, selector: &str, listed: Vec<crate::api_wire::Client>) -> u8 {
    let gone: Vec<ClientView> = listed
        .into_iter()
        .filter(|c| selector_matches(&c.fingerprint, &c.name, selector))
        .map(ClientView::from)
        .collect();
    if gone.is_empty() {
        eprintln!("no paired client matches {selector:?}");
        return exit::FAILURE;
    }
    for c in gone {
        let body = serde_json::json!({ "client_id": c.fingerprint }).to_string();
        if let Err(code) = api_post(sock, Method::POST, "/api/v1/unpair/client", body).await {
            return code;
        }
        println!("removed {} ({})", c.name, c.fingerprint);
    }
    exit::OK
}

/// No host running: edit the file directly (atomically).
async fn remove_offline(paths: &Paths, selector: String) -> u8 {
    let path = paths.clients();
    let result = tokio::task::spawn_blocking(move || -> crate::error::Result<Vec<ClientView>> {
        let list = clients::read_file(&path)?;
        let (gone, kept): (Vec<_>, Vec<_>) = list.into_iter().partition(|c| matches_selector(c, &selector));
        if !gone.is_empty() {
            clients::write_file(&path, &kept)?;
        }
        Ok(gone.iter().map(ClientView::from).collect())
    })
    .await;
    match result {
        Ok(Ok(gone)) if gone.is_empty() => {
            eprintln!("no paired client matches");
            exit::FAILURE
        }
        Ok(Ok(gone)) => {
            for c in gone {
                println!("removed {} ({})", c.name, c.fingerprint);
            }
            exit::OK
        }
        Ok(Err(e)) => {
            eprintln!("{e}");
            exit::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            exit::FAILURE
        }
    }
}

/// `wolf-rs events`: the lifecycle log, oldest first.
pub async fn events(paths: &Paths, json: bool) -> u8 {
    let path = crate::lifecycle::path(&paths.state_dir);
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || crate::lifecycle::read(&path)).await
    };
    let (records, unreadable) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("wolf-rs events: reading {}: {e}", path.display());
            return exit::FAILURE;
        }
        Err(e) => {
            eprintln!("wolf-rs events: {e}");
            return exit::FAILURE;
        }
    };
    for r in &records {
        if json {
            match serde_json::to_string(r) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("wolf-rs events: {e}"),
            }
        } else {
            println!("{r}");
        }
    }
    if unreadable > 0 {
        eprintln!("wolf-rs events: {unreadable} line(s) of {} could not be read", path.display());
    }
    exit::OK
}
