//! A host as a separate `wolf-rs serve` process (for kill -9, exit codes, restarts).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use wolf_rs::client::{ClientIdentity, GameStreamClient, Reply, plain_request};

const BIN: &str = env!("CARGO_BIN_EXE_wolf-rs");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A host process; killed on every path so no test leaves one behind.
pub struct Proc {
    pub child: Child,
    pub state: PathBuf,
    pub http: u16,
    pub https: u16,
    pub health: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(extra: &str, http: u16, https: u16, health: u16) -> String {
    format!(
        "hostname = \"wd\"\nbind_address = \"127.0.0.1\"\n[network]\nlocal_ip = \"127.0.0.1\"\nmac = \"02:00:00:aa:bb:cc\"\n\
         [ports]\nhttp = {http}\nhttps = {https}\nrtsp = 0\nvideo = 0\naudio = 0\ncontrol = 0\n[mdns]\nenabled = false\n\
         [health]\nport = {health}\n[pairing]\npin = [\"4321\"]\n{extra}\n"
    )
}

/// Start `wolf-rs serve` on `state`. The first start there writes a config with free ports and
/// `extra`; later starts reuse it, so clients keep their addresses across restarts.
pub fn spawn(state: &Path, extra: &str) -> Proc {
    std::fs::create_dir_all(state).unwrap();
    let cfg_path = state.join("config.toml");
    if !cfg_path.exists() {
        std::fs::write(&cfg_path, config(extra, free_port(), free_port(), free_port())).unwrap();
    }
    let cfg = wolf_rs::config::Config::load(&cfg_path, &wolf_rs::config::Env::default()).expect("test config");
    let (http, https, health) = (cfg.ports.http, cfg.ports.https, cfg.health.port);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(state.join("host.log")).unwrap();
    let child = Command::new(BIN)
        .args(["--state-dir", state.to_str().unwrap(), "serve"])
        .env("WOLF_LOG_LEVEL", "info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start wolf-rs");
    Proc { child, state: state.to_owned(), http, https, health }
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("host.log")).unwrap_or_default()
    }

    /// Wait (bounded) until /health reports `want`; returns the body.
    pub async fn health_until(&self, want: &str) -> serde_json::Value {
        for _ in 0..400 {
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
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the host did not exit within {limit:?}; log:\n{}", self.log());
    }

    pub fn client(&self) -> GameStreamClient {
        GameStreamClient::new(
            ([127, 0, 0, 1], self.http).into(),
            ([127, 0, 0, 1], self.https).into(),
            Arc::new(ClientIdentity::generate().unwrap()),
        )
    }
}

impl Proc {
    /// SIGKILL: no drain, no flush, as a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `wolf-rs <args>` against this host's state dir.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN).arg("--state-dir").arg(&self.state).args(args).output().expect("run wolf-rs")
    }
}
