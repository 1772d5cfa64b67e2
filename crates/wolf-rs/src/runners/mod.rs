//! App runners: how a session's parts (its display, its sink, its app) are started in that order,
//! watched, and stopped in reverse. The handles are persisted with the session so a restarted host
//! can find them again.

pub mod audio;
pub mod display;
pub mod docker;
pub mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{App, AudioKind, DisplayKind, RunnerKind};
use audio::{Pulse, SinkHandle};
use display::{DisplayHandle, Displays};
use process::StartError;
use wolf_protocol::launch::Mode;

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

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the app could not be started: {0}")]
    Start(#[from] process::StartError),
    #[error("the app could not be stopped: {0}")]
    Stop(#[from] process::StopError),
    #[error("docker: {call}: {source}")]
    Docker { call: docker::Call, source: docker::DockerError },
    #[error("virtual display: {0}")]
    Display(#[from] display::DisplayError),
    #[error("session audio: {0}")]
    Audio(#[from] audio::AudioError),
    /// The blocking-pool task of a runner step panicked or was cancelled.
    #[error("runner task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What a session runs: its app, and the display and sink the app renders and plays into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parts {
    pub app: RunnerHandle,
    pub display: Option<DisplayHandle>,
    pub sink: Option<SinkHandle>,
}

impl Parts {
    /// Nothing runs for the session.
    pub fn is_empty(&self) -> bool {
        self.app == RunnerHandle::None && self.display.is_none() && self.sink.is_none()
    }
}

/// Which part of a session is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    App,
    Display,
    Audio,
}

/// What a launch needs to know of the session.
pub struct LaunchSpec<'a> {
    pub session_id: u32,
    pub app: &'a App,
    pub mode: Mode,
    /// The client's certificate fingerprint: its app data lives under it.
    pub client: &'a str,
    /// The negotiated channel count (2, 6 or 8).
    pub channels: u8,
}

/// The part of a session whose start failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Display,
    Audio,
    Runner,
}

impl Part {
    /// Its label in `wolf_session_creation_errors_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Display => "display",
            Part::Audio => "audio",
            Part::Runner => "runner",
        }
    }
}

/// A launch that failed, with the part that failed.
#[derive(Debug)]
pub struct LaunchFailure {
    pub part: Part,
    pub error: RunnerError,
}

/// Where a Docker app finds the session's sockets and folders.
const CONTAINER_PULSE_DIR: &str = "/tmp/wolf-rs-pulse";
const CONTAINER_RUNTIME_DIR: &str = "/run/wolf-rs";
/// The home folder in Wolf's app images.
const CONTAINER_HOME: &str = "/home/retro";

async fn blocking<T: Send + 'static, E: Into<RunnerError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, RunnerError> {
    tokio::task::spawn_blocking(f).await?.map_err(Into::into)
}

/// Every runner of the host. Blocking process work runs on the blocking pool.
/// Make a character device node anyone may open (the container's app may run as any user).
fn mknod_char(path: &Path, major: u32, minor: u32) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: mknod reads the NUL-terminated path only during the call.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(major, minor)) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Past the umask.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
}

/// A character device node (`/dev/input/event7`, 13:71).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub major: u32,
    pub minor: u32,
}

pub struct Runners {
    pub process: std::sync::Arc<process::ProcessRunner>,
    pub docker: docker::DockerRunner,
    pub displays: std::sync::Arc<Displays>,
    pub audio: std::sync::Arc<Pulse>,
    pub stop_timeout: Duration,
    state_dir: PathBuf,
}

impl Runners {
    /// `owner` tells this host's processes from others' (its state dir).
    pub fn new(state_dir: &Path, owner: String, desktop: &crate::config::Desktop, stop_timeout: Duration) -> Runners {
        let process = std::sync::Arc::new(process::ProcessRunner::new(state_dir.join("logs"), owner));
        Runners {
            displays: std::sync::Arc::new(Displays::new(process.clone(), desktop)),
            audio: std::sync::Arc::new(Pulse::new(process.clone(), state_dir, desktop)),
            process,
            docker: docker::DockerRunner::new(),
            stop_timeout,
            state_dir: state_dir.to_owned(),
        }
    }

    /// The session's own runtime folder (`XDG_RUNTIME_DIR`), removed when it ends.
    fn runtime_dir(&self, session_id: u32) -> PathBuf {
        self.state_dir.join("run").join(format!("session-{session_id}"))
    }

    /// What a container sees as `/dev/input`: the nodes of the session's pads.
    fn input_dir(&self, session_id: u32) -> PathBuf {
        self.runtime_dir(session_id).join("input")
    }

    /// The shared-memory socket of a stream's display capture.
    pub fn capture_socket(&self, session_id: u32) -> PathBuf {
        self.state_dir.join("run").join(format!("capture-{session_id}"))
    }

    /// The client's data folder for an app (its `HOME`), kept across sessions.
    pub fn app_home(&self, client: &str, app_id: u32) -> PathBuf {
        self.state_dir.join("apps").join(client).join(app_id.to_string())
    }

