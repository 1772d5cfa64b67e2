//! The process runner: the app's command in its own process group, its output appended to a
//! size-rotated log file (a file, not a pipe, so the app survives a host crash), stopped with
//! SIGTERM to the group and SIGKILL after the timeout. A pid is only ever signalled after its start
//! time matched the one recorded at launch, so a reused pid is never hit.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::RunnerHandle;

/// Why a process did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("empty command")]
    EmptyCommand,
    #[error("creating {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("opening the log {}: {source}", path.display())]
    OpenLog { path: PathBuf, source: std::io::Error },
    #[error("log file: {0}")]
    CloneLog(#[source] std::io::Error),
    #[error("{program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} exited at once ({}); see {}", status.map(|s| s.to_string()).unwrap_or_default(), log.display())]
    ExitedAtOnce { program: String, status: Option<ExitStatus>, log: PathBuf },
    #[error("device node {}: {source}", path.display())]
    DeviceNode { path: PathBuf, source: std::io::Error },
}

/// Why a process did not stop.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("process {pid} survived SIGKILL")]
    SurvivedKill { pid: i32 },
}

/// Why a helper command (pactl, xrandr) did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// It could not be spawned or waited for.
    #[error("{program}: {source}")]
    Io { program: String, source: std::io::Error },
    #[error("{program} did not finish within {} ms", limit.as_millis())]
    TimedOut { program: String, limit: Duration },
    /// It ran and failed; what it said on stderr.
    #[error("{program} failed ({status}): {stderr}")]
    Failed { program: String, status: ExitStatus, stderr: String },
}

/// A session log beyond this is rotated to `<name>.1` (one old file kept).
pub const LOG_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Env set on every app process: the owning host's state dir, so a restarted host can find the
/// processes it started (the process analogue of a container label).
pub const OWNER_ENV: &str = "WOLF_RS_OWNER";
pub const SESSION_ENV: &str = "WOLF_SESSION_ID";
/// What the process is to the host ([`Role`]); absent on apps started before roles existed.
pub const ROLE_ENV: &str = "WOLF_RS_ROLE";

/// The kinds of process the host starts, told apart after a restart by [`ROLE_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A session's app.
    App,
    /// A session's virtual X server.
    Display,
    /// The host's one PulseAudio server (shared by every session; never an orphan).
    Audio,
    /// A stream's capture of a session's display (started again with each stream).
    Capture,
    /// A session's session process (its streams, control peer and input).
    Session,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::App => "app",
            Role::Display => "display",
            Role::Audio => "audio",
            Role::Capture => "capture",
            Role::Session => "session",
        }
    }

    fn parse(s: &str) -> Role {
        match s {
            "display" => Role::Display,
            "audio" => Role::Audio,
            "capture" => Role::Capture,
            "session" => Role::Session,
            _ => Role::App,
        }
    }
}

/// A process-group leader this host's state dir started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub pid: i32,
    pub start_time: u64,
    /// Its `WOLF_SESSION_ID` (empty for the audio server).
    pub session: String,
    pub role: Role,
}

pub struct ProcessRunner {
    log_dir: PathBuf,
    owner: String,
    /// Children this host spawned, kept to reap them (adopted ones belong to init).
    children: Mutex<HashMap<i32, Child>>,
}

/// The start time (clock ticks after boot) of `pid`, if it runs and is not a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    (stat.state != 'Z').then_some(stat.starttime)
}

impl ProcessRunner {
    pub fn new(log_dir: PathBuf, owner: String) -> ProcessRunner {
        ProcessRunner { log_dir, owner, children: Mutex::new(HashMap::new()) }
    }

