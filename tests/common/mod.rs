//! Shared by the integration tests: a real host on loopback, port 0, in a temp state dir.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use wolf_rs::app::{self, Paths, Running};
use wolf_rs::client::{ClientIdentity, GameStreamClient};
use wolf_rs::config::Env;

/// Pair a new client with the fixed PIN 4321 and launch app 1 at 1280x720x60 with a known rikey;
/// returns the client and the RTSP address from `sessionUrl0`.
pub async fn pair_and_launch(host: &TestHost) -> (GameStreamClient, SocketAddr) {
    let mut c = host.client();
    assert_eq!(c.pair("4321").await.expect("pairing runs"), wolf_rs::client::PairOutcome::Paired);
    let q = c.url(
        "/launch",
        &[("appid", "1"), ("mode", "1280x720x60"), ("rikey", "00112233445566778899aabbccddeeff"), ("rikeyid", "1")],
    );
    let url = c.https_get(&q).await.expect("launch").field("sessionUrl0").expect("sessionUrl0");
    let rtsp = url.trim_start_matches("rtsp://").parse().expect("rtsp address");
    (c, rtsp)
}

pub struct TestHost {
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub http: SocketAddr,
    pub https: SocketAddr,
}

pub fn base_config(extra: &str) -> String {
    format!(
        "hostname = \"test-host\"\nbind_address = \"127.0.0.1\"\n\n[network]\nlocal_ip = \"127.0.0.1\"\nmac = \"02:00:00:aa:bb:cc\"\n\n\
         [ports]\nhttp = 0\nhttps = 0\nrtsp = 0\nvideo = 0\naudio = 0\ncontrol = 0\n\n[mdns]\nenabled = false\n\n\
         [health]\nport = 0\n\n[watchdog]\nexit_after_ms = 0\n\n{extra}\n"
    )
}

impl TestHost {
    pub async fn start(extra: &str) -> TestHost {
        Self::start_raw(&base_config(extra)).await
    }

    /// A host with exactly this config text.
    pub async fn start_raw(config: &str) -> TestHost {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        let mut h =
            TestHost { dir, running: None, http: ([127, 0, 0, 1], 0).into(), https: ([127, 0, 0, 1], 0).into() };
        h.boot().await;
        h
    }

    pub fn paths(&self) -> Paths {
        Paths::new(self.dir.path().to_owned(), None)
    }

    async fn boot(&mut self) {
        let running = app::start(self.paths(), Env::default()).await.expect("host starts");
        self.http = ([127, 0, 0, 1], running.http_port).into();
        self.https = ([127, 0, 0, 1], running.https_port).into();
        self.running = Some(running);
    }

    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        self.boot().await;
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub fn client(&self) -> GameStreamClient {
        self.client_with(Arc::new(ClientIdentity::generate().expect("client identity")))
    }

    pub fn client_with(&self, id: Arc<ClientIdentity>) -> GameStreamClient {
        GameStreamClient::new(self.http, self.https, id)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}
