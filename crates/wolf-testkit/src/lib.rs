//! wolf-testkit: what the integration tests share (a dev-dependency only, never published).
//!
//! Crate map:
//! - `config`       `ConfigBuilder`: a `Config` built and serialised, never TOML by hand
//! - `host_process` a host as a `wolf-rs serve` process (the client crate's `HostProcess`)
//! - `workspace`    the workspace root and its built binaries, as the running test finds them
//! - `media`        client-side decoding (GStreamer) and audio decryption
//! - `docker`       the Docker engine through its CLI: local images, cleanup on every path
//! - `namespace`    re-run one test inside private Linux namespaces
//! - `guest`        re-run one test inside a QEMU guest whose kernel has uinput (`guest.sh`)
//! - `session`      a launched session as the client runs it: RTSP to PLAY, control, receiving
//! - `viewer`       a client that streams in the background (frames and their times) while the host restarts
//! - this file      `TestHost` (a real host in this process, port 0, temp state dir), `PIN`, fixtures
//!
//! The root also holds the fixture rikey and SDP and the pair/launch/PLAY helpers.

pub mod config;
pub mod docker;
pub mod guest;
pub mod host_process;
pub mod media;
pub mod namespace;
pub mod session;
pub mod viewer;
pub mod workspace;

pub use config::ConfigBuilder;

use std::net::SocketAddr;
use std::sync::Arc;

use wolf_client::{ClientIdentity, GameStreamClient, PairOutcome, RtspSession};
use wolf_rs::app::{self, Paths, Running};
use wolf_rs::config::Env;

/// The fixed pairing PIN the tests' hosts are given (`ConfigBuilder::pin(PIN)`).
pub const PIN: &str = "4321";
/// The rikey every test launch carries, so tests can decrypt what the host encrypts with it.
pub const RIKEY_HEX: &str = "00112233445566778899aabbccddeeff";
pub const RIKEY: [u8; 16] =
    [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];

/// Pair a new client with the fixed PIN and launch app 1 at 1280x720x60 with the fixture rikey, as
/// Moonlight does (so RTSP is encrypted); returns the client and its session's RTSP endpoint.
pub async fn pair_and_launch(host: &TestHost) -> (GameStreamClient, RtspSession) {
    launch_with(host.client()).await
}

/// As [`pair_and_launch`], for any host the client points at.
pub async fn launch_with(mut c: GameStreamClient) -> (GameStreamClient, RtspSession) {
    assert_eq!(c.pair(PIN).await.expect("pairing runs"), PairOutcome::Paired);
    let rtsp = launch_rtsp(&c, &c.launch_url("1", "1280x720x60", RIKEY_HEX)).await;
    (c, rtsp)
}

/// GET this launch (or resume) URL, whose rikey is the fixture's; the session's RTSP endpoint.
pub async fn launch_rtsp(c: &GameStreamClient, url: &str) -> RtspSession {
    let reply = c.https_get(url).await.expect("launch");
    let session_url = reply.field("sessionUrl0").unwrap_or_else(|| panic!("sessionUrl0 in {}", reply.text()));
    let mut rtsp = RtspSession::from_url(&session_url, RIKEY).expect("sessionUrl0");
    rtsp.local = c.local_ip;
    rtsp
}

/// Wait (bounded: 30 s) until `f` holds; panics naming `what` otherwise.
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Kills every process group a host started from a state dir (apps, virtual displays, its audio
/// server) when dropped, so a test leaves nothing running, also when it fails.
pub struct KillOwned(String);

impl KillOwned {
    pub fn new(state_dir: &std::path::Path) -> KillOwned {
        KillOwned(std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned()).display().to_string())
    }
}