    /// Process-group leaders started by this host's state dir (blocking).
    pub fn owned(&self) -> Vec<Owned> {
        let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
        all.filter_map(Result::ok)
            .filter_map(|p| {
                let stat = p.stat().ok()?;
                if stat.pgrp != stat.pid || stat.state == 'Z' {
                    return None;
                }
                let env = p.environ().ok()?;
                let owner = env.get(std::ffi::OsStr::new(OWNER_ENV))?;
                if owner.as_encoded_bytes() != self.owner.as_bytes() {
                    return None;
                }
                let var = |k: &str| env.get(std::ffi::OsStr::new(k)).map(|s| s.to_string_lossy().into_owned());
                Some(Owned {
                    pid: stat.pid,
                    start_time: stat.starttime,
                    session: var(SESSION_ENV).unwrap_or_default(),
                    role: Role::parse(&var(ROLE_ENV).unwrap_or_default()),
                })
            })
            .collect()
    }

    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Child>> {
        self.children.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    pub fn log_path(&self, session_id: u32) -> PathBuf {
        self.log_dir.join(format!("session-{session_id}.log"))
    }

    /// Start the app `command` of a session (blocking).
    pub fn start(
        &self,
        session_id: u32,
        command: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<RunnerHandle, StartError> {
        let log = self.log_path(session_id);
        let (pid, start_time) = self.spawn(Role::App, session_id, command, env, &log)?;
        Ok(RunnerHandle::Process { pid, start_time })
    }

    /// Start `command` as `role` in a process group of its own, output appended to `log`
    /// (blocking). Returns its (pid, start time) once it runs; a command that ended at once is an
    /// error.
    pub fn spawn(
        &self,
        role: Role,
        session_id: u32,
        command: &[String],
        env: &BTreeMap<String, String>,
        log: &Path,
    ) -> Result<(i32, u64), StartError> {
        let (program, args) = command.split_first().ok_or(StartError::EmptyCommand)?;
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|source| StartError::CreateDir { path: self.log_dir.clone(), source })?;
        let log = log.to_owned();
        rotate(&log, LOG_MAX_BYTES);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| StartError::OpenLog { path: log.clone(), source })?;
        let err = out.try_clone().map_err(StartError::CloneLog)?;
        let mut command = Command::new(program);
        if role == Role::Capture {
            // A capture lives as long as the stream thread that started it, and never outlives a
            // host that dies (PR_SET_PDEATHSIG fires when the spawning thread ends).
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .args(args)
            .envs(env)
            .env(SESSION_ENV, session_id.to_string())
            .env(OWNER_ENV, &self.owner)
            .env(ROLE_ENV, role.as_str())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| StartError::Spawn { program: program.clone(), source })?;
        let pid = child.id() as i32;
        let Some(start_time) = start_time(pid) else {
            // It already ended: reap it and say so.
            let mut child = child;
            let status = child.wait().ok();
            return Err(StartError::ExitedAtOnce { program: program.clone(), status, log });
        };
        self.children().insert(pid, child);
        tracing::info!(session = session_id, pid, role = role.as_str(), program = %program, log = %log.display(), "process started");
        Ok((pid, start_time))
    }

    /// Is the process of this handle still the same one, and running? (blocking; reaps our own).
    pub fn alive(&self, pid: i32, start: u64) -> bool {
        {
            let mut children = self.children();
            if let Some(child) = children.get_mut(&pid)
                && !matches!(child.try_wait(), Ok(None))
            {
                children.remove(&pid);
                return false;
            }
        }
        start_time(pid) == Some(start)
    }

    /// SIGTERM to the group, SIGKILL after `timeout` (blocking).
    pub fn stop(&self, pid: i32, start: u64, timeout: Duration) -> Result<(), StopError> {
        if !self.alive(pid, start) {
            return Ok(());
        }
        signal_group(pid, libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.alive(pid, start) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(pid, "app did not stop within {} ms of SIGTERM: SIGKILL", timeout.as_millis());
        if self.alive(pid, start) {
            signal_group(pid, libc::SIGKILL);
        }
        for _ in 0..250 {
            if !self.alive(pid, start) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(StopError::SurvivedKill { pid })
    }

    /// Rotate logs of running sessions that grew past the limit (blocking).
    pub fn rotate_logs(&self, session_ids: &[u32]) {
        for id in session_ids {
            rotate_in_place(&self.log_path(*id), LOG_MAX_BYTES);
        }
    }
}

/// Run a short helper command (pactl, xrandr) to its end, killed after `limit` (blocking). Its
/// stdout on success; on failure what it said on stderr.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Result<String, HelperError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let io = |source| HelperError::Io { program: program.clone(), source };
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(io)?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HelperError::TimedOut { program, limit });
            }
            Err(e) => return Err(io(e)),
        }
    }
    // Its output is small (a pipe's buffer holds it until it exits).
    let out = child.wait_with_output().map_err(io)?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(HelperError::Failed { program, status: out.status, stderr: text(&out.stderr) })
    }
}

