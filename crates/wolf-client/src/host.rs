//! A `wolf-rs serve` child process, the one way the load tool and the tests start a host: spawned on
//! a state folder (its config.toml written by the caller, or the template on first start), output
//! appended to `<state>/host.log`, waited for (bounded) until ready, killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::http::plain_request;

/// The host's log, in its state folder.
pub const LOG_NAME: &str = "host.log";

/// A running host process; SIGKILLed and reaped when dropped, so no caller leaves one behind.
pub struct HostProcess {
    pub child: Child,
    pub state: PathBuf,
    pub bin: PathBuf,
}

impl HostProcess {
    /// Start the host's control plane alone, `bin --state-dir state control-plane` (no supervisor
    /// restarts it), with `env` set, stdin closed, stdout and stderr appended to `<state>/host.log`.
    /// Does not wait: see [`HostProcess::wait_ready`].
    pub fn spawn(bin: &Path, state: &Path, env: &[(&str, &str)]) -> Result<HostProcess> {
        HostProcess::spawn_as(bin, state, env, "control-plane")
    }

    /// As [`HostProcess::spawn`], with the supervisor: `bin --state-dir state serve`.
    pub fn spawn_supervised(bin: &Path, state: &Path, env: &[(&str, &str)]) -> Result<HostProcess> {
        HostProcess::spawn_as(bin, state, env, "serve")
    }

    fn spawn_as(bin: &Path, state: &Path, env: &[(&str, &str)], command: &str) -> Result<HostProcess> {
        std::fs::create_dir_all(state).or_err(ErrorKind::Io, || format!("creating {}", state.display()))?;
        let log_path = state.join(LOG_NAME);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .or_err(ErrorKind::Io, || format!("opening {}", log_path.display()))?;
        let log2 = log.try_clone().or_err(ErrorKind::Io, || "the host log")?;
        let child = Command::new(bin)
            .arg("--state-dir")
            .arg(state)
            .arg(command)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .or_err(ErrorKind::Io, || format!("starting {} {command}", bin.display()))?;
        Ok(HostProcess { child, state: state.to_owned(), bin: bin.to_owned() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.join(LOG_NAME)).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait until GET /readyz on `health` answers 200. Fails with the log's tail when the process
    /// exits first or `limit` passes.
    pub async fn wait_ready(&mut self, health: SocketAddr, limit: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Err(Error::new(ErrorKind::Io, format!("the host exited ({status}):\n{}", self.log_tail(20))));
            }
            if started.elapsed() > limit {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("the host was not ready within {} s:\n{}", limit.as_secs(), self.log_tail(20)),
                ));
            }
            let ready =
                tokio::time::timeout(Duration::from_secs(2), plain_request(health, Method::GET, "/readyz", None));
            if let Ok(Ok(r)) = ready.await
                && r.status == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait (bounded) for the process to end by itself.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// SIGTERM (the host drains and stops what it started, as configured), SIGKILL after `limit`.
    pub fn terminate(&mut self, limit: Duration) {
        if self.exited().is_none() {
            // SAFETY: kill(2) on our own child; no memory is involved.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let started = Instant::now();
            while self.exited().is_none() && started.elapsed() < limit {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// SIGKILL and reap: no drain, no flush, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `bin --state-dir state <args>` (the host's other commands) against this host; its output.
    pub fn command(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(&self.bin).arg("--state-dir").arg(&self.state).args(args).output()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
