//! The one way a session ends, whatever the reason ([`EndReason`]): the end is saved first, then
//! counted and announced, its session process tells the client why, stops its streams and exits, it leaves its lobby, its app, sink and display stop, and it leaves the table.

use std::sync::Arc;
use std::time::Duration;

use super::Host;
use crate::commands::EndReason;
use crate::session_process::wire::Command;
use crate::sessions::{Session, SessionState};

/// How long an end waits for the session process to stop (its sender threads join within their
/// frame wait).
const STREAMS_JOIN: Duration = Duration::from_secs(10);

impl Host {
    /// End `session_id` for `reason`. Returns once the end is on disk, so a crash from then on never
    /// brings the session back; its parts stop in the background. Ending a session that is already
    /// ending changes nothing (and returns `None`).
    pub async fn end(self: &Arc<Self>, session_id: u32, reason: EndReason) -> Option<Session> {
        let (s, stop) = self.begin(session_id, reason).await?;
        tokio::spawn(stop);
        Some(s)
    }

    /// As `end`, returning once the app is stopped and the session removed (shutdown).
    pub async fn end_and_wait(self: &Arc<Self>, session_id: u32, reason: EndReason) -> Option<Session> {
        let (s, stop) = self.begin(session_id, reason).await?;
        stop.await;
        Some(s)
    }

    /// The client's session ends (`/cancel`): `None` when it had none.
    pub async fn cancel_for_client(self: &Arc<Self>, fingerprint: &str) -> Option<Session> {
        let s = self.sessions.for_client(fingerprint)?;
        self.end(s.id, EndReason::Cancelled).await
    }

    /// Everything that ends a session but stopping its parts, which is returned to be run.
    async fn begin(
        self: &Arc<Self>,
        session_id: u32,
        reason: EndReason,
    ) -> Option<(Session, impl std::future::Future<Output = ()> + Send + 'static)> {
        let ending = self.sessions.begin_end(session_id).await?;
        if let Err(e) = &ending.written {
            // The writer logged it and /health shows it; the client asked, so the end goes on.
            tracing::warn!(session = session_id, error = %e, "the end of the session is not on disk");
        }
        let s = ending.session;
        tracing::info!(session = session_id, reason = reason.as_str(), "session ends");
        self.metrics.sessions_ended.with_label_values(&[reason.as_str()]).inc();
        let client_id = self.wolf_client_id(&s.client_fingerprint);
        self.events.publish(crate::events::Event::StopStreamEvent { session_id: client_id.clone() });
        self.events.publish(crate::events::Event::SessionEnded {
            session_id: client_id,
            id: session_id,
            reason: reason.as_str().to_owned(),
        });
        // Its session process tells the client why, stops its streams (they capture the display
        // and the sink, so before those go) and exits.
        let link = ending.live.as_ref().and_then(|l| l.link());
        let termination = reason.termination();
        let (host, parts, lobby, removed) = (self.clone(), s.parts(), s.lobby.clone(), ending.removed);
        let stop = async move {
            if let Some(link) = link {
                if let Err(e) = link.request(Command::End { termination }).await {
                    tracing::debug!(session = session_id, error = %e, "the session process did not take the end");
                }
                link.detach();
                let spawner = host.planes.spawner.clone();
                let stopped = async {
                    while spawner.alive(&link.record).await {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                let how = match tokio::time::timeout(STREAMS_JOIN, stopped).await {
                    Ok(()) => "ended",
                    Err(_) => {
                        tracing::warn!(session = session_id, "the session process did not stop in time: killed");
                        spawner.kill(&link.record);
                        "killed"
                    }
                };
                host.metrics.forget_session_process(session_id);
                let pid = link.record.pid;
                let exit =
                    crate::lifecycle::Entry::SessionProcessExit { session: session_id, process: pid, how: how.into() };
                host.planes.lifecycle.record(exit);
            }
            let left = match &lobby {
                Some(l) if removed => Some(host.lobbies.member_ended(&l.id, session_id).await),
                Some(l) => Some(host.lobbies.leave(&l.id, session_id).await),
                None => None,
            };
            if let (Some(l), Some(Err(e))) = (&lobby, left) {
                tracing::warn!(session = session_id, lobby = %l.id, error = %e, "leaving the lobby at the end");
            }
            if !removed {
                if let Err(e) = host.planes.runners.stop_session(session_id, &parts).await {
                    tracing::error!(session = session_id, error = %e, "stopping the app");
                }
                host.sessions.remove_by_id(session_id);
                tracing::info!(session = session_id, "app stopped, session removed");
            }
        };
        Some((s, stop))
    }

    /// Stop sessions without client activity (control messages, UDP pings) for `idle`; a session
    /// that never had any counts from its launch. Returns the ids stopped.
    pub async fn stop_idle(self: &Arc<Self>, idle: Duration) -> Vec<u32> {
        let now = std::time::SystemTime::now();
        let mut stopped = Vec::new();
        for s in self.sessions.list() {
            let last = self.sessions.last_activity(s.id).unwrap_or(s.created);
            if s.state != SessionState::Stopping && now.duration_since(last).is_ok_and(|d| d > idle) {
                tracing::info!(session = s.id, idle_s = idle.as_secs(), "no client activity: stopping the session");
                if self.end(s.id, EndReason::Idle).await.is_some() {
                    stopped.push(s.id);
                }
            }
        }
        stopped
    }
}
