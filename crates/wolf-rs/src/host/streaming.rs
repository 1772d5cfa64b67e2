//! The host's side of each session's streams: the session process started with the session (and
//! after a resume when it has none), PLAY and source switches handed to it, and what it reports
//! turned into the session's state, the host's metrics and, when it fails or is lost, the
//! session's end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::Host;
use crate::commands::{EndReason, StreamCommand};
use crate::host::plan::Planner;
use crate::lifecycle::Entry;
use crate::session_process::link::{Event, LinkError};
use crate::session_process::wire::{Command, Report};
use crate::sessions::{Session, SessionState};

impl Host {
    /// The session with its session process, started now when it has none; its stream ports are
    /// the process's (saved with the session).
    pub async fn ensure_process(&self, session_id: u32) -> Result<Session, LinkError> {
        let live = self.sessions.live(session_id).ok_or(LinkError::Gone)?;
        if live.link().is_some() {
            return self.sessions.by_id(session_id).ok_or(LinkError::Gone);
        }
        let link = self.planes.spawner.start(session_id).await?;
        if !live.set_link(link.clone()) {
            // It ended meanwhile.
            self.planes.spawner.kill(&link.record);
            return Err(LinkError::Gone);
        }
        tracing::info!(session = session_id, pid = link.record.pid, ports = ?link.ports, "session process started");
        self.planes.lifecycle.record(Entry::SessionProcessStart { session: session_id, process: link.record.pid });
        let (ports, record) = (link.ports, link.record.clone());
        let saved = self
            .sessions
            .update_by_id_saved(session_id, |s| {
                s.ports.video = ports.video;
                s.ports.audio = ports.audio;
                s.ports.control = ports.control;
                s.process = Some(record);
                s.clone()
            })
            .await;
        match saved {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(LinkError::Gone),
            Err(e) => {
                // In memory it streams; a crash before the next write leaves the process an orphan,
                // which the next start's sweep stops.
                tracing::warn!(session = session_id, error = %e, "the session's process is not on disk");
                self.sessions.by_id(session_id).ok_or(LinkError::Gone)
            }
        }
    }

    /// Attach to the session processes of the sessions adopted at start: they stream on under
    /// this control plane. One that does not answer is killed and its session ends.
    pub async fn attach_adopted(self: &Arc<Self>) {
        for s in self.sessions.list() {
            let (Some(record), Some(live)) = (s.process.clone(), self.sessions.live(s.id)) else { continue };
            match self.planes.spawner.attach(s.id, &record).await {
                Ok(link) => {
                    if let Some(a) = link.announced.clone() {
                        // What its client negotiated, for a switch of sources later.
                        self.sessions.update_by_id(s.id, |s| s.rtsp.stream = Some(a));
                    }
                    tracing::info!(session = s.id, pid = record.pid, "session process adopted: its stream goes on");
                    self.planes.lifecycle.record(Entry::SessionProcessAdopted { session: s.id, process: record.pid });
                    live.set_link(link);
                }
                Err(e) => {
                    tracing::error!(session = s.id, pid = record.pid, error = %e, "the session's process does not answer: ending the session");
                    self.planes.spawner.kill(&record);
                    self.end(s.id, EndReason::ProcessLost).await;
                }
            }
        }
    }