impl Drop for KillOwned {
    fn drop(&mut self) {
        let runner = wolf_rs::runners::process::ProcessRunner::new(std::env::temp_dir(), self.0.clone());
        let owned = runner.owned();
        // SIGTERM first, so X servers remove their sockets and locks; SIGKILL what is left after 2 s.
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            for p in &owned {
                // SAFETY: kill(2) on a process group; no memory is involved.
                unsafe { libc::kill(-p.pid, sig) };
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while owned.iter().any(|p| wolf_rs::runners::process::start_time(p.pid) == Some(p.start_time))
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

pub struct TestHost {
    /// First, so it runs before the state dir goes.
    pub owned: KillOwned,
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub http: SocketAddr,
    pub https: SocketAddr,
}

impl TestHost {
    /// A host started in this process with `config`. Its watchdog never exits (exit_after_ms = 0):
    /// that would end the test binary.
    pub async fn start(config: ConfigBuilder) -> TestHost {
        let dir = tempfile::tempdir().expect("temp dir");
        config.with(|c| c.watchdog.exit_after_ms = 0).write(dir.path());
        let mut h = TestHost {
            owned: KillOwned::new(dir.path()),
            dir,
            running: None,
            http: ([127, 0, 0, 1], 0).into(),
            https: ([127, 0, 0, 1], 0).into(),
        };
        h.boot().await;
        h
    }

    /// Its session processes run the `wolf-rs` binary (this process is a test binary).
    pub fn paths(&self) -> Paths {
        Paths { session_exe: Some(crate::workspace::host_bin()), ..Paths::new(self.dir.path().to_owned(), None) }
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

/// `sdp` with Moonlight's surround lines for `channels` (6 or 8) with `mask` (normal quality).
pub fn with_surround(sdp: &str, channels: u32, mask: u32) -> String {
    sdp.replace(
        "t=0 0\r\n",
        &format!(
            "a=x-nv-audio.surround.numChannels:{channels} \r\na=x-nv-audio.surround.channelMask:{mask} \r\n\
             a=x-nv-audio.surround.enable:1 \r\na=x-nv-audio.surround.AudioQuality:0 \r\nt=0 0\r\n"
        ),
    )
}

/// What the client reads from DESCRIBE for `channels`: the first `surround-params` line for it,
/// as (channels, streams, coupled streams, mapping) after the client's LFE swap.
pub fn advertised_surround(describe: &str, channels: u32) -> (u32, u32, u32, Vec<u8>) {
    let prefix = format!("a=fmtp:97 surround-params={channels}");
    let line = describe.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{prefix} in {describe}"));
    wolf_protocol::audio::client_surround_layout(line.trim_start_matches("a=fmtp:97 surround-params="))
        .expect("well formed")
}

/// What Moonlight announces for 1280x720@60 H.264 with encrypted control.
pub const STREAM_SDP: &str = "v=0\r\no=android 0 14 IN IPv4 127.0.0.1\r\ns=NVIDIA Streaming Client\r\n\
    a=x-nv-video[0].clientViewportWd:1280 \r\na=x-nv-video[0].clientViewportHt:720 \r\n\
    a=x-nv-video[0].maxFPS:60 \r\na=x-nv-video[0].packetSize:1024 \r\na=x-nv-vqos[0].bitStreamFormat:0 \r\n\
    a=x-ml-video.configuredBitrateKbps:8000 \r\na=x-nv-vqos[0].fec.minRequiredFecPackets:2 \r\n\
    a=x-nv-general.featureFlags:167 \r\na=x-ss-general.encryptionEnabled:1 \r\na=x-nv-aqos.packetDuration:5 \r\n\
    t=0 0\r\nm=video 47998  \r\n";

/// What Moonlight announces for 1280x720@60 H.264 with the SS_ENC_* bits `encryption` enabled
/// (`wolf_client::video::SS_ENC_*`); the packet size gives up the header's room when video is
/// sealed. With control V2 alone it is [`STREAM_SDP`].
pub fn stream_sdp(encryption: u32) -> String {
    wolf_client::video::announce_sdp(1280, 720, 60, 8000, encryption)
}

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
    let d = rtsp.request("DESCRIBE", "/", 10, &[], "").await.unwrap();
    assert_eq!(d.code, 200);
    let describe = d.body.clone();
    let a = rtsp.request("SETUP", "streamid=audio/0/0", 1, &[], "").await.unwrap();
    let session = a.header("Session").unwrap().split(';').next().unwrap().to_owned();
    let ping = a.header("X-SS-Ping-Payload").unwrap().to_owned();
    let audio_port: u16 = a.header("Transport").unwrap().trim_start_matches("server_port=").parse().unwrap();
    let v = rtsp.request("SETUP", "streamid=video/0/0", 2, &[("Session", &session)], "").await.unwrap();
    let port: u16 = v.header("Transport").unwrap().trim_start_matches("server_port=").parse().unwrap();
    let ctl = rtsp.request("SETUP", "streamid=control/13/0", 3, &[("Session", &session)], "").await.unwrap();
    let control_port: u16 = ctl.header("Transport").unwrap().trim_start_matches("server_port=").parse().unwrap();
    let connect_data: u32 = ctl.header("X-SS-Connect-Data").unwrap().parse().unwrap();
    assert_eq!(
        rtsp.request("ANNOUNCE", "streamid=control/13/0", 4, &[("Session", &session)], sdp).await.unwrap().code,
        200
    );
    assert_eq!(rtsp.request("PLAY", "/", 5, &[("Session", &session)], "").await.unwrap().code, 200);
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_sdp_builder_makes_the_fixture_sdp() {
        assert_eq!(super::stream_sdp(wolf_client::video::SS_ENC_CONTROL_V2), super::STREAM_SDP);
    }
}