fn signal_group(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals the process group; no memory is involved.
    let r = unsafe { libc::kill(-pid, sig) };
    if r != 0 {
        tracing::debug!(pid, sig, error = %std::io::Error::last_os_error(), "signalling the app's process group");
    }
}

/// Before a start: a log over `max` becomes `<log>.1`.
fn rotate(log: &Path, max: u64) {
    if std::fs::metadata(log).is_ok_and(|m| m.len() > max) {
        let _ = std::fs::rename(log, log.with_extension("log.1"));
    }
}

/// While the app runs (it appends with O_APPEND): copy to `<log>.1`, then truncate.
fn rotate_in_place(log: &Path, max: u64) {
    if std::fs::metadata(log).is_ok_and(|m| m.len() > max) {
        if let Err(e) = std::fs::copy(log, log.with_extension("log.1")) {
            tracing::warn!(log = %log.display(), error = %e, "could not rotate the app log");
            return;
        }
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(log) {
            let _ = f.set_len(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_stop_and_no_reused_pid_is_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let r = ProcessRunner::new(dir.path().to_owned(), dir.path().display().to_string());
        let env = BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]);
        let cmd = ["sh", "-c", "trap '' TERM; echo $GREETING $WOLF_SESSION_ID; sleep 30 & wait"].map(String::from);
        let RunnerHandle::Process { pid, start_time } = r.start(9, &cmd, &env).unwrap() else { panic!() };
        assert!(r.alive(pid, start_time));
        assert!(!r.alive(pid, start_time + 1), "another start time is another process");
        // Once it has written its line its trap is set, so it ignores SIGTERM (bounded wait).
        for _ in 0..500 {
            if std::fs::read_to_string(r.log_path(9)).is_ok_and(|l| l.contains("hello")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Past its exec (it wrote its line), it is found by its owner env.
        let found = Owned { pid, start_time, session: "9".into(), role: Role::App };
        assert_eq!(r.owned(), vec![found], "found by its owner env");
        // SIGKILL after the timeout ends the whole group.
        r.stop(pid, start_time, Duration::from_millis(200)).unwrap();
        assert!(!r.alive(pid, start_time));
        let log = std::fs::read_to_string(r.log_path(9)).unwrap();
        assert_eq!(log.trim(), "hello 9");
        let e = r.start(10, &["/nonexistent/app".to_owned()], &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/app"), "{e}");
    }

    #[test]
    fn a_helper_command_fails_by_kind() {
        let limit = Duration::from_secs(5);
        assert_eq!(run_bounded(Command::new("sh").args(["-c", "echo ok"]), limit).unwrap(), "ok");
        let e = run_bounded(&mut Command::new("/nonexistent/pactl"), limit).unwrap_err();
        assert!(matches!(&e, HelperError::Io { program, .. } if program == "/nonexistent/pactl"), "{e}");
        let e = run_bounded(Command::new("sh").args(["-c", "echo no >&2; exit 3"]), limit).unwrap_err();
        assert!(
            matches!(&e, HelperError::Failed { status, stderr, .. } if status.code() == Some(3) && stderr == "no"),
            "{e}"
        );
        let e = run_bounded(Command::new("sleep").arg("5"), Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, HelperError::TimedOut { .. }), "{e}");
        assert_eq!(e.to_string(), "sleep did not finish within 50 ms");
    }

    #[test]
    fn logs_rotate_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("session-1.log");
        std::fs::write(&log, vec![b'x'; 100]).unwrap();
        rotate_in_place(&log, 50);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(std::fs::metadata(log.with_extension("log.1")).unwrap().len(), 100);
    }
}
