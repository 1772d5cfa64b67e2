//! The local admin socket (`<state dir>/admin.sock`, mode 0600): what `wolf-rs pair` and
//! `wolf-rs clients` talk to. Never on the public ports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, ErrorKind, Result};
use crate::gamestream::Context as HostContext;

use crate::state::clients::{PairedClient, matches_selector};

pub const SOCKET_NAME: &str = "admin.sock";

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PinRequest {
    pub pin: String,
    #[serde(default)]
    pub secret: Option<String>,
}

/// A paired client as the CLI shows it (no certificate body).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientView {
    pub fingerprint: String,
    pub name: String,
    pub uniqueid: String,
    pub ip: String,
    pub paired_at: u64,
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

pub struct AdminServer {
    listener: UnixListener,
    path: PathBuf,
}

impl AdminServer {
    /// Bind the socket (mode 0600). A live socket means another host uses this state dir: an error.
    pub async fn bind(path: &Path) -> Result<AdminServer> {
        let listener = crate::net::unix::bind(path, 0o600).await?;
        Ok(AdminServer { listener, path: path.to_owned() })
    }

    pub async fn run(self, ctx: Arc<HostContext>, shutdown: CancellationToken, tracker: TaskTracker) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let ctx = ctx.clone();
            tracker.spawn(async move {
                let svc = service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(&ctx, req).await) }
                });
                let mut b = hyper::server::conn::http1::Builder::new();
                b.keep_alive(false).timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(5));
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), b.serve_connection(TokioIo::new(stream), svc)).await;
            });
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn json(status: StatusCode, v: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": msg.into() }))
}

async fn route(ctx: &HostContext, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/pairings") => json(StatusCode::OK, &ctx.host.pairing.waiting()),
        (Method::POST, "/pairings/pin") => {
            let body = match Limited::new(req.into_body(), 4096).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return err(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            };
            let r: PinRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return err(StatusCode::BAD_REQUEST, format!("expected {{\"pin\", \"secret\"?}}: {e}"));
                }
            };
            match ctx.host.pairing.submit_pin(r.secret.as_deref(), r.pin.clone()) {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({ "ok": true })),
                Err(m) => err(StatusCode::CONFLICT, m.to_string()),
            }
        }
        (Method::GET, "/sessions") => {
            let list: Vec<crate::sessions::SessionRecord> =
                ctx.host.sessions.list().iter().map(|s| s.record(ctx.host.sessions.last_activity(s.id))).collect();
            json(StatusCode::OK, &list)
        }
        (Method::GET, "/clients") => {
            let list: Vec<ClientView> = ctx.host.clients.list().iter().map(ClientView::from).collect();
            json(StatusCode::OK, &list)
        }
        (Method::DELETE, p) if p.starts_with("/clients/") => {
            let selector = p.trim_start_matches("/clients/").to_owned();
            let selector = form_urlencoded::parse(format!("s={selector}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            match ctx.host.clients.remove_where(|c| matches_selector(c, &selector)).await {
                Ok(gone) if gone.is_empty() => {
                    err(StatusCode::NOT_FOUND, format!("no paired client matches {selector:?}"))
                }
                Ok(gone) => {
                    let views: Vec<ClientView> = gone.iter().map(ClientView::from).collect();
                    for c in &views {
                        tracing::info!(client = %c.name, fingerprint = %c.fingerprint, "client removed by the admin");
                    }
                    json(StatusCode::OK, &views)
                }
                Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        _ => err(StatusCode::NOT_FOUND, "unknown admin endpoint"),
    }
}

/// Client side: one request to the admin socket. `Ok(None)` when no host is listening.
pub async fn call(
    sock: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Option<(StatusCode, String)>> {
    call_socket(sock, "admin", method, path, body).await
}

/// One HTTP request to the host's unix socket `sock` (`what`: admin, api). `Ok(None)` when no
/// host is listening.
pub async fn call_socket(
    sock: &Path,
    what: &str,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Option<(StatusCode, String)>> {
    let stream = match UnixStream::connect(sock).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => {
            return Err(Error::with_source(ErrorKind::Admin, format!("connecting to {}", sock.display()), e));
        }
    };
    let exchange = crate::net::http1::request(stream, method, path, body, ErrorKind::Admin, what);
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| Error::new(ErrorKind::Admin, format!("the host did not answer on the {what} socket within 10 s")))?
        .map(Some)
}
