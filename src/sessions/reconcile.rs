//! Start-up reconcile: each saved session whose app still runs is adopted (paused, so `/resume` and
//! a new RTSP setup continue it); the rest are cleaned up and dropped. Bounded in time.

use std::time::Duration;

use super::{Session, SessionRecord, SessionState};
use crate::metrics::Metrics;
use crate::runners::RunnerHandle;

#[derive(Debug, Default)]
pub struct Reconciled {
    pub adopted: Vec<Session>,
    pub cleaned: usize,
    pub orphans_removed: usize,
}

impl Reconciled {
    pub fn export(&self, m: &Metrics) {
        m.sessions_reconciled.with_label_values(&["adopted"]).inc_by(self.adopted.len() as u64);
        m.sessions_reconciled.with_label_values(&["cleaned"]).inc_by(self.cleaned as u64);
        m.sessions_reconciled.with_label_values(&["orphan_removed"]).inc_by(self.orphans_removed as u64);
    }
}

/// Is the app behind `handle` still running?
async fn alive(handle: &RunnerHandle) -> bool {
    match handle {
        RunnerHandle::None => true,
        RunnerHandle::Process { .. } | RunnerHandle::Docker { .. } => false,
    }
}

pub async fn run(records: Vec<SessionRecord>, limit: Duration) -> Reconciled {
    let total = records.len();
    let pass = async {
        let mut out = Reconciled::default();
        for r in records {
            let live = alive(&r.runner).await;
            match Session::from_record(&r) {
                Some(mut s) if live => {
                    s.state = SessionState::Paused;
                    s.updated = std::time::SystemTime::now();
                    tracing::info!(session = s.id, app = s.app_id, "saved session adopted: its app still runs");
                    out.adopted.push(s);
                }
                _ => {
                    tracing::info!(
                        session = r.id,
                        app = r.app_id,
                        state = SessionState::Interrupted.as_str(),
                        "saved session's app is gone: cleaned up"
                    );
                    out.cleaned += 1;
                }
            }
        }
        out
    };
    match tokio::time::timeout(limit, pass).await {
        Ok(out) => {
            tracing::info!(
                adopted = out.adopted.len(),
                cleaned = out.cleaned,
                orphans_removed = out.orphans_removed,
                "sessions reconciled"
            );
            out
        }
        Err(_) => {
            tracing::error!(
                saved = total,
                "reconcile did not finish within {} ms; starting with no sessions",
                limit.as_millis()
            );
            Reconciled::default()
        }
    }
}
