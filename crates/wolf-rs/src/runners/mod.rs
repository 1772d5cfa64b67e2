//! App runners: how a session's app is started, watched and stopped. The handle is persisted with
//! the session so a restarted host can find the app again.

pub mod docker;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{App, RunnerKind};

/// What identifies a running app across host restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RunnerHandle {
    /// The app only streams its sources; nothing runs.
    #[default]
    None,
    /// A process group led by `pid`; `start_time` (clock ticks after boot, /proc/<pid>/stat field
    /// 22) tells it apart from a later process that reused the pid.
    Process {
        pid: i32,
        start_time: u64,
    },
    Docker {
        container_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunnerError {
    #[error("app runner config: {0}")]
    Config(String),
    #[error("the app could not be started: {0}")]
    Start(String),
    #[error("the app could not be stopped: {0}")]
    Stop(String),
    #[error("docker: {0}")]
    Docker(String),
}

/// Every runner of the host. Blocking process work runs on the blocking pool.
pub struct Runners {
    pub process: std::sync::Arc<process::ProcessRunner>,
    pub docker: docker::DockerRunner,
    pub stop_timeout: Duration,
}

impl Runners {
    /// `owner` tells this host's app processes from others' (its state dir).
    pub fn new(log_dir: PathBuf, owner: String, stop_timeout: Duration) -> Runners {
        Runners {
            process: std::sync::Arc::new(process::ProcessRunner::new(log_dir, owner)),
            docker: docker::DockerRunner::new(),
            stop_timeout,
        }
    }

    pub async fn start(&self, session_id: u32, app: &App) -> Result<RunnerHandle, RunnerError> {
        let r = &app.runner;
        match r.kind {
            RunnerKind::None => Ok(RunnerHandle::None),
            RunnerKind::Process => {
                let (p, cmd, env) = (self.process.clone(), r.command.clone(), r.env.clone());
                tokio::task::spawn_blocking(move || p.start(session_id, &cmd, &env))
                    .await
                    .map_err(|e| RunnerError::Start(format!("runner task: {e}")))?
            }
            RunnerKind::Docker => {
                self.docker.start(session_id, &r.image, &r.env, &r.mounts, &r.devices, &r.command).await
            }
        }
    }

    /// Does the app of this handle still run? An engine that does not answer counts as "yes", so
    /// a docker hiccup never kills a session.
    pub async fn alive(&self, session_id: u32, handle: &RunnerHandle) -> bool {
        match handle {
            RunnerHandle::None => true,
            RunnerHandle::Process { pid, start_time } => {
                let (p, pid, st) = (self.process.clone(), *pid, *start_time);
                tokio::task::spawn_blocking(move || p.alive(pid, st)).await.unwrap_or(true)
            }
            RunnerHandle::Docker { container_id } => match self.docker.alive(container_id, session_id).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(session = session_id, error = %e, "cannot tell whether the app container runs");
                    true
                }
            },
        }
    }

    pub async fn stop(&self, handle: &RunnerHandle) -> Result<(), RunnerError> {
        match handle {
            RunnerHandle::None => Ok(()),
            RunnerHandle::Process { pid, start_time } => {
                let (p, pid, st, t) = (self.process.clone(), *pid, *start_time, self.stop_timeout);
                tokio::task::spawn_blocking(move || p.stop(pid, st, t))
                    .await
                    .map_err(|e| RunnerError::Stop(format!("runner task: {e}")))?
            }
            RunnerHandle::Docker { container_id } => self.docker.stop(container_id, self.stop_timeout).await,
        }
    }
}
