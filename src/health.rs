//! The health port: `/health`, `/livez`, `/readyz`, `/metrics` and (when enabled) `/debug/hang`.
//! It runs on its own OS thread with its own single-threaded runtime, so it answers while the
//! main runtime is busy or hung, and never waits on anything the GameStream ports wait on.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::watchdog::Heartbeats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

/// What /health reports; written by the watchdog and the host, read by the health thread.
pub struct Health {
    started: Instant,
    phase: AtomicU8,
    /// The last answered ping's lag, or how long the current ping has waited if that is longer.
    lag_ms: AtomicU64,
    last_answer_lag_ms: AtomicU64,
    /// When the watchdog last looked (ms since `started`); stale means it is not running.
    watchdog_seen_ms: AtomicU64,
    stalled: Mutex<Vec<String>>,
    warn_after: Duration,
    pub last_exit: Option<String>,
    encoder: OnceLock<(String, String)>,
}

/// How long the watchdog may go without updating before /health calls it gone.
const WATCHDOG_STALE: Duration = Duration::from_secs(3);
/// A gate rejection this recent makes the host degraded.
const REJECTED_WINDOW_MS: u64 = 10_000;

impl Health {
    pub fn new(warn_after: Duration, last_exit: Option<String>) -> Arc<Health> {
        Arc::new(Health {
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            lag_ms: AtomicU64::new(0),
            last_answer_lag_ms: AtomicU64::new(0),
            watchdog_seen_ms: AtomicU64::new(0),
            stalled: Mutex::new(Vec::new()),
            warn_after,
            last_exit,
            encoder: OnceLock::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    pub fn set_encoder(&self, name: &str, reason: &str) {
        let _ = self.encoder.set((name.to_owned(), reason.to_owned()));
    }

    pub fn loop_answered(&self, lag: Duration) {
        let ms = lag.as_millis() as u64;
        self.last_answer_lag_ms.store(ms, Ordering::Relaxed);
        self.lag_ms.store(ms, Ordering::Relaxed);
        self.watchdog_seen();
    }

    pub fn loop_waiting(&self, waited: Duration) {
        let ms = (waited.as_millis() as u64).max(self.last_answer_lag_ms.load(Ordering::Relaxed));
        self.lag_ms.store(ms, Ordering::Relaxed);
        self.watchdog_seen();
    }

    pub fn set_stalled(&self, names: Vec<String>) {
        *self.stalled.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = names;
        self.watchdog_seen();
    }

    /// Stored as ms since start + 1, so 0 means "never".
    fn watchdog_seen(&self) {
        self.watchdog_seen_ms.store(self.now_ms() + 1, Ordering::Relaxed);
    }

    fn watchdog_running(&self) -> bool {
        let seen = self.watchdog_seen_ms.load(Ordering::Relaxed);
        seen != 0 && (self.now_ms() + 1).saturating_sub(seen) <= WATCHDOG_STALE.as_millis() as u64
    }

    /// Is the event loop answering the watchdog within the warn threshold?
    pub fn alive(&self) -> bool {
        self.watchdog_running() && self.lag_ms.load(Ordering::Relaxed) <= self.warn_after.as_millis() as u64
    }

    /// The /health answer: (HTTP status, JSON body).
    pub fn report(&self, sessions: usize, gate_rejecting: bool) -> (StatusCode, serde_json::Value) {
        let phase = self.phase();
        let lag_ms = self.lag_ms.load(Ordering::Relaxed);
        let stalled = self.stalled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let watchdog = self.watchdog_running();
        let slow = lag_ms > self.warn_after.as_millis() as u64;
        let status = match phase {
            Phase::Draining => "draining",
            Phase::Starting => "unhealthy",
            Phase::Ready if !watchdog => "unhealthy",
            Phase::Ready if slow || !stalled.is_empty() || gate_rejecting => "degraded",
            Phase::Ready => "healthy",
        };
        let code = match status {
            "healthy" | "degraded" => StatusCode::OK,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let (encoder, encoder_reason) = self.encoder.get().cloned().unwrap_or_default();
        let body = serde_json::json!({
            "status": status,
            "sessions": sessions,
            "uptime_s": self.started.elapsed().as_secs(),
            "event_loop_lag_ms": lag_ms,
            "encoder": encoder,
            "version": env!("CARGO_PKG_VERSION"),
            "last_exit": self.last_exit,
            "checks": {
                "phase": match phase { Phase::Starting => "starting", Phase::Ready => "ready", Phase::Draining => "draining" },
                "watchdog": if watchdog { "running" } else { "not running" },
                "event_loop": if slow { "slow" } else { "ok" },
                "stalled_threads": stalled,
                "tls_gate": if gate_rejecting { "rejecting" } else { "ok" },
                "encoder": encoder_reason,
            },
        });
        (code, body)
    }
}

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

/// Open connections the health port serves at once; beyond it new ones are closed.
const MAX_CONNECTIONS: usize = 64;
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
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let tracker = tokio_util::task::TaskTracker::new();
    while let Some((stream, _)) = crate::net::accept_next(&listener, &shutdown, "health", None).await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let state = state.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, conn).await;
            drop(slot);
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
            let sessions = state.sessions.len();
            state.metrics.active_sessions.set(sessions as i64);
            let rejecting = state.metrics.gate.rejected_within(REJECTED_WINDOW_MS);
            let (code, body) = state.health.report(sessions, rejecting);
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
            state.metrics.active_sessions.set(state.sessions.len() as i64);
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
        Some("pipeline") => match state.beats.stall("pipeline", seconds) {
            Some(name) => json(
                StatusCode::ACCEPTED,
                &serde_json::json!({"scope": "pipeline", "thread": name, "seconds": seconds}),
            ),
            None => reply(StatusCode::CONFLICT, "text/plain", "no pipeline thread is running; start a stream first\n"),
        },
        _ => reply(StatusCode::BAD_REQUEST, "text/plain", "scope must be runtime or pipeline\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(h: &Health, rejecting: bool) -> (u16, String) {
        let (code, body) = h.report(0, rejecting);
        (code.as_u16(), body["status"].as_str().unwrap_or_default().to_owned())
    }

    #[test]
    fn states() {
        let h = Health::new(Duration::from_millis(100), Some("unix_time=1 code=86".into()));
        assert_eq!(status(&h, false), (503, "unhealthy".into()), "starting");
        h.set_phase(Phase::Ready);
        assert_eq!(status(&h, false), (503, "unhealthy".into()), "no watchdog yet");
        h.loop_answered(Duration::from_millis(1));
        assert_eq!(status(&h, false), (200, "healthy".into()));
        assert!(h.alive());
        assert_eq!(status(&h, true), (200, "degraded".into()), "gate rejecting");
        h.loop_waiting(Duration::from_millis(500));
        assert_eq!(status(&h, false), (200, "degraded".into()), "slow loop");
        assert!(!h.alive());
        h.loop_answered(Duration::from_millis(1));
        h.set_stalled(vec!["pipeline:video:session-1".into()]);
        assert_eq!(status(&h, false), (200, "degraded".into()), "stalled pipeline");
        h.set_stalled(Vec::new());
        h.set_phase(Phase::Draining);
        assert_eq!(status(&h, false), (503, "draining".into()));
        assert_eq!(h.report(0, false).1["last_exit"], "unix_time=1 code=86");
    }
}