    /// Start the session's display, sink and app, in that order. On failure what was started is
    /// stopped again and the failing part named.
    pub async fn start_session(&self, spec: &LaunchSpec<'_>) -> Result<Parts, LaunchFailure> {
        let mut parts = Parts::default();
        let fail = |part, error| LaunchFailure { part, error };
        let (id, mode) = (spec.session_id, spec.mode);
        if spec.app.display.kind == DisplayKind::Virtual {
            let (d, display) = (self.displays.clone(), spec.app.display.clone());
            let start = move || {
                let h = d.start(id, &display, mode)?;
                if !display.resize {
                    return Ok(h);
                }
                d.resize(&h, mode).inspect_err(|_| {
                    let _ = d.stop(&h, Duration::from_secs(2));
                })
            };
            match blocking(start).await {
                Ok(h) => parts.display = Some(h),
                Err(e) => return Err(fail(Part::Display, e)),
            }
        }
        if spec.app.audio.kind == AudioKind::Sink {
            let (a, channels) = (self.audio.clone(), spec.channels);
            match blocking(move || a.create_sink(id, channels)).await {
                Ok(h) => parts.sink = Some(h),
                Err(e) => {
                    self.unwind(id, &parts).await;
                    return Err(fail(Part::Audio, e));
                }
            }
        }
        match self.start_app(spec, &parts).await {
            Ok(h) => parts.app = h,
            Err(e) => {
                self.unwind(id, &parts).await;
                return Err(fail(Part::Runner, e));
            }
        }
        Ok(parts)
    }

    async fn unwind(&self, session_id: u32, parts: &Parts) {
        if let Err(e) = self.stop_session(session_id, parts).await {
            tracing::error!(error = %e, "stopping what a failed launch started");
        }
    }

