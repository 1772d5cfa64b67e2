//! The command line: `serve` (default: the supervisor, see `supervisor`), `restart`,
//! `control-plane` (the host itself, as the supervisor runs it), `config check|import-wolf`, `pair`,
//! `sessions`, `clients`, `apps`, `lobbies`, `events`, `healthcheck`, `version`.

pub mod client;
mod manage;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hyper::Method;

use crate::app::{self, Paths};
use crate::config::{Config, ConfigError, Env};

#[derive(Debug, Parser)]
#[command(name = "wolf-rs", version, about = "A GameStream host for Moonlight clients")]
pub struct Cli {
    /// State directory: config.toml (written on first start), key, certificate, paired clients.
    #[arg(long, env = "WOLF_STATE_DIR", default_value = "./data", global = true)]
    pub state_dir: PathBuf,
    /// Config file (default: <state dir>/config.toml).
    #[arg(long, env = "WOLF_CFG_FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host under its supervisor (the default): the control plane is restarted in place
    /// when it exits.
    Serve,
    /// Restart the control plane in place (after an upgrade of the binary): sessions are kept and
    /// adopted by the new one.
    Restart,
    /// Run the host's control plane without a supervisor (what `serve` runs as its child).
    #[command(hide = true)]
    ControlPlane,
    /// Stream one session (what the control plane starts for each session).
    #[command(hide = true)]
    SessionProcess {
        #[arg(long)]
        session: u32,
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        bind: std::net::IpAddr,
        #[arg(long)]
        udp_ports: crate::config::PortRange,
        #[arg(long)]
        log_dir: PathBuf,
        #[arg(long)]
        owner: String,
        #[arg(long, default_value_t = 10_000)]
        warn_after_ms: u64,
        #[arg(long, default_value_t = 30_000)]
        exit_after_ms: u64,
    },
    /// Validate the config.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Give the PIN a Moonlight client shows to the pairing that waits for it.
    Pair {
        /// The 4-digit PIN.
        pin: Option<String>,
        /// Which waiting pairing (the secret after '#' in the PIN page link); needed only when
        /// several wait.
        #[arg(long)]
        secret: Option<String>,
        /// List the pairings that wait for a PIN.
        #[arg(long, conflicts_with = "pin")]
        list: bool,
    },
    /// What the running host knows about its sessions.
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Paired clients.
    Clients {
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// The apps clients see, through the running host's API (`/api/v1/apps`): config.toml's and
    /// those added at run time.
    Apps {
        #[command(subcommand)]
        action: AppsAction,
    },
    /// Lobbies (apps with their own display that sessions join), through the running host's API.
    Lobbies {
        #[command(subcommand)]
        action: LobbiesAction,
    },
    /// Exit 0 only when the host's /health answers 200 within 2 s (for Docker HEALTHCHECK).
    Healthcheck {
        #[arg(long, env = "WOLF_HEALTH_URL", default_value = "http://127.0.0.1:47985/health")]
        url: String,
    },
    /// What the control plane and its sessions did, from `<state>/events.log` (works with the host
    /// stopped): starts, exits (with the code, and what hung), sessions started, adopted, ended.
    Events {
        /// The log's JSON lines as they are.
        #[arg(long)]
        json: bool,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print every problem in the config; exit non-zero if there is any.
    Check,
    /// Carry a Wolf config.toml over (with the host stopped): its paired clients stay paired, its
    /// hostname and uuid are kept, its Moonlight apps are added; what cannot be carried is listed.
    ImportWolf {
        /// Wolf's config.toml.
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// List the sessions (through the API socket of the running host).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppsAction {
    /// List the apps.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add an app (kept across restarts); a process app with --command, a container with --image.
    Add {
        #[arg(long)]
        title: String,
        /// Its id (default: a new UUID); an app added again under the same id is replaced.
        #[arg(long)]
        id: Option<String>,
        /// The command line of a process app.
        #[arg(long, conflicts_with = "image", required_unless_present = "image")]
        command: Option<String>,
        /// The image of a container app.
        #[arg(long)]
        image: Option<String>,
        /// NAME=VALUE for the app (repeatable).
        #[arg(long)]
        env: Vec<String>,
        /// SRC:DST[:MODE] into the container (repeatable).
        #[arg(long)]
        mount: Vec<String>,
        /// A virtual display and an audio sink per session.
        #[arg(long)]
        desktop: bool,
    },
    /// Remove an added app by its id.
    Remove { id: String },
}

#[derive(Debug, Subcommand)]
pub enum LobbiesAction {
    /// List the lobbies.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Start a lobby; prints its id.
    Create {
        #[arg(long)]
        name: String,
        /// The command line of its app (a process).
        #[arg(long, conflicts_with = "image", required_unless_present = "image")]
        command: Option<String>,
        /// The image of its app (a container).
        #[arg(long)]
        image: Option<String>,
        #[arg(long, default_value = "1920x1080x60")]
        mode: String,
        /// Digits a joining session must give.
        #[arg(long)]
        pin: Option<String>,
        /// Admit more than one session.
        #[arg(long)]
        multi_user: bool,
        /// Stop when the last session leaves.
        #[arg(long)]
        stop_when_everyone_leaves: bool,
    },
    /// Stop a lobby.
    Stop {
        id: String,
        #[arg(long)]
        pin: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientsAction {
    /// List paired clients.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Unpair a client by fingerprint prefix (8+ hex characters) or exact name.
    Remove { selector: String },
}

/// Whether `cli` runs the supervisor (which must run without an async runtime).
pub fn supervises(cli: &Cli) -> bool {
    matches!(cli.command, None | Some(Command::Serve))
}

/// The session process's arguments, when `cli` runs one (it runs without an async runtime).
pub fn session_process_args(cli: &Cli) -> Option<crate::session_process::process::Args> {
    match &cli.command {
        Some(Command::SessionProcess {
            session,
            socket,
            bind,
            udp_ports,
            log_dir,
            owner,
            warn_after_ms,
            exit_after_ms,
        }) => Some(crate::session_process::process::Args {
            session_id: *session,
            socket: socket.clone(),
            bind: *bind,
            ports: *udp_ports,
            log_dir: log_dir.clone(),
            owner: owner.clone(),
            warn_after: std::time::Duration::from_millis(*warn_after_ms),
            exit_after: std::time::Duration::from_millis(*exit_after_ms),
        }),
        _ => None,
    }
}

/// `wolf-rs session-process`: stream one session until it ends. Blocking.
pub fn session_process(args: crate::session_process::process::Args) -> u8 {
    let id = args.session_id;
    match crate::session_process::process::run(args) {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!(session = id, "session process: {e}");
            exit::FAILURE
        }
    }
}

/// `wolf-rs serve`: the supervisor, running `<this binary> [options] control-plane`. Blocking.
pub fn supervise(state_dir: &Path, config: Option<&Path>) -> u8 {
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wolf-rs: cannot find its own binary: {e}");
            return exit::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(state_dir) {
        eprintln!("wolf-rs: creating the state directory {}: {e}", state_dir.display());
        return exit::FAILURE;
    }
    let mut args: Vec<std::ffi::OsString> = vec!["--state-dir".into(), state_dir.into()];
    if let Some(c) = config {
        args.extend(["--config".into(), c.into()]);
    }
    args.push("control-plane".into());
    // The policy from the config; a config that does not load is the control plane's to report.
    let paths = Paths::new(state_dir.to_owned(), config.map(Path::to_owned));
    let policy = Config::load(&paths.config, &Env::from_process()).map(|c| c.supervisor).unwrap_or_default();
    crate::supervisor::run(crate::supervisor::Child { program, args }, state_dir, policy)
}

/// Exit codes, documented in the README.
pub use crate::error::exit;

pub async fn run(cli: Cli) -> ExitCode {
    let paths = Paths::new(cli.state_dir.clone(), cli.config.clone());
    let code = match cli.command.unwrap_or(Command::Serve) {
        // `main` runs the supervisor without a runtime; here only if called as a library.
        Command::Serve => {
            let (state_dir, config) = (cli.state_dir.clone(), cli.config.clone());
            tokio::task::spawn_blocking(move || supervise(&state_dir, config.as_deref())).await.unwrap_or(exit::FAILURE)
        }
        Command::Restart => match crate::supervisor::request_restart(&paths.state_dir) {
            Ok(pid) => {
                println!("restart asked of the supervisor (pid {pid})");
                exit::OK
            }
            Err(e) => {
                eprintln!("wolf-rs restart: {e}");
                exit::NOT_RUNNING
            }
        },
        Command::SessionProcess { .. } => exit::USAGE,
        Command::ControlPlane => match app::serve(paths, Env::from_process()).await {
            Ok(()) => exit::OK,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("wolf-rs: {e}");
                e.exit_code()
            }
        },
        Command::Config { action: ConfigAction::Check } => config_check(&paths).await,
        Command::Config { action: ConfigAction::ImportWolf { path } } => import_wolf(&paths, path).await,
        Command::Pair { list: true, .. } => manage::pair_list(&paths).await,
        Command::Pair { pin: Some(pin), secret, .. } => manage::pair(&paths, pin, secret).await,
        Command::Pair { .. } => {
            eprintln!("wolf-rs pair: give the PIN (wolf-rs pair 1234) or --list");
            exit::USAGE
        }
        Command::Clients { action } => manage::clients_cmd(&paths, action).await,
        Command::Apps { action } => apps_cmd(&paths, action).await,
        Command::Lobbies { action } => lobbies_cmd(&paths, action).await,
        Command::Sessions { action: SessionsAction::List { json } } => manage::sessions_list(&paths, json).await,
        Command::Healthcheck { url } => healthcheck(&url).await,
        Command::Events { json } => manage::events(&paths, json).await,
        Command::Version => {
            println!("wolf-rs {}", env!("CARGO_PKG_VERSION"));
            exit::OK
        }
    };
    ExitCode::from(code)
}

/// How long `healthcheck` waits for the whole answer.
const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn healthcheck(url: &str) -> u8 {
    match tokio::time::timeout(HEALTHCHECK_TIMEOUT, get_plain(url)).await {
        Ok(Ok((200, body))) => {
            println!("{}", body.trim());
            exit::OK
        }
        Ok(Ok((code, body))) => {
            eprintln!("unhealthy: HTTP {code}: {}", body.trim());
            exit::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("no answer from {url}: {e}");
            exit::FAILURE
        }
        Err(_) => {
            eprintln!("no answer from {url} within {} s", HEALTHCHECK_TIMEOUT.as_secs());
            exit::FAILURE
        }
    }
}

/// Why `healthcheck` got no answer; printed after "no answer from URL: ".
#[derive(Debug, thiserror::Error)]
enum GetError {
    #[error("bad URL {url:?}: {source}")]
    BadUrl { url: String, source: hyper::http::uri::InvalidUri },
    #[error("only http:// URLs are supported")]
    NotHttp,
    #[error("the URL has no host")]
    NoHost,
    #[error(transparent)]
    Lookup(std::io::Error),
    #[error("{host} has no address")]
    NoAddress { host: String },
    #[error("connecting to {addr}: {source}")]
    Connect { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Request(crate::error::Error),
}

/// GET an `http://host:port/path` URL: (status, body).
async fn get_plain(url: &str) -> Result<(u16, String), GetError> {
    let uri: hyper::Uri = url.parse().map_err(|source| GetError::BadUrl { url: url.to_owned(), source })?;
    if uri.scheme_str() != Some("http") {
        return Err(GetError::NotHttp);
    }
    let host = uri.host().ok_or(GetError::NoHost)?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(GetError::Lookup)?
        .next()
        .ok_or_else(|| GetError::NoAddress { host: host.to_owned() })?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|source| GetError::Connect { addr, source })?;
    let (status, body) =
        crate::net::http1::request(tcp, Method::GET, path, None, crate::error::ErrorKind::Io, "health")
            .await
            .map_err(GetError::Request)?;
    Ok((status.as_u16(), body))
}

async fn import_wolf(paths: &Paths, wolf: PathBuf) -> u8 {
    // A host that runs would keep its own paired clients and overwrite the import. With the API
    // off there is no socket to ask.
    if let Some(sock) = api_socket(paths).await
        && let Ok(Some(_)) = client::call(&sock, Method::GET, "/api/v1/clients", None).await
    {
        eprintln!("wolf-rs config import-wolf: a host runs with {}; stop it first", paths.state_dir.display());
        return exit::FAILURE;
    }
    let p = paths.clone();
    let run = move || {
        crate::app::ensure_config(&p.config)?;
        crate::state::import::import_wolf(&wolf, &p.config, &p.clients())
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(Ok(report)) => {
            print!("{report}");
            exit::OK
        }
        Ok(Err(e)) => {
            eprintln!("wolf-rs config import-wolf: {e}");
            if e.kind == crate::error::ErrorKind::Config { exit::CONFIG } else { exit::FAILURE }
        }
        Err(e) => {
            eprintln!("wolf-rs config import-wolf: {e}");
            exit::FAILURE
        }
    }
}

async fn config_check(paths: &Paths) -> u8 {
    let path = paths.config.clone();
    let result = tokio::task::spawn_blocking(move || Config::load(&path, &Env::from_process())).await;
    match result {
        Ok(Ok(cfg)) => {
            println!(
                "{}: OK ({} app(s), ports http {} https {})",
                paths.config.display(),
                cfg.apps.len(),
                cfg.ports.http,
                cfg.ports.https
            );
            if cfg.pairing.pin.len() > 1 {
                println!(
                    "note: pairing.pin has {} entries; clients must use the first ({})",
                    cfg.pairing.pin.len(),
                    cfg.pairing.pin[0]
                );
            }
            exit::OK
        }
        Ok(Err(e @ ConfigError::Read { .. })) => {
            eprintln!("{e}");
            exit::CONFIG
        }
        Ok(Err(ConfigError::Invalid { path, issues })) => {
            eprintln!("{}: {} problem(s):", path.display(), issues.len());
            for i in issues {
                eprintln!("  {i}");
            }
            exit::CONFIG
        }
        Err(e) => {
            eprintln!("config check failed: {e}");
            exit::FAILURE
        }
    }
}

/// The API socket of the host of `paths`: config.toml's `[api] socket` (or WOLF_SOCKET_PATH), else
/// the default in the state dir; `None` when the config turns the API off.
async fn api_socket(paths: &Paths) -> Option<PathBuf> {
    let path = paths.config.clone();
    let api = tokio::task::spawn_blocking(move || Config::load(&path, &Env::from_process()).map(|c| c.api))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    api.enabled.then(|| api.socket_path(&paths.state_dir))
}

/// What a command that needs the running host says when the config turns the API off.
fn api_off(command: &str) -> u8 {
    eprintln!(
        "wolf-rs {command} talks to the running host through its API socket, and the config turns \
         the API off ([api] enabled = false)"
    );
    exit::CONFIG
}

async fn apps_cmd(paths: &Paths, action: AppsAction) -> u8 {
    use crate::api_wire::{App, AppsResponse, Runner};
    let Some(sock) = api_socket(paths).await else { return api_off("apps") };
    let (method, route, body) = match action {
        AppsAction::List { json } => {
            return api_list(&sock, "/api/v1/apps", json, |r: AppsResponse| {
                r.apps
                    .into_iter()
                    .map(|a| {
                        let runner = match a.runner {
                            Runner::Process { run_cmd } => format!("process: {run_cmd}"),
                            Runner::Docker { image, .. } => format!("docker: {image}"),
                        };
                        format!("{:<38} {:<24} {runner}", a.id, a.title)
                    })
                    .collect()
            })
            .await;
        }
        AppsAction::Add { title, id, command, image, env, mount, desktop } => {
            let runner = match (command, image) {
                (Some(run_cmd), _) => Runner::Process { run_cmd },
                (None, Some(image)) => Runner::Docker {
                    name: title.clone(),
                    image,
                    mounts: mount,
                    env,
                    devices: Vec::new(),
                    ports: Vec::new(),
                    base_create_json: None,
                },
                (None, None) => {
                    eprintln!("wolf-rs apps add: give --command or --image");
                    return exit::USAGE;
                }
            };
            let app = App::new(title, id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()), runner, desktop);
            println!("{}", app.id);
            (Method::POST, "/api/v1/apps/add", serde_json::to_string(&app).unwrap_or_default())
        }
        AppsAction::Remove { id } => (Method::POST, "/api/v1/apps/delete", serde_json::json!({ "id": id }).to_string()),
    };
    api_post(&sock, method, route, body).await.map_or_else(|code| code, |_| exit::OK)
}

/// GET `route` on the API and print the answer: as it came with `json`, else the lines `lines`
/// makes of it.
async fn api_list<T: serde::de::DeserializeOwned>(
    sock: &Path,
    route: &str,
    json: bool,
    lines: impl Fn(T) -> Vec<String>,
) -> u8 {
    match client::call(sock, Method::GET, route, None).await {
        Ok(Some((s, body))) if s.is_success() && json => {
            println!("{body}");
            exit::OK
        }
        Ok(Some((s, body))) if s.is_success() => match serde_json::from_str::<T>(&body) {
            Ok(r) => {
                for l in lines(r) {
                    println!("{l}");
                }
                exit::OK
            }
            Err(e) => {
                eprintln!("unexpected answer from the host: {e}");
                exit::FAILURE
            }
        },
        Ok(Some((_, body))) => api_error(&body),
        Ok(None) => api_not_running(sock),
        Err(e) => {
            eprintln!("{e}");
            exit::FAILURE
        }
    }
}

/// A PIN as the API takes it: its digits.
fn pin_digits(pin: &str) -> Option<Vec<u8>> {
    pin.chars().map(|c| c.to_digit(10).map(|d| d as u8)).collect()
}

async fn lobbies_cmd(paths: &Paths, action: LobbiesAction) -> u8 {
    use serde_json::json;
    let Some(sock) = api_socket(paths).await else { return api_off("lobbies") };
    let (route, body) = match action {
        LobbiesAction::List { json } => {
            return api_list(&sock, "/api/v1/lobbies", json, |r: crate::api_wire::LobbiesResponse| {
                r.lobbies
                    .into_iter()
                    .map(|l| {
                        let pin = if l.pin_required { "pin" } else { "open" };
                        format!("{:<38} {:<24} {pin:<5} sessions: [{}]", l.id, l.name, l.connected_sessions.join(","))
                    })
                    .collect()
            })
            .await;
        }
        LobbiesAction::Create { name, command, image, mode, pin, multi_user, stop_when_everyone_leaves } => {
            let Some(m) = wolf_protocol::launch::Mode::parse(&mode) else {
                eprintln!("wolf-rs lobbies create: --mode {mode:?} is not WIDTHxHEIGHTxFPS");
                return exit::USAGE;
            };
            let pin = match pin.as_deref().map(pin_digits) {
                Some(None) => {
                    eprintln!("wolf-rs lobbies create: --pin takes digits");
                    return exit::USAGE;
                }
                Some(Some(d)) => Some(d),
                None => None,
            };
            let runner = match (command, image) {
                (Some(run_cmd), _) => json!({ "type": "process", "run_cmd": run_cmd }),
                (None, Some(image)) => json!({ "type": "docker", "name": name, "image": image, "mounts": [],
                    "env": [], "devices": [], "ports": [] }),
                (None, None) => {
                    eprintln!("wolf-rs lobbies create: give --command or --image");
                    return exit::USAGE;
                }
            };
            let body = json!({
                "profile_id": "cli", "name": name, "multi_user": multi_user, "pin": pin,
                "stop_when_everyone_leaves": stop_when_everyone_leaves,
                "video_settings": { "width": m.width, "height": m.height, "refresh_rate": m.fps },
                "audio_settings": { "channel_count": 2 }, "runner": runner,
            });
            ("/api/v1/lobbies/create", body)
        }
        LobbiesAction::Stop { id, pin } => {
            let pin = pin.as_deref().and_then(pin_digits);
            ("/api/v1/lobbies/stop", json!({ "lobby_id": id, "pin": pin }))
        }
    };
    match api_post(&sock, Method::POST, route, body.to_string()).await {
        Ok(answer) => {
            if let Some(id) = answer["lobby_id"].as_str() {
                println!("{id}");
            }
            exit::OK
        }
        Err(code) => code,
    }
}

/// A request with a body to the API: its JSON answer, or the exit code after saying what failed.
async fn api_post(
    sock: &Path,
    method: Method,
    route: &str,
    body: String,
) -> std::result::Result<serde_json::Value, u8> {
    match client::call(sock, method, route, Some(body)).await {
        Ok(Some((s, body))) if s.is_success() => Ok(serde_json::from_str(&body).unwrap_or_default()),
        Ok(Some((_, body))) => Err(api_error(&body)),
        Ok(None) => Err(api_not_running(sock)),
        Err(e) => {
            eprintln!("{e}");
            Err(exit::FAILURE)
        }
    }
}

/// The API's `{"success": false, "error": ...}`, printed.
fn api_error(body: &str) -> u8 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    eprintln!("{}", v["error"].as_str().unwrap_or(body));
    exit::FAILURE
}

fn api_not_running(sock: &Path) -> u8 {
    eprintln!("no wolf-rs host answers on {} (is it running, with [api] enabled?)", sock.display());
    exit::NOT_RUNNING
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn get_plain_says_why_there_is_no_answer() {
        let why = |r: Result<(u16, String), GetError>| r.map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(why(get_plain("https://localhost/health").await), Err("only http:// URLs are supported".into()));
        let bad = why(get_plain("http://[::1/health").await).unwrap_err();
        assert!(bad.starts_with("bad URL \"http://[::1/health\": "), "{bad}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap();
        let refused = why(get_plain(&format!("http://{closed}/health")).await).unwrap_err();
        assert!(refused.starts_with(&format!("connecting to {closed}: ")), "{refused}");
    }
}
