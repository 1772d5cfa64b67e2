//! Virtual X displays: one X server per session of an app with `[apps.display] type = "virtual"`
//! (Xvfb by default), at the client's mode, started before the app and stopped after it. It is a
//! supervised process like an app (own process group, pid + start time in the session record), so
//! a restarted host adopts the desktop the user left, or cleans it up with the app.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::RunnerError;
use super::process::{HelperError, ProcessRunner, Role, StartError, StopError};
use crate::config::{AppDisplay, Desktop};
use wolf_protocol::launch::Mode;

/// Where every X server on the machine puts its unix socket (`X<N>`); fixed by the X server.
pub const X_SOCKET_DIR: &str = "/tmp/.X11-unix";

/// How long an X server has to accept connections after it was started.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Numbers tried before giving up when others take them between our check and the server's start.
const START_ATTEMPTS: usize = 8;

/// Why a virtual display (or a capture of it) did not start, resize or stop.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("no free display number in :{first} to :{last} ([desktop] first_display, max_displays)")]
    NoFreeNumber { first: u32, last: u32 },
    #[error("no display number could be taken in {0} attempts")]
    NumbersTaken(usize),
    #[error("the X server did not start: {0}")]
    ServerStart(#[source] StartError),
    #[error("{why}; see {}", log.display())]
    NotReady { why: NotReady, log: PathBuf },
    #[error("resizing {display} to {mode}: {source}")]
    Resize { display: String, mode: String, source: HelperError },
    #[error("{0}")]
    Stop(#[source] StopError),
    #[error("{}: {source}", path.display())]
    CaptureDir { path: PathBuf, source: std::io::Error },
    #[error("the capture of {display} did not start; see {}", log.display())]
    CaptureNotReady { display: String, log: PathBuf },
}

/// Why a started X server is not taken as ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the X server for {0} exited at start")]
    Exited(String),
    #[error("the X server for {display} did not accept connections within {within:?}")]
    NoConnection { display: String, within: Duration },
}

/// A session's running X server, as persisted with the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayHandle {
    /// The display number: `DISPLAY=:<number>`.
    pub number: u32,
    pub pid: i32,
    /// Clock ticks after boot (/proc/<pid>/stat field 22): tells it from a later process on the pid.
    pub start_time: u64,
    pub width: u32,
    pub height: u32,
}

impl DisplayHandle {
    /// `:N`, the value of `DISPLAY`.
    pub fn name(&self) -> String {
        format!(":{}", self.number)
    }

    /// The X server's unix socket.
    pub fn socket(&self) -> PathBuf {
        socket_path(self.number)
    }

    fn process(&self) -> (i32, u64) {
        (self.pid, self.start_time)
    }
}

pub fn socket_path(number: u32) -> PathBuf {
    PathBuf::from(format!("{X_SOCKET_DIR}/X{number}"))
}

fn lock_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/.X{number}-lock"))
}

/// The pid in an X server's lock file (the file holds it as ten ASCII digits).
fn lock_owner(number: u32) -> Option<i32> {
    std::fs::read_to_string(lock_path(number)).ok()?.trim().parse().ok()
}

/// Is display `number` taken by any X server on the machine (ours or not)? A lock file naming a
/// live process, or a socket that accepts.
fn taken(number: u32) -> bool {
    if lock_owner(number).is_some_and(|pid| super::process::start_time(pid).is_some()) {
        return true;
    }
    std::os::unix::net::UnixStream::connect(socket_path(number)).is_ok()
}

/// The virtual displays of this host.
pub struct Displays {
    process: Arc<ProcessRunner>,
    first: u32,
    count: u32,
    /// Numbers this host uses or is starting a server on.
    reserved: Mutex<HashSet<u32>>,
}

impl Displays {
    pub fn new(process: Arc<ProcessRunner>, config: &Desktop) -> Displays {
        Displays {
            process,
            first: config.first_display,
            count: config.max_displays,
            reserved: Mutex::new(HashSet::new()),
        }
    }