    /// The session env and, for a container, the mounts that carry it in.
    fn session_env(
        &self,
        spec: &LaunchSpec<'_>,
        parts: &Parts,
        in_container: bool,
    ) -> Result<(BTreeMap<String, String>, Vec<String>), RunnerError> {
        let mut env = BTreeMap::new();
        let mut mounts = Vec::new();
        if parts.display.is_none() && parts.sink.is_none() {
            return Ok((env, mounts));
        }
        let runtime = self.runtime_dir(spec.session_id);
        let home = self.app_home(spec.client, spec.app.id);
        for dir in [&runtime, &home] {
            std::fs::create_dir_all(dir).map_err(|source| StartError::CreateDir { path: dir.clone(), source })?;
        }
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700));
        if let Some(d) = &parts.display {
            env.insert("DISPLAY".into(), d.name());
            if in_container {
                let socket = d.socket().display().to_string();
                mounts.push(format!("{socket}:{socket}"));
            }
        }
        if let Some(s) = &parts.sink {
            env.insert("PULSE_SINK".into(), s.name.clone());
            let server = if in_container {
                mounts.push(format!("{}:{CONTAINER_PULSE_DIR}", self.audio.socket_dir().display()));
                format!("unix:{CONTAINER_PULSE_DIR}/native")
            } else {
                self.audio.server()
            };
            env.insert("PULSE_SERVER".into(), server);
        }
        if in_container {
            mounts.push(format!("{}:{CONTAINER_RUNTIME_DIR}", runtime.display()));
            mounts.push(format!("{}:{CONTAINER_HOME}", home.display()));
            env.insert("XDG_RUNTIME_DIR".into(), CONTAINER_RUNTIME_DIR.into());
            env.insert("HOME".into(), CONTAINER_HOME.into());
        } else {
            env.insert("XDG_RUNTIME_DIR".into(), runtime.display().to_string());
            env.insert("HOME".into(), home.display().to_string());
        }
        Ok((env, mounts))
    }

    /// The app, with the session's env under the app's own (the app's config wins).
    async fn start_app(&self, spec: &LaunchSpec<'_>, parts: &Parts) -> Result<RunnerHandle, RunnerError> {
        let r = &spec.app.runner;
        let session_id = spec.session_id;
        match r.kind {
            RunnerKind::None => Ok(RunnerHandle::None),
            RunnerKind::Process => {
                let (mut env, _) = self.session_env(spec, parts, false)?;
                env.extend(r.env.clone());
                let (p, cmd) = (self.process.clone(), r.command.clone());
                blocking(move || p.start(session_id, &cmd, &env)).await
            }
            RunnerKind::Docker => {
                let (mut env, mut mounts) = self.session_env(spec, parts, true)?;
                // Empty until a pad arrives (`device_nodes`); removed with the runtime dir.
                let input = self.input_dir(session_id);
                std::fs::create_dir_all(&input)
                    .map_err(|source| StartError::CreateDir { path: input.clone(), source })?;
                mounts.push(format!("{}:/dev/input", input.display()));
                env.extend(r.env.clone());
                mounts.extend(r.mounts.iter().cloned());
                self.docker.start(session_id, &r.image, &env, &mounts, &r.devices, &r.command).await
            }
        }
    }

    /// A display that follows the client's mode, set to `mode` (`/resume` with another mode).
    pub async fn resize_display(&self, display: &DisplayHandle, mode: Mode) -> Result<DisplayHandle, RunnerError> {
        let (d, h) = (self.displays.clone(), display.clone());
        blocking(move || d.resize(&h, mode)).await
    }

    /// Stop the app, then the sink, then the display; everything is tried, the first error returned.
    pub async fn stop_session(&self, session_id: u32, parts: &Parts) -> Result<(), RunnerError> {
        let mut first = self.stop(&parts.app).await.err();
        if let Some(sink) = parts.sink.clone() {
            let a = self.audio.clone();
            if let Err(e) = blocking(move || a.remove_sink(&sink)).await {
                first.get_or_insert(e);
            }
        }
        if let Some(display) = parts.display.clone() {
            let (d, t) = (self.displays.clone(), self.stop_timeout);
            if let Err(e) = blocking(move || d.stop(&display, t)).await {
                first.get_or_insert(e);
            }
        }
        if session_id != 0 {
            let _ = std::fs::remove_dir_all(self.runtime_dir(session_id));
        }
        first.map_or(Ok(()), Err)
    }

    /// The first part of a session that is gone, if any. A part that cannot be asked counts as there.
    pub async fn lost(&self, session_id: u32, parts: &Parts) -> Option<Lost> {
        if let Some(d) = parts.display.clone() {
            let displays = self.displays.clone();
            if !tokio::task::spawn_blocking(move || displays.alive(&d)).await.unwrap_or(true) {
                return Some(Lost::Display);
            }
        }
        if let Some(s) = parts.sink.clone() {
            let a = self.audio.clone();
            if tokio::task::spawn_blocking(move || a.sink_alive(&s)).await.ok().flatten() == Some(false) {
                return Some(Lost::Audio);
            }
        }
        (!self.alive(session_id, &parts.app).await).then_some(Lost::App)
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

    /// Device nodes made after the app started (a client's pad): made in, or removed from, the
    /// folder a container sees as its `/dev/input`. A process app opens them where they are.
    /// Blocking (the caller is the session's input thread).
    pub fn device_nodes(
        &self,
        session_id: u32,
        handle: &RunnerHandle,
        nodes: &[DeviceNode],
        present: bool,
    ) -> Result<(), RunnerError> {
        if !matches!(handle, RunnerHandle::Docker { .. }) {
            return Ok(());
        }
        let dir = self.input_dir(session_id);
        for n in nodes {
            let Some(name) = n.path.file_name() else { continue };
            let path = dir.join(name);
            let failed = |source| StartError::DeviceNode { path: path.clone(), source };
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed(e).into()),
            }
            if present {
                mknod_char(&path, n.major, n.minor).map_err(failed)?;
            }
        }
        Ok(())
    }

    pub async fn stop(&self, handle: &RunnerHandle) -> Result<(), RunnerError> {
        match handle {
            RunnerHandle::None => Ok(()),
            RunnerHandle::Process { pid, start_time } => {
                let (p, pid, st, t) = (self.process.clone(), *pid, *start_time, self.stop_timeout);
                blocking(move || p.stop(pid, st, t)).await
            }
            RunnerHandle::Docker { container_id } => self.docker.stop(container_id, self.stop_timeout).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_has_its_metric_label() {
        let labels = [Part::Display, Part::Audio, Part::Runner].map(Part::as_str);
        assert_eq!(labels, ["display", "audio", "runner"]);
    }

    /// The part that failed is the one a launch is counted under.
    #[tokio::test]
    async fn a_failed_start_names_its_part() {
        let dir = tempfile::tempdir().unwrap();
        let desktop = crate::config::Desktop { first_display: 61_000, max_displays: 4, ..Default::default() };
        let runners = Runners::new(dir.path(), dir.path().display().to_string(), &desktop, Duration::from_secs(1));
        let mode = Mode { width: 320, height: 240, fps: 30 };
        let mut app = App::default();
        app.display.kind = DisplayKind::Virtual;
        app.display.command = vec!["/nonexistent/Xvfb".into(), "{display}".into()];
        fn spec(app: &App, mode: Mode) -> LaunchSpec<'_> {
            LaunchSpec { session_id: 5, app, mode, client: "fp", channels: 2 }
        }
        let f = runners.start_session(&spec(&app, mode)).await.unwrap_err();
        assert_eq!(f.part, Part::Display, "{}", f.error);
        assert!(matches!(f.error, RunnerError::Display(display::DisplayError::ServerStart(_))), "{}", f.error);
        let message = f.error.to_string();
        assert!(message.contains("virtual display") && message.contains("/nonexistent/Xvfb"), "{message}");

        app.display.kind = DisplayKind::None;
        app.runner.kind = RunnerKind::Process;
        app.runner.command = vec!["/nonexistent/app".into()];
        let f = runners.start_session(&spec(&app, mode)).await.unwrap_err();
        assert_eq!(f.part, Part::Runner, "{}", f.error);
        assert!(matches!(f.error, RunnerError::Start(StartError::Spawn { .. })), "{}", f.error);
    }
}
