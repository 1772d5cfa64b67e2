//! A host as a separate `wolf-rs serve` process (for kill -9, exit codes, restarts): the client
//! crate's one `HostProcess`, with the ports its config gave it and the waits tests need.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use wolf_client::host::HostProcess;
use wolf_client::{ClientIdentity, GameStreamClient, Reply, plain_request};

use crate::config::ConfigBuilder;

pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback ports: all held open while they are picked, so the OS cannot hand
/// out one twice (a config with two equal ports is refused).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> =
        (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port")).collect();
    std::array::from_fn(|i| held[i].local_addr().expect("bound").port())
}

/// A host process with the ports from its config; killed on drop (by `HostProcess`).
pub struct Proc {
    pub process: HostProcess,
    /// After the host: what it started goes too.
    pub owned: crate::KillOwned,
    pub http: u16,
    pub https: u16,
    pub health: u16,
}

impl Deref for Proc {
    type Target = HostProcess;
    fn deref(&self) -> &HostProcess {
        &self.process
    }
}

impl DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut HostProcess {
        &mut self.process
    }
}

/// Start `wolf-rs serve` on `state`. The first start there writes `config` with free loopback
/// ports where it has 0 for HTTP, HTTPS and health; later starts reuse that file, so clients keep
/// their addresses across restarts.
pub fn spawn(state: &Path, config: ConfigBuilder) -> Proc {
    spawn_env(state, config, &[])
}

/// As [`spawn`], with these environment variables set for the host.
pub fn spawn_env(state: &Path, config: ConfigBuilder, env: &[(&str, &str)]) -> Proc {
    spawn_with(state, config, env, HostProcess::spawn)
}

/// As [`spawn`], under the supervisor (`wolf-rs serve`): the process is the supervisor's.
pub fn spawn_supervised(state: &Path, config: ConfigBuilder) -> Proc {
    spawn_with(state, config, &[], HostProcess::spawn_supervised)
}

type Start = fn(&Path, &Path, &[(&str, &str)]) -> wolf_client::error::Result<HostProcess>;

fn spawn_with(state: &Path, config: ConfigBuilder, env: &[(&str, &str)], start: Start) -> Proc {
    std::fs::create_dir_all(state).unwrap();
    let cfg_path = state.join("config.toml");
    if !cfg_path.exists() {
        let [http, https, health] = free_ports::<3>();
        let config = config.with(|c| {
            let pick = |p: u16, free: u16| if p == 0 { free } else { p };
            c.ports.http = pick(c.ports.http, http);
            c.ports.https = pick(c.ports.https, https);
            c.health.port = pick(c.health.port, health);
        });
        config.write(state);
    }
    let cfg = wolf_rs::config::Config::load(&cfg_path, &wolf_rs::config::Env::default()).expect("test config");
    let mut all = vec![("WOLF_LOG_LEVEL", "info")];
    all.extend_from_slice(env);
    let process = start(&crate::workspace::host_bin(), state, &all).expect("start wolf-rs");
    Proc {
        process,
        owned: crate::KillOwned::new(state),
        http: cfg.ports.http,
        https: cfg.ports.https,
        health: cfg.health.port,
    }
}

impl Proc {
    pub fn health_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.health).into()
    }

    pub async fn get(&self, path: &str) -> Option<Reply> {
        let r =
            tokio::time::timeout(Duration::from_secs(5), plain_request(self.health_addr(), Method::GET, path, None));
        r.await.ok().and_then(Result::ok)
    }

    pub async fn post(&self, path: &str) -> Reply {
        plain_request(self.health_addr(), Method::POST, path, None).await.expect("health port answers")
    }

    /// Wait (bounded: about a minute, for a start on a loaded machine) until /health reports
    /// `want`; returns the body.
    pub async fn health_until(&self, want: &str) -> serde_json::Value {
        for _ in 0..1200 {
            if let Some(r) = self.get("/health").await
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body)
                && v["status"] == want
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/health never became {want}; log:\n{}", self.log());
    }

    /// Wait (bounded) for the process to end.
    pub async fn exit_status(&mut self, limit: Duration) -> ExitStatus {
        match self.process.wait_exit(limit).await {
            Some(s) => s,
            None => panic!("the host did not exit within {limit:?}; log:\n{}", self.log()),
        }
    }

    pub fn client(&self) -> GameStreamClient {
        GameStreamClient::new(
            ([127, 0, 0, 1], self.http).into(),
            ([127, 0, 0, 1], self.https).into(),
            Arc::new(ClientIdentity::generate().unwrap()),
        )
    }

    /// SIGKILL: no drain, no flush, as a crash.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// `wolf-rs <args>` against this host's state dir.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.process.command(args).expect("run wolf-rs")
    }

    /// The lifecycle log, as `wolf-rs events --json` prints it.
    pub fn events(&self) -> Vec<wolf_rs::lifecycle::Record> {
        let out = self.cli(&["events", "--json"]);
        assert!(out.status.success(), "wolf-rs events: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The pid of the last control plane that said it is ready.
    pub fn control_plane(&self) -> Option<u32> {
        let log = self.events();
        log.iter().rev().find(|r| r.entry == wolf_rs::lifecycle::Entry::ControlPlaneReady).map(|r| r.pid)
    }

    /// Wait until a control plane other than `old` is ready and healthy; its pid.
    pub async fn next_control_plane(&self, old: u32) -> u32 {
        let mut pid = None;
        crate::until("a new control plane is ready", || {
            pid = self.control_plane().filter(|p| *p != old);
            pid.is_some()
        })
        .await;
        self.health_until("healthy").await;
        pid.unwrap()
    }

    /// The sessions, as `wolf-rs sessions list --json` (through the API) prints them.
    pub fn sessions(&self) -> Vec<wolf_rs::sessions::SessionRecord> {
        let out = self.cli(&["sessions", "list", "--json"]);
        assert!(out.status.success(), "sessions list: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// SIGKILL to `pid` (a process of the test's own host).
pub fn kill9(pid: u32) {
    // SAFETY: kill(2) on a process the test started (or its host did).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0, "kill -9 {pid}");
}
