//! `wolf-rs serve`: the supervisor. It runs the control plane (`wolf-rs control-plane`, the host
//! itself) as its child and starts it again when it exits (a crash, the watchdog's exit 86, a kill),
//! so that healing a hung host by restarting it is not a restart of the container or the unit. It
//! is small on purpose: no async runtime and no threads, one blocking loop on `sigtimedwait`, so
//! nothing in it can hang. What it does:
//! - restarts after an exponential backoff ([`Restarts`]); N exits within a window is a crash loop:
//!   a longer pause, logged and recorded in the lifecycle log, and never a give-up;
//! - `SIGHUP` (`wolf-rs restart`, after an upgrade of the binary): the control plane is asked to
//!   restart in place (it keeps every session for the next one to adopt) and starts again at once;
//! - `SIGTERM`/`SIGINT`: forwarded; it waits for the control plane's drain and exits with its code;
//! - it reaps every orphan (as PID 1 in the image, or as the subreaper of what it started);
//! - its pid is in `<state>/supervisor.pid` for `wolf-rs restart`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::SupervisorConfig;
use crate::error::exit;
use crate::lifecycle::{Appender, Entry};

/// The restart policy's state: when the next start may come.
#[derive(Debug)]
pub struct Restarts {
    policy: SupervisorConfig,
    /// Exits inside the crash-loop window.
    recent: VecDeque<Instant>,
    backoff: Duration,
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    pub wait: Duration,
    /// It is the crash-loop pause.
    pub crash_loop: bool,
}

impl Restarts {
    pub fn new(policy: SupervisorConfig) -> Restarts {
        let backoff = Duration::from_millis(policy.restart_backoff_ms);
        Restarts { policy, recent: VecDeque::new(), backoff }
    }

    /// The control plane exited at `now` after running `ran`: how long until it starts again. A
    /// run that lasted `stable_after_s` resets the backoff.
    pub fn exited(&mut self, now: Instant, ran: Duration) -> Delay {
        let p = &self.policy;
        let first = Duration::from_millis(p.restart_backoff_ms);
        if ran >= Duration::from_secs(p.stable_after_s) {
            self.backoff = first;
        }
        let window = Duration::from_secs(p.crash_loop_window_s);
        self.recent.retain(|t| now.saturating_duration_since(*t) < window);
        self.recent.push_back(now);
        if self.recent.len() >= p.crash_loop_exits.max(1) {
            self.recent.clear();
            return Delay { wait: Duration::from_secs(p.crash_loop_pause_s), crash_loop: true };
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_millis(p.max_backoff_ms).max(first));
        Delay { wait, crash_loop: false }
    }
}

/// Set for the control plane the supervisor runs: the supervisor records its exits.
pub const SUPERVISED_ENV: &str = "WOLF_RS_SUPERVISED";
/// Told to each control plane it starts: `<restarts> <crash-loop pauses>` so far (its metrics).
pub const COUNTS_ENV: &str = "WOLF_RS_SUPERVISOR_COUNTS";

/// The supervisor's counts, as the control plane reads them from its environment.
pub fn counts_from_env() -> Option<(i64, i64)> {
    let v = std::env::var(COUNTS_ENV).ok()?;
    let (a, b) = v.split_once(' ')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `<state>/supervisor.pid`.
pub fn pid_file(state_dir: &Path) -> PathBuf {
    state_dir.join("supervisor.pid")
}

/// What the supervisor starts: this binary with `args` (the global options, then `control-plane`).
pub struct Child {
    pub program: PathBuf,
    pub args: Vec<std::ffi::OsString>,
}

/// The signals the loop waits for, blocked so that they queue for `sigtimedwait`.
fn blocked_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data filled by sigemptyset/sigaddset; pthread_sigmask changes only
    // this (the only) thread's mask. A child inherits it: `spawn` clears it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// The next blocked signal within `wait`, if one comes.
fn next_signal(set: &libc::sigset_t, wait: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: wait.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
    };
    // SAFETY: a valid set and timespec; siginfo is written by the kernel.
    let n = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::sigtimedwait(set, &mut info, &ts)
    };
    (n > 0).then_some(n)
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(i32),
}