    /// Serve PLAY and source switches, each on its own task (one slow process holds up no other).
    pub async fn serve_stream_commands(
        self: Arc<Self>,
        mut commands: UnboundedReceiver<StreamCommand>,
        shutdown: CancellationToken,
    ) {
        loop {
            let cmd = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = commands.recv() => match c {
                    Some(c) => c,
                    None => return,
                },
            };
            let host = self.clone();
            tokio::spawn(async move {
                match cmd {
                    StreamCommand::Start { session_id, done } => {
                        host.start_streams(session_id).await;
                        if let Some(d) = done {
                            let _ = d.send(());
                        }
                    }
                    StreamCommand::Restart { session_id, done } => {
                        host.switch_streams(session_id).await;
                        if let Some(d) = done {
                            let _ = d.send(());
                        }
                    }
                }
            });
        }
    }

    /// PLAY: the session process streams to the client that negotiated it, once it pings.
    async fn start_streams(self: &Arc<Self>, session_id: u32) {
        let (Some(s), Some(link)) =
            (self.sessions.by_id(session_id), self.sessions.live(session_id).and_then(|l| l.link()))
        else {
            tracing::warn!(session = session_id, "PLAY for a session without a session process");
            return;
        };
        let planned = Planner::negotiated(&s).and_then(|n| Ok((n, self.planes.planner.plan(&s)?)));
        let (negotiated, plan) = match planned {
            Ok(p) => p,
            Err(e) => {
                self.metrics.pipeline_errors.inc();
                tracing::error!(session = session_id, error = %e, "the stream cannot be planned: ending the session");
                self.end(session_id, EndReason::StreamFailed).await;
                return;
            }
        };
        let start = Command::Start { negotiated: Box::new(negotiated), plan: Box::new(plan) };
        if let Err(e) = link.request(start).await {
            tracing::warn!(session = session_id, error = %e, "the session process did not start the stream");
        }
    }

    /// The session's sources changed (a lobby joined or left): its process streams the new ones.
    async fn switch_streams(self: &Arc<Self>, session_id: u32) {
        let (Some(s), Some(link)) =
            (self.sessions.by_id(session_id), self.sessions.live(session_id).and_then(|l| l.link()))
        else {
            return;
        };
        if s.rtsp.stream.is_none() {
            // Not negotiated yet: the next PLAY plans the new sources.
            return;
        }
        match self.planes.planner.plan(&s) {
            Ok(plan) => {
                if let Err(e) = link.request(Command::Switch { plan: Box::new(plan) }).await {
                    tracing::warn!(session = session_id, error = %e, "the session process did not switch sources");
                }
            }
            Err(e) => {
                self.metrics.pipeline_errors.inc();
                tracing::error!(session = session_id, error = %e, "the new sources cannot be planned: ending the session");
                self.end(session_id, EndReason::StreamFailed).await;
            }
        }
    }

    /// What session processes report, in order per process: their counts into the host's
    /// metrics, their client's comings and goings into the session's state, a failed stream or a
    /// lost process into the session's end.
    pub async fn serve_session_processes(
        self: Arc<Self>,
        mut events: UnboundedReceiver<(u32, Event)>,
        shutdown: CancellationToken,
    ) {
        let mut last: HashMap<u32, Report> = HashMap::new();
        loop {
            let (id, event) = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.recv() => match e {
                    Some(e) => e,
                    None => return,
                },
            };
            match event {
                Event::Report(r) => {
                    self.reported(id, &r, last.get(&id));
                    last.insert(id, *r);
                }
                Event::Lost { hung, pid } => {
                    last.remove(&id);
                    self.planes.health.set_process_stalled(id, Vec::new());
                    self.metrics.forget_session_process(id);
                    let how = if hung { "hung" } else { "lost" }.to_owned();
                    self.planes.lifecycle.record(Entry::SessionProcessExit { session: id, process: pid, how });
                    if self.sessions.by_id(id).is_some_and(|s| s.state != SessionState::Stopping) {
                        let reason = if hung { EndReason::ProcessHung } else { EndReason::ProcessLost };
                        tracing::error!(
                            session = id,
                            reason = reason.as_str(),
                            "the session's process is gone: ending the session"
                        );
                        let host = self.clone();
                        tokio::spawn(async move { host.end(id, reason).await });
                    }
                }
            }
        }
    }

    fn reported(self: &Arc<Self>, id: u32, r: &Report, before: Option<&Report>) {
        self.metrics.add_stream_counts(before.map(|b| &b.figures), &r.figures);
        self.metrics.session_process(id, r.cpu_seconds, r.rss_bytes);
        self.planes.health.set_process_stalled(id, r.stalled.clone());
        if let Some(thread) = &r.hung {
            tracing::error!(session = id, thread, "the session process hangs and exits: ending the session");
            let host = self.clone();
            tokio::spawn(async move { host.end(id, EndReason::ProcessHung).await });
            return;
        }
        let Some(live) = self.sessions.live(id) else { return };
        if let Some(ms) = r.activity_unix_ms {
            live.set_activity(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        }
        match before {
            // Attached (after a restart): the session streams when its process does.
            None if r.streaming && r.connected => {
                self.sessions.update_by_id(id, |s| {
                    if s.enter(SessionState::Streaming) {
                        s.rtsp.playing = true;
                    }
                });
            }
            Some(b) if r.disconnects > b.disconnects => self.client_left(id),
            _ => {}
        }
        if let Some(why) = &r.failed
            && before.is_none_or(|b| b.failed.is_none())
        {
            tracing::error!(session = id, why, "the session's stream failed: ending the session");
            let host = self.clone();
            tokio::spawn(async move { host.end(id, EndReason::StreamFailed).await });
        }
        let was: &[(std::path::PathBuf, u32, u32)] = before.map(|b| b.pads.as_slice()).unwrap_or(&[]);
        if r.pads != was {
            self.pads_changed(id, was, &r.pads);
        }
    }

    /// The client's control peer left: the app keeps running, the client may come back with
    /// /resume, and its next RTSP negotiation starts over.
    fn client_left(&self, id: u32) {
        tracing::info!(session = id, "the client left: the session pauses");
        self.sessions.update_by_id(id, |s| {
            // How the client speaks RTSP does not change.
            s.rtsp = crate::sessions::RtspProgress {
                encrypted: s.rtsp.encrypted,
                own_port_used: s.rtsp.own_port_used,
                ..Default::default()
            };
            s.enter(SessionState::Paused);
        });
    }

    /// The session's virtual pads changed: an app in a container gets their device nodes.
    fn pads_changed(&self, id: u32, was: &[(std::path::PathBuf, u32, u32)], now: &[(std::path::PathBuf, u32, u32)]) {
        let Some(session) = self.sessions.by_id(id) else { return };
        let node = |(path, major, minor): &(std::path::PathBuf, u32, u32)| crate::runners::DeviceNode {
            path: path.clone(),
            major: *major,
            minor: *minor,
        };
        let added: Vec<_> = now.iter().filter(|n| !was.contains(n)).map(node).collect();
        let removed: Vec<_> = was.iter().filter(|n| !now.contains(n)).map(node).collect();
        let runners = self.planes.runners.clone();
        tokio::task::spawn_blocking(move || {
            for (nodes, present) in [(removed, false), (added, true)] {
                if !nodes.is_empty()
                    && let Err(e) = runners.device_nodes(id, &session.runner, &nodes, present)
                {
                    tracing::warn!(session = id, error = %e, "the app cannot see its pad");
                }
            }
        });
    }
}
