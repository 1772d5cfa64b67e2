//! Session audio: one PulseAudio server owned by the host (started on first need, its socket in
//! the state dir, adopted across restarts) and a null sink per session that has one. The app plays
//! into its sink (`PULSE_SERVER`, `PULSE_SINK`); the audio stream captures the sink's monitor.
//! Everything here blocks (it runs `pactl`): call it from the blocking pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::process::{HelperError, ProcessRunner, Role, StartError, run_bounded};
use crate::config::Desktop;

/// How long one `pactl` call may take.
const PACTL_LIMIT: Duration = Duration::from_secs(5);
/// How long the server has to answer after it was started.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// Every sink the host makes is named with this, then the session id.
pub const SINK_PREFIX: &str = "wolf_rs_session_";

/// Why the audio server or a sink could not be had.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("creating {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Private { path: PathBuf, source: std::io::Error },
    #[error("the audio socket path {} is too long for a unix socket; use a shorter state dir", path.display())]
    SocketPathTooLong { path: PathBuf },
    #[error("the audio server did not start: {0}")]
    ServerStart(#[source] StartError),
    #[error("the audio server did not start (see {}); is PulseAudio installed?", log.display())]
    ServerNotReady { log: PathBuf },
    #[error("creating the sink {sink}: {source}")]
    CreateSink { sink: String, source: HelperError },
    #[error("listing the audio server's modules: {0}")]
    ListModules(#[source] HelperError),
    #[error("removing the sink {sink}: {source}")]
    RemoveSink { sink: String, source: HelperError },
}

/// A session's sink, as persisted with the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkHandle {
    pub name: String,
    pub channels: u8,
}

impl SinkHandle {
    /// The source the stream captures.
    pub fn monitor(&self) -> String {
        format!("{}.monitor", self.name)
    }
}

/// PulseAudio's names for the channels of 2, 6 (5.1) and 8 (7.1) channel audio, in the order
/// GameStream sends them.
fn channel_map(channels: u8) -> &'static str {
    match channels {
        6 => "front-left,front-right,front-center,lfe,rear-left,rear-right",
        8 => "front-left,front-right,front-center,lfe,rear-left,rear-right,side-left,side-right",
        _ => "front-left,front-right",
    }
}

pub struct Pulse {
    process: Arc<ProcessRunner>,
    /// `<state dir>/pulse`: the server's home, runtime dir and socket.
    dir: PathBuf,
    command: Vec<String>,
    /// Held while the server is checked or started, so two launches start one server.
    starting: Mutex<()>,
}

impl Pulse {
    pub fn new(process: Arc<ProcessRunner>, state_dir: &Path, config: &Desktop) -> Pulse {
        Pulse { process, dir: state_dir.join("pulse"), command: config.pulseaudio.clone(), starting: Mutex::new(()) }
    }

