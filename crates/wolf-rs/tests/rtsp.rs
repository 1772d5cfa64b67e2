//! RTSP on loopback: the negotiation Moonlight runs after /launch, and what goes wrong.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wolf_client::rtsp_request;
use wolf_testkit::{ConfigBuilder, PIN, TestHost};

const SDP: &str = "v=0\r\no=android 0 14 IN IPv4 127.0.0.1\r\ns=NVIDIA Streaming Client\r\n\
    a=x-nv-video[0].clientViewportWd:1280 \r\na=x-nv-video[0].clientViewportHt:720 \r\n\
    a=x-nv-video[0].maxFPS:60 \r\na=x-nv-video[0].packetSize:1024 \r\na=x-nv-vqos[0].bitStreamFormat:0 \r\n\
    a=x-ml-video.configuredBitrateKbps:10000 \r\na=x-nv-vqos[0].fec.minRequiredFecPackets:2 \r\n\
    a=x-nv-general.featureFlags:167 \r\na=x-ss-general.encryptionEnabled:0 \r\na=x-nv-aqos.packetDuration:5 \r\n\
    t=0 0\r\nm=video 47998  \r\n";

async fn launched() -> (TestHost, std::net::SocketAddr) {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let (_, addr) = wolf_testkit::pair_and_launch(&host).await;
    (host, addr)
}

#[tokio::test]
async fn the_moonlight_negotiation_runs_to_play() {
    let (host, rtsp) = launched().await;
    let target = format!("rtsp://{rtsp}");
    let r = rtsp_request(rtsp, "OPTIONS", &target, 1, &[], "").await.unwrap();
    assert_eq!(r.code, 200);
    let r = rtsp_request(rtsp, "DESCRIBE", &target, 2, &[("Accept", "application/sdp")], "").await.unwrap();
    assert_eq!(r.code, 200);
    assert!(r.body.contains("x-ss-general.encryptionSupported"), "{}", r.body);
    assert_eq!(
        r.body.contains("sprop-parameter-sets=AAAAAU"),
        host.running().ctx.hevc,
        "HEVC offered only with an encoder"
    );

    let a = rtsp_request(
        rtsp,
        "SETUP",
        "streamid=audio/0/0",
        3,
        &[("Transport", "unicast;X-GS-ClientPort=50000-50001")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(a.code, 200);
    let session = a.header("Session").unwrap().split(';').next().unwrap().to_owned();
    assert!(a.header("Session").unwrap().ends_with(";timeout = 90"));
    assert_eq!(a.header("X-SS-Ping-Payload").unwrap().len(), 16);
    assert!(a.header("Transport").unwrap().starts_with("server_port="));
    let v = rtsp_request(rtsp, "SETUP", "streamid=video/0/0", 4, &[("Session", &session)], "").await.unwrap();
    assert_eq!(v.code, 200);
    assert_eq!(v.header("X-SS-Ping-Payload"), a.header("X-SS-Ping-Payload"));
    // ANNOUNCE before the control SETUP is out of order.
    let early =
        rtsp_request(rtsp, "ANNOUNCE", "streamid=control/13/0", 5, &[("Session", &session)], SDP).await.unwrap();
    assert_eq!(early.code, 455);
    let ctl = rtsp_request(rtsp, "SETUP", "streamid=control/13/0", 6, &[("Session", &session)], "").await.unwrap();
    assert_eq!(ctl.code, 200);
    assert!(ctl.header("X-SS-Connect-Data").unwrap().parse::<u32>().is_ok());
    // PLAY before ANNOUNCE is out of order too.
    assert_eq!(rtsp_request(rtsp, "PLAY", "/", 7, &[("Session", &session)], "").await.unwrap().code, 455);
    let bad =
        rtsp_request(rtsp, "ANNOUNCE", "streamid=control/13/0", 8, &[("Session", &session)], "v=0\r\n").await.unwrap();
    assert_eq!(bad.code, 400);
    let ok = rtsp_request(
        rtsp,
        "ANNOUNCE",
        "streamid=control/13/0",
        9,
        &[("Session", &session), ("Content-type", "application/sdp")],
        SDP,
    )
    .await
    .unwrap();
    assert_eq!(ok.code, 200);
    // A wrong Session id is refused.
    assert_eq!(rtsp_request(rtsp, "PLAY", "/", 10, &[("Session", "NOPE")], "").await.unwrap().code, 454);
    assert_eq!(rtsp_request(rtsp, "PLAY", "/", 11, &[("Session", &session)], "").await.unwrap().code, 200);

    let s = host.running().ctx.sessions.list().pop().unwrap();
    let stream = s.rtsp.stream.clone().unwrap();
    assert_eq!((stream.width, stream.height, stream.fps, stream.packet_size), (1280, 720, 60, 1024));
    assert!(s.rtsp.playing);
    host.stop().await;
}

#[tokio::test]
async fn without_a_launch_or_with_garbage_rtsp_errors_and_keeps_serving() {
    let host = TestHost::start(ConfigBuilder::loopback()).await;
    let rtsp: std::net::SocketAddr = ([127, 0, 0, 1], host.running().rtsp_port).into();
    let r = rtsp_request(rtsp, "OPTIONS", "rtsp://x", 1, &[], "").await.unwrap();
    assert_eq!(r.code, 454, "no launched session for this client");
    // Garbage gets a 400 and a close; a silent client is closed after the read timeout (not waited
    // for here: the next request is served meanwhile).
    let _silent = TcpStream::connect(rtsp).await.unwrap();
    let mut g = TcpStream::connect(rtsp).await.unwrap();
    g.write_all(b"\x16\x03\x01garbage\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), g.read_to_end(&mut out)).await.unwrap().unwrap();
    assert!(out.starts_with(b"RTSP/1.0 400"), "{}", String::from_utf8_lossy(&out));
    assert_eq!(rtsp_request(rtsp, "OPTIONS", "rtsp://x", 2, &[], "").await.unwrap().code, 454);
    host.stop().await;
}
