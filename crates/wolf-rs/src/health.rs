//! The health port: `/health`, `/livez`, `/readyz`, `/metrics` and (when enabled) `/debug/hang`,
//! serving the status model in `status`.
//! It runs on its own OS thread with its own single-threaded runtime, so it answers while the
//! main runtime is busy or hung, and never waits on anything the GameStream ports wait on.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::net::limit::{Budgets, ConnLimit, Stage, first_bytes};
use crate::sessions::Sessions;
use crate::status::{Health, Phase, REJECTED_WINDOW_MS};
use crate::watchdog::Heartbeats;

/// What the health thread reads.
pub struct HealthState {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub sessions: Arc<Sessions>,
    pub beats: Arc<Heartbeats>,
    /// The main runtime, for `scope=runtime` fault injection.
    pub runtime: tokio::runtime::Handle,
    pub fault_injection: bool,
}

/// The health server's thread; stops and joins on drop.
pub struct HealthServer {
    pub port: u16,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Open connections the health port holds, and per address. At either cap the newcomer is served and
/// an older connection doing nothing is closed (as on the GameStream ports), so idle sockets from
/// anywhere cannot keep the healthcheck (from loopback) or a scrape out.
const MAX_CONNECTIONS: usize = 64;
const MAX_CONNECTIONS_PER_SOURCE: usize = 16;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl HealthServer {
    /// Bind `addr` now (so the port is known and a clash is a start-up error) and serve on a new thread.
    pub fn start(addr: SocketAddr, state: HealthState) -> std::io::Result<HealthServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shutdown = CancellationToken::new();
        let sd = shutdown.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("health".into()).spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => serve(l, Arc::new(state), sd).await,
                    Err(e) => tracing::error!(error = %e, "health port: cannot register the listener"),
                }
            })
        })?;
        Ok(HealthServer { port, shutdown, thread: Some(thread) })
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<HealthState>, shutdown: CancellationToken) {
    let limit = ConnLimit::new(Budgets {
        per_source: MAX_CONNECTIONS_PER_SOURCE,
        per_trusted_proxy: MAX_CONNECTIONS_PER_SOURCE,
        total: MAX_CONNECTIONS,
        trusted: Default::default(),
        idle_grace: crate::net::limit::IDLE_GRACE,
    });
    let tracker = tokio_util::task::TaskTracker::new();
    while let Some((stream, peer)) = crate::net::accept_next(&listener, &shutdown, "health", None).await {
        let Some(slot) = limit.admit(peer.ip()) else {
            continue;
        };
        let state = state.clone();
        tracker.spawn(async move {
            let slot = Arc::new(slot);
            let evicted = slot.evicted().clone();
            let serve = async {
                if !first_bytes(&stream, &slot, REQUEST_TIMEOUT).await {
                    return;
                }
                let busy = slot.clone();
                let service = service_fn(move |req| {
                    busy.set(Stage::Busy);
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(REQUEST_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, conn).await;
            };
            tokio::select! {
                _ = evicted.cancelled() => {}
                _ = serve => {}
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
}

type Body = Full<Bytes>;

fn reply(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json(code: StatusCode, v: &serde_json::Value) -> Response<Body> {
    reply(code, "application/json", format!("{v}\n"))
}

async fn route(state: &HealthState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/health") => {
            let (sessions, desktop) = sample_sessions(state);
            let rejecting = state.metrics.gate.rejected_within(REJECTED_WINDOW_MS);
            let (code, mut body) = state.health.report(sessions, rejecting);
            body["desktop"] = desktop;
            json(code, &body)
        }
        (&Method::GET | &Method::HEAD, "/livez") => {
            if state.health.alive() {
                json(StatusCode::OK, &serde_json::json!({"status": "alive"}))
            } else {
                json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"status": "event loop not answering"}))
            }
        }
        (&Method::GET | &Method::HEAD, "/readyz") => match state.health.phase() {
            Phase::Ready => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
            Phase::Starting => json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"status": "starting"})),
            Phase::Draining => json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"status": "draining"})),
        },
        (&Method::GET, "/metrics") => {
            sample_sessions(state);
            match state.metrics.render() {
                Ok(text) => reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("metrics: {e}\n")),
            }
        }
        (&Method::POST, "/debug/hang") if state.fault_injection => {
            let body = match Limited::new(req.into_body(), 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return reply(StatusCode::BAD_REQUEST, "text/plain", "body too large\n"),
            };
            let mut params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
            params.extend(form_urlencoded::parse(&body).into_owned());
            hang(state, &params)
        }
        (_, "/health" | "/livez" | "/readyz" | "/metrics") => {
            reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n")
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found; try /health, /livez, /readyz or /metrics\n"),
    }
}

/// The session gauges, set from a snapshot of the sessions, and what `/health` shows of the
/// displays and sinks they own.
fn sample_sessions(state: &HealthState) -> (usize, serde_json::Value) {
    let list = state.sessions.list();
    let displays: Vec<String> = list.iter().filter_map(|s| s.display.as_ref().map(|d| d.name())).collect();
    let sinks: Vec<String> = list.iter().filter_map(|s| s.sink.as_ref().map(|k| k.name.clone())).collect();
    state.metrics.active_sessions.set(list.len() as i64);
    state.metrics.displays.set(displays.len() as i64);
    state.metrics.audio_sinks.set(sinks.len() as i64);
    (list.len(), serde_json::json!({ "displays": displays, "audio_sinks": sinks }))
}

/// Longest injected hang.
const MAX_HANG_S: u64 = 3600;

fn hang(state: &HealthState, params: &HashMap<String, String>) -> Response<Body> {
    let Some(seconds) =
        params.get("seconds").and_then(|s| s.parse::<u64>().ok()).filter(|s| (1..=MAX_HANG_S).contains(s))
    else {
        return reply(StatusCode::BAD_REQUEST, "text/plain", format!("seconds must be 1 to {MAX_HANG_S}\n"));
    };
    match params.get("scope").map(String::as_str) {
        Some("runtime") => {
            let workers = state.runtime.metrics().num_workers().max(1);
            tracing::warn!(workers, seconds, "fault injection: blocking every runtime worker thread");
            // One blocking task per worker: a blocked worker takes no other task, so each lands on
            // its own worker.
            for _ in 0..workers {
                state.runtime.spawn(async move { std::thread::sleep(Duration::from_secs(seconds)) });
            }
            json(StatusCode::ACCEPTED, &serde_json::json!({"scope": "runtime", "workers": workers, "seconds": seconds}))
        }
        // Pipelines run in the session processes: the first streaming session's is asked.
        Some("pipeline") => {
            let stall = crate::session_process::wire::Command::Stall { kind: "pipeline".into(), seconds };
            let asked = state
                .sessions
                .list()
                .into_iter()
                .filter(|s| s.state == crate::sessions::SessionState::Streaming)
                .find_map(|s| {
                    let link = state.sessions.live(s.id)?.link()?;
                    link.send(stall.clone()).then_some(s.id)
                });
            match asked {
                Some(id) => json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({"scope": "pipeline", "session": id, "seconds": seconds}),
                ),
                None => reply(StatusCode::CONFLICT, "text/plain", "no stream is running; start one first\n"),
            }
        }
        _ => reply(StatusCode::BAD_REQUEST, "text/plain", "scope must be runtime or pipeline\n"),
    }
}
