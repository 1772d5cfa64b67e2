//! Shared by the integration tests: a real host on loopback, port 0, in a temp state dir.
#![allow(dead_code)]

pub mod docker;
pub mod host_process;
pub mod media;
pub mod namespace;

use std::net::SocketAddr;
use std::sync::Arc;

use wolf_rs::app::{self, Paths, Running};
use wolf_rs::client::{ClientIdentity, GameStreamClient, rtsp_request};
use wolf_rs::config::Env;

/// Pair a new client with the fixed PIN 4321 and launch app 1 at 1280x720x60 with a known rikey;
/// returns the client and the RTSP address from `sessionUrl0`.
pub async fn pair_and_launch(host: &TestHost) -> (GameStreamClient, SocketAddr) {
    launch_with(host.client()).await
}

/// As [`pair_and_launch`], for any host the client points at.
pub async fn launch_with(mut c: GameStreamClient) -> (GameStreamClient, SocketAddr) {
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

/// What Moonlight announces for 1280x720@60 H.264 with encrypted control.
pub const STREAM_SDP: &str = "v=0\r\no=android 0 14 IN IPv4 127.0.0.1\r\ns=NVIDIA Streaming Client\r\n\
    a=x-nv-video[0].clientViewportWd:1280 \r\na=x-nv-video[0].clientViewportHt:720 \r\n\
    a=x-nv-video[0].maxFPS:60 \r\na=x-nv-video[0].packetSize:1024 \r\na=x-nv-vqos[0].bitStreamFormat:0 \r\n\
    a=x-ml-video.configuredBitrateKbps:8000 \r\na=x-nv-vqos[0].fec.minRequiredFecPackets:2 \r\n\
    a=x-nv-general.featureFlags:167 \r\na=x-ss-general.encryptionEnabled:1 \r\na=x-nv-aqos.packetDuration:5 \r\n\
    t=0 0\r\nm=video 47998  \r\n";

/// Pair, launch, and run RTSP to PLAY; returns the client, the host's video and audio addresses
/// and the ping payload, and the control port and connect data.
pub async fn play(c: GameStreamClient) -> (GameStreamClient, SocketAddr, SocketAddr, String, (u16, u32)) {
    play_sdp(c, STREAM_SDP).await.0
}

/// As [`play`] with the client's own ANNOUNCE body; also returns the DESCRIBE answer's SDP.
pub async fn play_sdp(
    c: GameStreamClient,
    sdp: &str,
) -> ((GameStreamClient, SocketAddr, SocketAddr, String, (u16, u32)), String) {
    let (c, rtsp) = launch_with(c).await;
    let d = rtsp_request(rtsp, "DESCRIBE", "/", 10, &[], "").await.unwrap();
    assert_eq!(d.code, 200);
    let describe = d.body.clone();
    let a = rtsp_request(rtsp, "SETUP", "streamid=audio/0/0", 1, &[], "").await.unwrap();
    let session = a.header("Session").unwrap().split(';').next().unwrap().to_owned();
    let ping = a.header("X-SS-Ping-Payload").unwrap().to_owned();
    let audio_port: u16 = a.header("Transport").unwrap().trim_start_matches("server_port=").parse().unwrap();
    let v = rtsp_request(rtsp, "SETUP", "streamid=video/0/0", 2, &[("Session", &session)], "").await.unwrap();
    let port: u16 = v.header("Transport").unwrap().trim_start_matches("server_port=").parse().unwrap();
    let ctl = rtsp_request(rtsp, "SETUP", "streamid=control/13/0", 3, &[("Session", &session)], "").await.unwrap();
    let control_port: u16 = ctl.header("Transport").unwrap().trim_start_matches("server_port=").parse().unwrap();
    let connect_data: u32 = ctl.header("X-SS-Connect-Data").unwrap().parse().unwrap();
    assert_eq!(
        rtsp_request(rtsp, "ANNOUNCE", "streamid=control/13/0", 4, &[("Session", &session)], sdp).await.unwrap().code,
        200
    );
    assert_eq!(rtsp_request(rtsp, "PLAY", "/", 5, &[("Session", &session)], "").await.unwrap().code, 200);
    (
        (
            c,
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from(([127, 0, 0, 1], audio_port)),
            ping,
            (control_port, connect_data),
        ),
        describe,
    )
}
