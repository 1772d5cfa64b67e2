//! Start-up reconcile: each saved session whose app still runs is adopted (paused, so `/resume` and
//! a new RTSP setup continue it); the rest are cleaned up and dropped. Bounded in time.

use std::time::Duration;

use super::{Session, SessionRecord, SessionState};
use crate::metrics::Metrics;
use crate::runners::{RunnerHandle, Runners};

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

pub async fn run(records: Vec<SessionRecord>, runners: &Runners, sweep_docker: bool, limit: Duration) -> Reconciled {
    let total = records.len();
    let pass = async {
        let mut out = Reconciled::default();
        for r in records {
            let stopping = r.state == SessionState::Stopping;
            let live = !stopping && runners.alive(r.id, &r.runner).await;
            match Session::from_record(&r) {
                Some(mut s) if live => {
                    s.state = SessionState::Paused;
                    s.updated = std::time::SystemTime::now();
                    tracing::info!(session = s.id, app = s.app_id, runner = ?s.runner, "saved session adopted: its app still runs");
                    out.adopted.push(s);
                }
                _ => {
                    // Dead, or it was being stopped when the host went down: finish the job.
                    if let Err(e) = runners.stop(&r.runner).await {
                        tracing::warn!(session = r.id, error = %e, "cleaning up a saved session's app");
                    }
                    tracing::info!(
                        session = r.id,
                        app = r.app_id,
                        "saved session's app is gone (or was stopping): interrupted, cleaned up"
                    );
                    out.cleaned += 1;
                }
            }
        }
        out.orphans_removed = remove_orphan_processes(runners, &out.adopted).await;
        if sweep_docker {
            out.orphans_removed += remove_orphans(runners, &out.adopted).await;
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

/// Processes this host's state dir started that no adopted session owns: stopped.
async fn remove_orphan_processes(runners: &Runners, adopted: &[Session]) -> usize {
    let p = runners.process.clone();
    let owned = tokio::task::spawn_blocking(move || p.owned()).await.unwrap_or_default();
    let mut removed = 0;
    for (pid, start_time, session) in owned {
        let handle = RunnerHandle::Process { pid, start_time };
        if adopted.iter().any(|s| s.runner == handle) {
            continue;
        }
        match runners.stop(&handle).await {
            Ok(()) => {
                tracing::info!(pid, session = %session, "orphan app process stopped");
                removed += 1;
            }
            Err(e) => tracing::warn!(pid, error = %e, "could not stop an orphan app process"),
        }
    }
    removed
}

/// Containers with our label that no adopted session owns: stopped and removed.
async fn remove_orphans(runners: &Runners, adopted: &[Session]) -> usize {
    let known: Vec<&str> = adopted
        .iter()
        .filter_map(|s| match &s.runner {
            RunnerHandle::Docker { container_id } => Some(container_id.as_str()),
            _ => None,
        })
        .collect();
    let labelled = match runners.docker.labelled().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list containers to remove orphans");
            return 0;
        }
    };
    let mut removed = 0;
    for (id, session) in labelled {
        if known.contains(&id.as_str()) {
            continue;
        }
        match runners.docker.stop(&id, runners.stop_timeout).await {
            Ok(()) => {
                tracing::info!(container = %id, session = %session, "orphan app container removed");
                removed += 1;
            }
            Err(e) => tracing::warn!(container = %id, error = %e, "could not remove an orphan container"),
        }
    }
    removed
}
