//! What /health reports: start-up phase, event-loop lag, stalled threads, the encoder, the last
//! exit. Written by the watchdog and the host, read by the health port; apart from the server so
//! the watchdog can update it without depending on the server.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hyper::StatusCode;

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
    /// Threads of session processes that their last report named stalled, by session.
    process_stalled: Mutex<std::collections::BTreeMap<u32, Vec<String>>>,
    /// Why the last write of the sessions file failed; `None` once one succeeds.
    store_error: Mutex<Option<String>>,
    warn_after: Duration,
    pub last_exit: Option<String>,
    encoder: OnceLock<(String, String)>,
    /// "available", or why virtual gamepads cannot be made here.
    gamepads: OnceLock<String>,
}

/// How long the watchdog may go without updating before /health calls it gone.
const WATCHDOG_STALE: Duration = Duration::from_secs(3);
/// A gate rejection this recent makes the host degraded.
pub const REJECTED_WINDOW_MS: u64 = 10_000;

impl Health {
    pub fn new(warn_after: Duration, last_exit: Option<String>) -> Arc<Health> {
        Arc::new(Health {
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            lag_ms: AtomicU64::new(0),
            last_answer_lag_ms: AtomicU64::new(0),
            watchdog_seen_ms: AtomicU64::new(0),
            stalled: Mutex::new(Vec::new()),
            process_stalled: Mutex::default(),
            store_error: Mutex::new(None),
            warn_after,
            last_exit,
            encoder: OnceLock::new(),
            gamepads: OnceLock::new(),
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

    pub fn set_gamepads(&self, state: String) {
        let _ = self.gamepads.set(state);
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

    /// The outcome of the latest write of the sessions file: while it fails, launches fail, and the
    /// host says so (degraded, with the reason).
    /// What session `id`'s process said of its threads (none: all beat, or it is gone).
    pub fn set_process_stalled(&self, id: u32, names: Vec<String>) {
        let mut m = self.process_stalled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if names.is_empty() {
            m.remove(&id);
        } else {
            m.insert(id, names);
        }
    }

    pub fn set_store(&self, error: Option<String>) {
        *self.store_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = error;
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
        let mut stalled = self.stalled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for names in self.process_stalled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values() {
            stalled.extend(names.iter().cloned());
        }
        let store_error = self.store_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let watchdog = self.watchdog_running();
        let slow = lag_ms > self.warn_after.as_millis() as u64;
        let status = match phase {
            Phase::Draining => "draining",
            Phase::Starting => "unhealthy",
            Phase::Ready if !watchdog => "unhealthy",
            Phase::Ready if slow || !stalled.is_empty() || gate_rejecting || store_error.is_some() => "degraded",
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
                "session_store": store_error.map_or_else(|| "ok".to_owned(), |e| format!("cannot write: {e}")),
                "encoder": encoder_reason,
                "gamepads": self.gamepads.get().cloned().unwrap_or_default(),
            },
        });
        (code, body)
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
        h.set_store(Some("No space left on device".into()));
        let (_, body) = h.report(0, false);
        assert_eq!(body["status"], "degraded", "sessions file not writable");
        assert!(body["checks"]["session_store"].as_str().unwrap_or_default().contains("No space"), "{body}");
        h.set_store(None);
        assert_eq!(h.report(0, false).1["checks"]["session_store"], "ok", "back once a write succeeds");
        h.set_stalled(Vec::new());
        h.set_phase(Phase::Draining);
        assert_eq!(status(&h, false), (503, "draining".into()));
        assert_eq!(h.report(0, false).1["last_exit"], "unix_time=1 code=86");
    }
}