/// Reap every child that has ended; how `watched` ended, if it did.
fn reap(watched: i32) -> Option<Ended> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on any child; status is ours.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == watched {
            found = Some(if libc::WIFEXITED(status) {
                Ended::Code(libc::WEXITSTATUS(status))
            } else {
                Ended::Signal(libc::WTERMSIG(status))
            });
        }
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, sig) };
}

/// Start the control plane with no signal blocked (the supervisor's mask is inherited
/// otherwise); it is killed if the supervisor dies (it is the supervisor's to run).
fn spawn(child: &Child, counts: (u64, u64)) -> std::io::Result<i32> {
    let mut cmd = std::process::Command::new(&child.program);
    cmd.args(&child.args).env(SUPERVISED_ENV, "1").env(COUNTS_ENV, format!("{} {}", counts.0, counts.1));
    // SAFETY: sigemptyset, pthread_sigmask and prctl are async-signal-safe and touch only this
    // (forked, single-threaded) process before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let c = cmd.spawn()?;
    // Reaped by `reap`, never through std's handle.
    i32::try_from(c.id()).map_err(std::io::Error::other)
}

/// Run the supervisor until SIGTERM/SIGINT (or a first start that fails on its config); the exit
/// status to end with. Blocking; no runtime.
pub fn run(child: Child, state_dir: &Path, policy: SupervisorConfig) -> u8 {
    let signals = blocked_signals();
    // SAFETY: marks this process the reaper of its orphaned descendants; no memory involved.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let log = Appender::new(crate::lifecycle::path(state_dir));
    let pid_path = pid_file(state_dir);
    if let Err(e) = crate::state::atomic::write_atomic(&pid_path, format!("{}\n", std::process::id()).as_bytes(), 0o644)
    {
        tracing::warn!(file = %pid_path.display(), error = %e, "supervisor: pid file not written; wolf-rs restart will not find it");
    }
    log.record(Entry::SupervisorStart);
    let grace = Duration::from_millis(policy.stop_grace_ms);
    let mut restarts = Restarts::new(policy);
    let mut first = true;
    let mut counts = (0u64, 0u64);
    let code = loop {
        let pid = match spawn(&child, counts) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "supervisor: the control plane could not be started");
                break exit::FAILURE;
            }
        };
        tracing::info!(pid, "supervisor: control plane started");
        let started = Instant::now();
        let run = watch(pid, &signals, grace);
        let ran = started.elapsed();
        let (code, sig) = match run.ended {
            Ended::Code(c) => (Some(c), None),
            Ended::Signal(s) => (None, Some(s)),
        };
        // The watchdog's marker says what hung (the next start reads and clears it).
        let hung = (code == Some(crate::watchdog::EXIT_CODE))
            .then(|| std::fs::read_to_string(state_dir.join(crate::watchdog::MARKER_FILE)).ok())
            .flatten()
            .and_then(|line| crate::lifecycle::hung_step(&line));
        log.record_for(pid, Entry::ControlPlaneExit { code, hung, found_at_start: false });
        tracing::warn!(pid, ?code, signal = ?sig, ran_ms = ran.as_millis() as u64, "supervisor: control plane exited");
        if run.stop {
            break code.and_then(|c| u8::try_from(c).ok()).unwrap_or(exit::FAILURE);
        }
        if first && code == Some(i32::from(exit::CONFIG)) {
            // It never ran: a broken config is the operator's to fix, not a loop's.
            break exit::CONFIG;
        }
        first = false;
        let delay = if run.restart {
            Delay { wait: Duration::ZERO, crash_loop: false }
        } else {
            restarts.exited(Instant::now(), ran)
        };
        counts.0 += 1;
        counts.1 += u64::from(delay.crash_loop);
        log.record(Entry::ControlPlaneRestart {
            after_ms: delay.wait.as_millis() as u64,
            crash_loop: delay.crash_loop,
            requested: run.restart,
        });
        if delay.crash_loop {
            tracing::error!(
                pause_s = delay.wait.as_secs(),
                "supervisor: the control plane keeps exiting; pausing before the next start"
            );
        }
        if pause(&signals, delay.wait) {
            break exit::OK;
        }
    };
    let _ = std::fs::remove_file(&pid_path);
    code
}

/// How one run of the control plane ended.
struct Run {
    ended: Ended,
    /// SIGTERM/SIGINT came: the supervisor stops too.
    stop: bool,
    /// SIGHUP came: start the next one at once.
    restart: bool,
}

