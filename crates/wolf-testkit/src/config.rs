//! One way for tests to write a host config: build a `Config` and serialise it, never TOML by hand.

use std::path::{Path, PathBuf};

use wolf_rs::config::{App, AppAudio, AppDisplay, AudioKind, Config, DisplayKind, Runner, RunnerKind};

/// A host config under construction; `toml()` is what the host reads.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

impl Default for ConfigBuilder {
    /// Every default, as a fresh install has (the container tests' hosts).
    fn default() -> Self {
        ConfigBuilder { config: Config::default() }
    }
}

impl ConfigBuilder {
    /// A host for one test on loopback: every port 0 (the OS picks), mDNS off, a fixed MAC, no
    /// fixed PIN.
    pub fn loopback() -> Self {
        let mut c = Config { hostname: "test-host".into(), bind_address: "127.0.0.1".into(), ..Config::default() };
        c.network.local_ip = "127.0.0.1".into();
        c.network.mac = "02:00:00:aa:bb:cc".into();
        c.ports = wolf_rs::config::Ports {
            http: 0,
            https: 0,
            rtsp: 0,
            rtsp_sessions: wolf_rs::config::PortRange::Any,
            stream_sessions: wolf_rs::config::PortRange::Any,
            ..wolf_rs::config::Ports::default()
        };
        c.mdns.enabled = false;
        c.health.port = 0;
        // The test pattern alone: tests add the apps they launch.
        c.apps = vec![App::test_pattern()];
        ConfigBuilder { config: c }
    }

    /// The fixed pairing PIN (`pairing.pin`).
    pub fn pin(self, pin: &str) -> Self {
        self.with(|c| c.pairing.pin = vec![pin.to_owned()])
    }

    /// Watchdog thresholds in ms: `interval_ms`, `warn_after_ms`, `exit_after_ms` (0: never exits).
    pub fn watchdog(self, interval_ms: u64, warn_after_ms: u64, exit_after_ms: u64) -> Self {
        self.with(|c| c.watchdog = wolf_rs::config::Watchdog { interval_ms, warn_after_ms, exit_after_ms })
    }

    /// Any other change.
    pub fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The TOML the host reads.
    pub fn toml(&self) -> String {
        toml::to_string(&self.config).expect("a Config always serialises")
    }

    /// Write `<dir>/config.toml`; its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("create the state dir");
        let path = dir.join("config.toml");
        std::fs::write(&path, self.toml()).expect("write config.toml");
        path
    }
}

/// An app with this id, title and runner (video and audio: the default test pattern).
pub fn app(id: u32, title: &str, runner: Runner) -> App {
    App { id, title: title.into(), runner, ..App::default() }
}

/// An app with its own virtual display and audio sink per session, running `script` (`sh -c`).
pub fn desktop_app(id: u32, title: &str, script: &str) -> App {
    App {
        display: AppDisplay { kind: DisplayKind::Virtual, ..AppDisplay::default() },
        audio: AppAudio { kind: AudioKind::Sink },
        ..app(id, title, process_runner(&["sh", "-c", script]))
    }
}

/// A process runner for `command` (argv).
pub fn process_runner(command: &[&str]) -> Runner {
    Runner { kind: RunnerKind::Process, command: command.iter().map(|s| s.to_string()).collect(), ..Runner::default() }
}

/// A docker runner for `image`.
pub fn docker_runner(image: &str) -> Runner {
    Runner { kind: RunnerKind::Docker, image: image.into(), ..Runner::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wolf_rs::config::Env;

    #[test]
    fn what_it_writes_the_host_reads_back_unchanged() {
        for b in [
            ConfigBuilder::default(),
            ConfigBuilder::loopback().pin("4321").watchdog(500, 1000, 0),
            ConfigBuilder::loopback().with(|c| c.apps.push(app(2, "sleep", process_runner(&["sleep", "60"])))),
        ] {
            let back = Config::parse(&b.toml(), &Env::default()).expect("valid");
            assert_eq!(&back, b.config());
        }
    }
}