    /// The folder holding the server's socket alone (a container mounts the folder, so a restarted
    /// server's new socket is seen there too).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("socket")
    }

    /// The server's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.socket_dir().join("native")
    }

    /// `PULSE_SERVER` for a process on this machine.
    pub fn server(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    fn pactl(&self, args: &[&str]) -> Result<String, HelperError> {
        let mut c = Command::new("pactl");
        c.arg(format!("--server={}", self.server())).args(args).env("HOME", &self.dir);
        run_bounded(&mut c, PACTL_LIMIT)
    }

    /// Does the server answer?
    pub fn answers(&self) -> bool {
        self.socket().exists() && self.pactl(&["info"]).is_ok()
    }

    /// Make sure the server runs: adopt one that answers on our socket, else start it.
    pub fn ensure(&self) -> Result<(), AudioError> {
        let _one = self.starting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.answers() {
            return Ok(());
        }
        // One of ours that does not answer is wedged: replace it.
        for p in self.process.owned().into_iter().filter(|p| p.role == Role::Audio) {
            tracing::warn!(pid = p.pid, "the audio server does not answer: restarting it");
            let _ = self.process.stop(p.pid, p.start_time, Duration::from_secs(2));
        }
        let run = self.dir.join("run");
        for d in [&self.dir, &run, &self.socket_dir()] {
            std::fs::create_dir_all(d).map_err(|source| AudioError::CreateDir { path: d.clone(), source })?;
            set_private(d)?;
        }
        let _ = std::fs::remove_file(self.socket());
        let socket = self.socket();
        if socket.as_os_str().len() >= 100 {
            return Err(AudioError::SocketPathTooLong { path: socket });
        }
        let mut command = self.command.clone();
        command.extend(
            [
                "-n",
                "--daemonize=no",
                "--system=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disable-shm=yes",
                "--log-target=stderr",
            ]
            .map(String::from),
        );
        command.push(format!("--load=module-native-protocol-unix socket={} auth-anonymous=1", socket.display()));
        let env = BTreeMap::from([
            ("HOME".to_owned(), self.dir.display().to_string()),
            ("XDG_RUNTIME_DIR".to_owned(), run.display().to_string()),
        ]);
        let log = self.process.log_dir().join("pulseaudio.log");
        let (pid, start_time) =
            self.process.spawn(Role::Audio, 0, &command, &env, &log).map_err(AudioError::ServerStart)?;
        let deadline = Instant::now() + READY_WITHIN;
        while !self.answers() {
            if !self.process.alive(pid, start_time) || Instant::now() > deadline {
                let _ = self.process.stop(pid, start_time, Duration::from_secs(2));
                return Err(AudioError::ServerNotReady { log });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(pid, socket = %socket.display(), "audio server started");
        Ok(())
    }

    /// A null sink for `session_id` with `channels` channels at 48 kHz.
    pub fn create_sink(&self, session_id: u32, channels: u8) -> Result<SinkHandle, AudioError> {
        self.ensure()?;
        let h = SinkHandle { name: format!("{SINK_PREFIX}{session_id}"), channels };
        // A sink of the same name left by an earlier host run goes first.
        self.remove_sink(&h)?;
        let args = [
            "load-module",
            "module-null-sink",
            &format!("sink_name={}", h.name),
            "rate=48000",
            &format!("channels={channels}"),
            &format!("channel_map={}", channel_map(channels)),
        ];
        self.pactl(&args).map_err(|source| AudioError::CreateSink { sink: h.name.clone(), source })?;
        tracing::info!(session = session_id, sink = %h.name, channels, "audio sink created");
        Ok(h)
    }

    /// The host's sinks: (module index, sink name).
    pub fn sinks(&self) -> Result<Vec<(u32, String)>, AudioError> {
        let list = self.pactl(&["list", "short", "modules"]).map_err(AudioError::ListModules)?;
        Ok(parse_sink_modules(&list))
    }

    /// Is the sink there? `None` when the server cannot be asked.
    pub fn sink_alive(&self, h: &SinkHandle) -> Option<bool> {
        if !self.socket().exists() {
            return Some(false);
        }
        let sinks = self.sinks().ok()?;
        Some(sinks.iter().any(|(_, name)| *name == h.name))
    }

    /// Unload the sink's module; a sink (or server) already gone is fine.
    pub fn remove_sink(&self, h: &SinkHandle) -> Result<(), AudioError> {
        if !self.socket().exists() {
            return Ok(());
        }
        for (module, name) in self.sinks()? {
            if name == h.name {
                self.pactl(&["unload-module", &module.to_string()])
                    .map_err(|source| AudioError::RemoveSink { sink: name.clone(), source })?;
                tracing::info!(sink = %name, "audio sink removed");
            }
        }
        Ok(())
    }

    /// Stop the server (shutdown with no session left to adopt it).
    pub fn stop_server(&self, timeout: Duration) {
        for p in self.process.owned().into_iter().filter(|p| p.role == Role::Audio) {
            if let Err(e) = self.process.stop(p.pid, p.start_time, timeout) {
                tracing::warn!(error = %e, "stopping the audio server");
            }
        }
    }
}

fn set_private(dir: &Path) -> Result<(), AudioError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|source| AudioError::Private { path: dir.to_owned(), source })
}

/// The host's null sinks in `pactl list short modules` output: `INDEX\tNAME\tARGUMENTS\t...`.
fn parse_sink_modules(list: &str) -> Vec<(u32, String)> {
    list.lines()
        .filter_map(|line| {
            let mut cols = line.split('\t');
            let index = cols.next()?.trim().parse().ok()?;
            if cols.next()? != "module-null-sink" {
                return None;
            }
            let name = cols.next()?.split_whitespace().find_map(|a| a.strip_prefix("sink_name="))?;
            name.starts_with(SINK_PREFIX).then(|| (index, name.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_null_sinks_are_listed() {
        let list = "0\tmodule-native-protocol-unix\tsocket=/s/native auth-anonymous=1\t\n\
                    1\tmodule-null-sink\tsink_name=wolf_rs_session_3 rate=48000 channels=2\t\n\
                    2\tmodule-null-sink\tsink_name=someone_else\t\n\
                    nonsense\n\
                    17\tmodule-null-sink\trate=48000 sink_name=wolf_rs_session_12\t\n";
        assert_eq!(
            parse_sink_modules(list),
            vec![(1, "wolf_rs_session_3".to_owned()), (17, "wolf_rs_session_12".to_owned())]
        );
    }

    #[test]
    fn channel_maps_have_one_name_per_channel() {
        for c in [2u8, 6, 8] {
            assert_eq!(channel_map(c).split(',').count(), c as usize);
        }
    }
}