/// Wait for the control plane `pid` to end, passing signals on; after a stop, SIGKILL once
/// `grace` has passed.
fn watch(pid: i32, signals: &libc::sigset_t, grace: Duration) -> Run {
    let (mut stop, mut restart, mut kill_at) = (false, false, None::<Instant>);
    loop {
        match next_signal(signals, Duration::from_millis(500)) {
            Some(libc::SIGTERM) | Some(libc::SIGINT) if !stop => {
                tracing::info!("supervisor: stopping; the control plane drains");
                stop = true;
                kill_at = Some(Instant::now() + grace);
                signal(pid, libc::SIGTERM);
            }
            Some(libc::SIGHUP) if !stop => {
                tracing::info!("supervisor: restart asked; the control plane restarts in place");
                restart = true;
                signal(pid, libc::SIGHUP);
            }
            _ => {}
        }
        if let Some(ended) = reap(pid) {
            return Run { ended, stop, restart };
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            tracing::error!("supervisor: the control plane did not stop in time; killing it");
            signal(pid, libc::SIGKILL);
            kill_at = None;
        }
    }
}

/// Wait `wait` before the next start, reaping orphans; `true` when a stop came meanwhile.
fn pause(signals: &libc::sigset_t, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match next_signal(signals, left.min(Duration::from_millis(500))) {
            Some(libc::SIGTERM) | Some(libc::SIGINT) => return true,
            Some(libc::SIGHUP) => return false,
            _ => {
                reap(0);
            }
        }
    }
}

/// `wolf-rs restart`: ask the supervisor of `state_dir` to restart the control plane in place.
pub fn request_restart(state_dir: &Path) -> Result<u32, RestartError> {
    let path = pid_file(state_dir);
    let text = std::fs::read_to_string(&path).map_err(|source| RestartError::NoPidFile { path, source })?;
    let pid: i32 = text.trim().parse().map_err(|_| RestartError::BadPid(text.trim().to_owned()))?;
    // SAFETY: kill(2) with a pid read from our own file.
    if pid < 1 || unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(RestartError::Gone(pid));
    }
    Ok(pid.unsigned_abs())
}

#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("no supervisor runs for this state directory ({}: {source})", .path.display())]
    NoPidFile { path: PathBuf, source: std::io::Error },
    #[error("the supervisor's pid file holds {0:?}, not a pid")]
    BadPid(String),
    #[error("the supervisor (pid {0}) is not running")]
    Gone(i32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SupervisorConfig {
        SupervisorConfig {
            restart_backoff_ms: 100,
            max_backoff_ms: 800,
            stable_after_s: 60,
            crash_loop_exits: 5,
            crash_loop_window_s: 120,
            crash_loop_pause_s: 300,
            stop_grace_ms: 1000,
        }
    }

    #[test]
    fn the_backoff_doubles_to_its_cap_and_a_stable_run_resets_it() {
        let mut r = Restarts::new(SupervisorConfig { crash_loop_exits: 100, ..policy() });
        let t0 = Instant::now();
        let waits: Vec<u64> =
            (0..6).map(|i| r.exited(t0 + Duration::from_secs(i), Duration::ZERO).wait.as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 800, 800]);
        let after_stable = r.exited(t0 + Duration::from_secs(10), Duration::from_secs(61));
        assert_eq!(after_stable, Delay { wait: Duration::from_millis(100), crash_loop: false });
    }

    #[test]
    fn exits_inside_the_window_are_a_crash_loop_and_pause_then_start_over() {
        let mut r = Restarts::new(policy());
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(!r.exited(t0 + Duration::from_secs(i), Duration::ZERO).crash_loop);
        }
        let fifth = r.exited(t0 + Duration::from_secs(4), Duration::ZERO);
        assert_eq!(fifth, Delay { wait: Duration::from_secs(300), crash_loop: true });
        // After the pause the count starts over; it never gives up.
        assert!(!r.exited(t0 + Duration::from_secs(305), Duration::ZERO).crash_loop);
        // Exits spread wider than the window are no loop.
        let mut spread = Restarts::new(policy());
        for i in 0..20 {
            assert!(!spread.exited(t0 + Duration::from_secs(i * 31), Duration::ZERO).crash_loop, "exit {i}");
        }
    }
}
