//! Start-up reconcile: each saved session whose app, display and sink all still run is adopted
//! (paused, so `/resume` and a new RTSP setup continue it); the rest are cleaned up and dropped,
//! and so is whatever this host started that no adopted session owns. Bounded in time.

use std::time::Duration;

use super::{Session, SessionRecord, SessionState};
use crate::metrics::Metrics;
use crate::runners::{RunnerHandle, Runners};

#[derive(Debug, Default)]
pub struct Reconciled {
    pub adopted: Vec<Session>,
    pub cleaned: usize,
    /// Sessions cleaned up because their session process had died (a crash while no control plane
    /// watched): each ends with `process_lost`.
    pub lost: Vec<u32>,
    pub orphans_removed: usize,
}

impl Reconciled {
    pub fn export(&self, m: &Metrics) {
        m.sessions_reconciled.with_label_values(&["adopted"]).inc_by(self.adopted.len() as u64);
        m.sessions_reconciled.with_label_values(&["cleaned"]).inc_by(self.cleaned as u64);
        m.sessions_reconciled.with_label_values(&["orphan_removed"]).inc_by(self.orphans_removed as u64);
    }
}

/// `lobbies`: the parts of adopted lobbies (by number), which are no orphans either.
pub async fn run(
    records: Vec<SessionRecord>,
    lobbies: &[(u32, crate::runners::Parts)],
    runners: &Runners,
    sweep_docker: bool,
    limit: Duration,
) -> Reconciled {
    let total = records.len();
    let pass = async {
        let mut out = Reconciled::default();
        for r in records {
            // Launching: its parts were not saved yet (the sweep below stops them).
            let unfinished = matches!(r.state, SessionState::Stopping | SessionState::Launching);
            let parts =
                crate::runners::Parts { app: r.runner.clone(), display: r.display.clone(), sink: r.sink.clone() };
            let process_gone = match &r.process {
                Some(p) => {
                    let (runner, p) = (runners.process.clone(), p.clone());
                    !tokio::task::spawn_blocking(move || runner.alive(p.pid, p.start_time)).await.unwrap_or(false)
                }
                None => false,
            };
            let live = !unfinished && !process_gone && runners.lost(r.id, &parts).await.is_none();
            if process_gone && !unfinished {
                tracing::error!(session = r.id, "saved session's process died while no control plane ran: it ends");
                out.lost.push(r.id);
            }
            match Session::from_record(&r) {
                Some(mut s) if live => {
                    if let Some(d) = &s.display {
                        runners.displays.adopt(d);
                    }
                    // Paused until its process (when it has one) says it streams.
                    s.state = SessionState::Paused;
                    s.updated = std::time::SystemTime::now();
                    tracing::info!(session = s.id, app = s.app_id, runner = ?s.runner, "saved session adopted: its app still runs");
                    out.adopted.push(s);
                }
                _ => {
                    // Dead, or it was being stopped when the host went down: finish the job.
                    if let Err(e) = runners.stop_session(r.id, &parts).await {
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
        // The lobbies' parts are kept as a session's are.
        let mut owned: Vec<Session> = out.adopted.clone();
        for (number, parts) in lobbies {
            owned.push(Session {
                runner: parts.app.clone(),
                display: parts.display.clone(),
                sink: parts.sink.clone(),
                ..Session::placeholder(*number)
            });
        }
        out.orphans_removed = remove_orphan_processes(runners, &owned).await;
        out.orphans_removed += remove_orphan_sinks(runners, &owned).await;
        if sweep_docker {
            out.orphans_removed += remove_orphans(runners, &owned).await;
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

/// Processes this host's state dir started (apps, displays) that no adopted session owns: stopped.
/// The audio server is shared, never an orphan.
async fn remove_orphan_processes(runners: &Runners, adopted: &[Session]) -> usize {
    use crate::runners::process::Role;
    let p = runners.process.clone();
    let owned = tokio::task::spawn_blocking(move || p.owned()).await.unwrap_or_default();
    let mut removed = 0;
    for o in owned {
        let handle = RunnerHandle::Process { pid: o.pid, start_time: o.start_time };
        let ours = |s: &Session| match o.role {
            Role::App => s.runner == handle,
            Role::Display => s.display.as_ref().is_some_and(|d| d.pid == o.pid && d.start_time == o.start_time),
            Role::Audio => true,
            Role::Session => s.process.as_ref().is_some_and(|p| p.pid == o.pid && p.start_time == o.start_time),
            // A stream's capture lives with its session process.
            Role::Capture => s.process.is_some() && o.session == s.id.to_string(),
        };
        if o.role == Role::Audio || adopted.iter().any(ours) {
            continue;
        }
        let stopped = match o.role {
            Role::Display => {
                // Through the display, so its socket and lock go with it.
                let Some(number) = display_number(o.pid) else { continue };
                let h = crate::runners::display::DisplayHandle {
                    number,
                    pid: o.pid,
                    start_time: o.start_time,
                    width: 0,
                    height: 0,
                };
                let (d, t) = (runners.displays.clone(), runners.stop_timeout);
                tokio::task::spawn_blocking(move || d.stop(&h, t))
                    .await
                    .map_or_else(|e| Err(e.into()), |r| r.map_err(Into::into))
            }
            _ => runners.stop(&handle).await,
        };
        match stopped {
            Ok(()) => {
                tracing::info!(pid = o.pid, role = o.role.as_str(), session = %o.session, "orphan process stopped");
                removed += 1;
            }
            Err(e) => tracing::warn!(pid = o.pid, error = %e, "could not stop an orphan process"),
        }
    }
    removed
}

/// The display number an X server was started for: its first `:N` argument.
fn display_number(pid: i32) -> Option<u32> {
    let cmdline = procfs::process::Process::new(pid).ok()?.cmdline().ok()?;
    cmdline.iter().find_map(|a| a.strip_prefix(':')?.parse().ok())
}

/// Sinks of this host's audio server that no adopted session owns: removed.
async fn remove_orphan_sinks(runners: &Runners, adopted: &[Session]) -> usize {
    let known: Vec<String> = adopted.iter().filter_map(|s| s.sink.as_ref().map(|k| k.name.clone())).collect();
    let a = runners.audio.clone();
    let removed = tokio::task::spawn_blocking(move || {
        if !a.answers() {
            return 0;
        }
        let Ok(sinks) = a.sinks() else { return 0 };
        let mut removed = 0;
        for (_, name) in sinks.into_iter().filter(|(_, n)| !known.contains(n)) {
            let h = crate::runners::audio::SinkHandle { name, channels: 2 };
            match a.remove_sink(&h) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(sink = %h.name, error = %e, "could not remove an orphan sink"),
            }
        }
        removed
    })
    .await;
    removed.unwrap_or(0)
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