    fn reserved(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.reserved.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Displays this host owns now.
    pub fn in_use(&self) -> usize {
        self.reserved().len()
    }

    /// A free number, reserved; `None` when every number of the range is taken.
    fn reserve(&self) -> Option<u32> {
        let mut reserved = self.reserved();
        let n = (self.first..self.first.saturating_add(self.count)).find(|n| !reserved.contains(n) && !taken(*n))?;
        reserved.insert(n);
        Some(n)
    }

    fn release(&self, number: u32) {
        self.reserved().remove(&number);
    }

    /// A display adopted after a restart keeps its number.
    pub fn adopt(&self, h: &DisplayHandle) {
        self.reserved().insert(h.number);
    }

    /// Start an X server for `session_id` at `mode` (or the app's fixed size) and wait until it
    /// accepts connections (blocking).
    pub fn start(&self, session_id: u32, spec: &AppDisplay, mode: Mode) -> Result<DisplayHandle, DisplayError> {
        let (width, height) = match (spec.width, spec.height) {
            _ if spec.resize => (spec.max_width, spec.max_height),
            (0, _) | (_, 0) => (mode.width, mode.height),
            fixed => fixed,
        };
        let log = self.process.log_dir().join(format!("session-{session_id}-display.log"));
        for _ in 0..START_ATTEMPTS {
            let Some(number) = self.reserve() else {
                let last = self.first.saturating_add(self.count).saturating_sub(1);
                return Err(DisplayError::NoFreeNumber { first: self.first, last });
            };
            let command: Vec<String> = spec
                .command
                .iter()
                .map(|a| {
                    a.replace("{display}", &format!(":{number}"))
                        .replace("{width}", &width.to_string())
                        .replace("{height}", &height.to_string())
                        .replace("{fps}", &mode.fps.to_string())
                })
                .collect();
            let started = self.process.spawn(Role::Display, session_id, &command, &BTreeMap::new(), &log);
            let (pid, start_time) = match started {
                Ok(p) => p,
                Err(e) => {
                    self.release(number);
                    if taken(number) {
                        continue;
                    }
                    return Err(DisplayError::ServerStart(e));
                }
            };
            let h = DisplayHandle { number, pid, start_time, width, height };
            match self.wait_ready(&h) {
                Ok(()) => {
                    tracing::info!(session = session_id, display = %h.name(), width, height, pid, "virtual display started");
                    return Ok(h);
                }
                Err(why) => {
                    let _ = self.process.stop(pid, start_time, Duration::from_secs(2));
                    self.release(number);
                    // Another X server took the number between our check and its start: next one.
                    if lock_owner(number).is_some_and(|owner| owner != pid) && taken(number) {
                        tracing::debug!(display = number, "display number taken meanwhile; trying the next");
                        continue;
                    }
                    return Err(DisplayError::NotReady { why, log });
                }
            }
        }
        Err(DisplayError::NumbersTaken(START_ATTEMPTS))
    }

    fn wait_ready(&self, h: &DisplayHandle) -> Result<(), NotReady> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if !self.process.alive(h.pid, h.start_time) {
                return Err(NotReady::Exited(h.name()));
            }
            if std::os::unix::net::UnixStream::connect(h.socket()).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(NotReady::NoConnection { display: h.name(), within: READY_WITHIN });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Set the screen of a display started with `resize` to `mode` (RandR: a mode of that size is
    /// added when the server lacks one). Returns the handle with its new size (blocking).
    pub fn resize(&self, h: &DisplayHandle, mode: Mode) -> Result<DisplayHandle, DisplayError> {
        let (w, ht) = (mode.width, mode.height);
        let name = format!("{w}x{ht}");
        let xrandr = |args: &[&str]| {
            let mut c = std::process::Command::new("xrandr");
            c.arg("-display").arg(h.name()).args(args);
            super::process::run_bounded(&mut c, Duration::from_secs(5))
        };
        // Timings only have to be well formed: a virtual screen has no monitor to sync.
        let clock = f64::from(w + 24) * f64::from(ht + 3) * f64::from(mode.fps.max(1)) / 1e6;
        let timings = [w, w + 8, w + 16, w + 24, ht, ht + 1, ht + 2, ht + 3].map(|v| v.to_string());
        let mut newmode = vec!["--newmode".to_owned(), name.clone(), format!("{clock:.2}")];
        newmode.extend(timings);
        let newmode: Vec<&str> = newmode.iter().map(String::as_str).collect();
        // Both fail harmlessly when the mode is there already.
        let _ = xrandr(&newmode);
        let _ = xrandr(&["--addmode", "screen", &name]);
        xrandr(&["--output", "screen", "--mode", &name]).map_err(|source| DisplayError::Resize {
            display: h.name(),
            mode: name.clone(),
            source,
        })?;
        tracing::info!(display = %h.name(), mode = %name, "virtual display resized");
        Ok(DisplayHandle { width: w, height: ht, ..h.clone() })
    }

    /// Is the display's X server still the one we started, and running? (blocking)
    pub fn alive(&self, h: &DisplayHandle) -> bool {
        let (pid, start) = h.process();
        self.process.alive(pid, start)
    }

    /// Stop the X server and remove what it leaves behind when killed (socket, lock) (blocking).
    pub fn stop(&self, h: &DisplayHandle, timeout: Duration) -> Result<(), DisplayError> {
        let (pid, start) = h.process();
        let stopped = self.process.stop(pid, start, timeout);
        if stopped.is_ok() {
            // Only files that still name this server: a later server on the number keeps its own.
            if lock_owner(h.number) == Some(pid) {
                let _ = std::fs::remove_file(lock_path(h.number));
                let _ = std::fs::remove_file(h.socket());
            }
            self.release(h.number);
            tracing::info!(display = %h.name(), "virtual display stopped");
        }
        stopped.map_err(DisplayError::Stop)
    }
}

/// What a stream needs to capture a session's display.
pub struct CaptureSpec {
    pub process: Arc<ProcessRunner>,
    pub session_id: u32,
    pub display: DisplayHandle,
    pub fps: u32,
    /// The shared-memory control socket.
    pub socket: PathBuf,
}

impl CaptureSpec {
    /// The host pipeline's source: the child's frames at the display's size.
    pub fn source(&self) -> String {
        capture_source(&self.socket, &self.display, self.fps)
    }
}

/// The host pipeline's source for a capture of `display` on `socket`: the child's frames at the
/// display's size.
pub fn capture_source(socket: &Path, display: &DisplayHandle, fps: u32) -> String {
    format!(
        "shmsrc socket-path=\"{}\" is-live=true do-timestamp=true ! video/x-raw,format=BGRx,width={},height={},framerate={}/1",
        socket.display(),
        display.width,
        display.height,
        fps
    )
}

/// A capture of a session's display in a child process (`ximagesrc` there, frames to the host's
/// pipeline through shared memory). Xlib ends the process whose X server goes away: so it is the
/// child that ends, and the stream fails with an error instead of the host exiting. Stopped on drop.
pub struct Capture {
    process: Arc<ProcessRunner>,
    pid: i32,
    start_time: u64,
    socket: PathBuf,
}

impl Capture {
    /// Start the child and wait (bounded) for its socket (blocking).
    pub fn start(spec: CaptureSpec) -> Result<Capture, RunnerError> {
        let d = &spec.display;
        let _ = std::fs::remove_file(&spec.socket);
        if let Some(dir) = spec.socket.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DisplayError::CaptureDir { path: dir.to_owned(), source })?;
        }
        let frame = u64::from(d.width) * u64::from(d.height) * 4;
        // Room for a few frames; the host takes them as they come.
        let shm = (frame * 4).clamp(1 << 20, u64::from(u32::MAX));
        let socket = spec.socket.display().to_string();
        let command: Vec<String> = [
            "gst-launch-1.0",
            "-q",
            "ximagesrc",
            &format!("display-name={}", d.name()),
            "use-damage=false",
            "show-pointer=true",
            "!",
            &format!("video/x-raw,framerate={}/1", spec.fps),
            "!",
            "videoconvert",
            "!",
            "video/x-raw,format=BGRx",
            "!",
            "shmsink",
            &format!("socket-path={socket}"),
            &format!("shm-size={shm}"),
            "perms=384",
            "wait-for-connection=false",
            "sync=false",
        ]
        .map(String::from)
        .to_vec();
        let log = spec.process.log_dir().join(format!("session-{}-display.log", spec.session_id));
        let (pid, start_time) = spec.process.spawn(Role::Capture, spec.session_id, &command, &BTreeMap::new(), &log)?;
        let c = Capture { process: spec.process, pid, start_time, socket: spec.socket };
        let deadline = Instant::now() + READY_WITHIN;
        while !c.socket.exists() {
            if !c.process.alive(pid, start_time) || Instant::now() > deadline {
                return Err(DisplayError::CaptureNotReady { display: d.name(), log }.into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(c)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Err(e) = self.process.stop(self.pid, self.start_time, Duration::from_secs(2)) {
            tracing::warn!(error = %e, "stopping a display capture");
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_naming_a_dead_process_does_not_take_the_number() {
        // Display numbers far outside any range in use here.
        let n = 60_000 + std::process::id() % 5_000;
        assert!(!taken(n));
        std::fs::write(lock_path(n), format!("{:>10}\n", i32::MAX)).unwrap();
        assert!(!taken(n), "a stale lock (no such pid) is free");
        std::fs::write(lock_path(n), format!("{:>10}\n", std::process::id())).unwrap();
        assert!(taken(n), "a lock naming a live process is taken");
        std::fs::remove_file(lock_path(n)).unwrap();
    }
}
