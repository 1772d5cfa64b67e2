//! RTSP on loopback: the negotiation Moonlight runs after /launch, and what goes wrong.

use std::time::Duration;

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use wolf_client::{ClientIdentity, GameStreamClient, PairOutcome, RtspSession, rtsp_request};
use wolf_testkit::{ConfigBuilder, PIN, RIKEY_HEX, TestHost};

const SDP: &str = "v=0\r\no=android 0 14 IN IPv4 127.0.0.1\r\ns=NVIDIA Streaming Client\r\n\
    a=x-nv-video[0].clientViewportWd:1280 \r\na=x-nv-video[0].clientViewportHt:720 \r\n\
    a=x-nv-video[0].maxFPS:60 \r\na=x-nv-video[0].packetSize:1024 \r\na=x-nv-vqos[0].bitStreamFormat:0 \r\n\
    a=x-ml-video.configuredBitrateKbps:10000 \r\na=x-nv-vqos[0].fec.minRequiredFecPackets:2 \r\n\
    a=x-nv-general.featureFlags:167 \r\na=x-ss-general.encryptionEnabled:0 \r\na=x-nv-aqos.packetDuration:5 \r\n\
    t=0 0\r\nm=video 47998  \r\n";

async fn launched() -> (TestHost, RtspSession) {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let (_, rtsp) = wolf_testkit::pair_and_launch(&host).await;
    (host, rtsp)
}

#[tokio::test]
async fn the_moonlight_negotiation_runs_to_play() {
    let (host, rtsp) = launched().await;
    assert!(rtsp.encrypted(), "a client that sends corever=1 is told rtspenc://");
    let target = format!("rtsp://{}", rtsp.addr);
    let r = rtsp.request("OPTIONS", &target, 1, &[], "").await.unwrap();
    assert_eq!(r.code, 200);
    let r = rtsp.request("DESCRIBE", &target, 2, &[("Accept", "application/sdp")], "").await.unwrap();
    assert_eq!(r.code, 200);
    assert!(r.body.contains("x-ss-general.encryptionSupported"), "{}", r.body);
    assert_eq!(
        r.body.contains("sprop-parameter-sets=AAAAAU"),
        host.running().gamestream.encoder.hevc.is_some(),
        "HEVC offered only with an encoder"
    );

    let a = rtsp
        .request("SETUP", "streamid=audio/0/0", 3, &[("Transport", "unicast;X-GS-ClientPort=50000-50001")], "")
        .await
        .unwrap();
    assert_eq!(a.code, 200);
    let session = a.header("Session").unwrap().split(';').next().unwrap().to_owned();
    assert!(a.header("Session").unwrap().ends_with(";timeout = 90"));
    assert_eq!(a.header("X-SS-Ping-Payload").unwrap().len(), 16);
    assert!(a.header("Transport").unwrap().starts_with("server_port="));
    let v = rtsp.request("SETUP", "streamid=video/0/0", 4, &[("Session", &session)], "").await.unwrap();
    assert_eq!(v.code, 200);
    assert_eq!(v.header("X-SS-Ping-Payload"), a.header("X-SS-Ping-Payload"));
    // ANNOUNCE before the control SETUP is out of order.
    let early = rtsp.request("ANNOUNCE", "streamid=control/13/0", 5, &[("Session", &session)], SDP).await.unwrap();
    assert_eq!(early.code, 455);
    let ctl = rtsp.request("SETUP", "streamid=control/13/0", 6, &[("Session", &session)], "").await.unwrap();
    assert_eq!(ctl.code, 200);
    assert!(ctl.header("X-SS-Connect-Data").unwrap().parse::<u32>().is_ok());
    // PLAY before ANNOUNCE is out of order too.
    assert_eq!(rtsp.request("PLAY", "/", 7, &[("Session", &session)], "").await.unwrap().code, 455);
    let bad = rtsp.request("ANNOUNCE", "streamid=control/13/0", 8, &[("Session", &session)], "v=0\r\n").await.unwrap();
    assert_eq!(bad.code, 400);
    let ok = rtsp
        .request(
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
    assert_eq!(rtsp.request("PLAY", "/", 10, &[("Session", "NOPE")], "").await.unwrap().code, 454);
    assert_eq!(rtsp.request("PLAY", "/", 11, &[("Session", &session)], "").await.unwrap().code, 200);

    let s = host.running().host.sessions.list().pop().unwrap();
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

/// A client without `corever` (older Moonlight) is told plain `rtsp://` and found by its address.
#[tokio::test]
async fn a_client_without_corever_negotiates_in_plain_text_by_address() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let q = c.url("/launch", &[("appid", "1"), ("mode", "1280x720x60"), ("rikey", RIKEY_HEX), ("rikeyid", "1")]);
    let rtsp = wolf_testkit::launch_rtsp(&c, &q).await;
    assert!(!rtsp.encrypted());
    assert_eq!(rtsp.request("OPTIONS", "rtsp://x", 1, &[], "").await.unwrap().code, 200);
    let a = rtsp.request("SETUP", "streamid=audio/0/0", 2, &[], "").await.unwrap();
    assert_eq!(a.code, 200);
    assert_eq!(a.header("X-SS-Ping-Payload").unwrap().len(), 16);
    // Someone else on the address, without the Session id the first SETUP handed out, learns no
    // ping payload or connect data and changes nothing.
    for (method, target) in [("SETUP", "streamid=video/0/0"), ("SETUP", "streamid=control/13/0"), ("PLAY", "/")] {
        let r = rtsp.request(method, target, 3, &[], "").await.unwrap();
        assert_eq!(r.code, 454, "{method} {target} without the Session id");
        assert!(r.header("X-SS-Ping-Payload").is_none() && r.header("X-SS-Connect-Data").is_none());
    }
    let session = a.header("Session").unwrap().split(';').next().unwrap().to_owned();
    let v = rtsp.request("SETUP", "streamid=video/0/0", 4, &[("Session", &session)], "").await.unwrap();
    assert_eq!(v.code, 200, "the client itself goes on");
    host.stop().await;
}

/// A stranger on the client's own address, without its rikey, learns nothing of an encrypted
/// session: plain RTSP does not find it, a message sealed with another key is not answered, and the
/// client's own negotiation is untouched.
#[tokio::test]
async fn a_stranger_on_the_same_address_cannot_reach_an_encrypted_session() {
    let (host, rtsp) = launched().await;
    let plain = rtsp_request(rtsp.addr, "SETUP", "streamid=audio/0/0", 1, &[], "").await.unwrap();
    assert_eq!(plain.code, 454, "plain RTSP never finds a session whose client encrypts");
    assert!(plain.header("X-SS-Ping-Payload").is_none());

    let forged = wolf_protocol::rtsp::seal(
        &[7u8; 16],
        1,
        wolf_protocol::gcm::Direction::ClientToHost,
        b"SETUP streamid=audio/0/0 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
    )
    .unwrap();
    let mut s = TcpStream::connect(rtsp.addr).await.unwrap();
    s.write_all(&forged).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await.unwrap().unwrap();
    assert!(out.is_empty(), "no answer to a key no session has: {out:?}");
    // A sealed message too big to be a request is not even tried.
    let mut s = TcpStream::connect(rtsp.addr).await.unwrap();
    s.write_all(&(0x8000_0000u32 | 60_000).to_be_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await.unwrap().unwrap();
    assert!(out.is_empty(), "closed at once: {out:?}");

    let a = rtsp.request("SETUP", "streamid=audio/0/0", 1, &[], "").await.unwrap();
    assert_eq!(a.code, 200);
    let s = host.running().host.sessions.list().pop().unwrap();
    assert_eq!(a.header("X-SS-Ping-Payload"), Some(s.rtsp.ping_payload.as_str()));
    host.stop().await;
}

/// Idle connections from the client's own address (a NAT neighbour, a slowloris), more than the
/// port holds, do not lock the client out: the oldest idle one is closed and the client is served.
#[tokio::test]
async fn idle_connections_from_the_same_address_do_not_lock_the_client_out() {
    let (host, rtsp) = launched().await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(rtsp.addr).await.unwrap());
    }
    assert_eq!(rtsp.request("OPTIONS", "rtsp://x", 1, &[], "").await.unwrap().code, 200);
    let a = rtsp.request("SETUP", "streamid=audio/0/0", 2, &[], "").await.unwrap();
    assert_eq!(a.code, 200);
    // The first idle ones were closed to make room.
    let mut first = idle.remove(0);
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the oldest idle connection is closed: {closed:?}");
    host.stop().await;
}

/// 20 paired clients on one address launch at the same instant and negotiate at the same time,
/// each asking for its own resolution: every session ends up with its own client's ANNOUNCE and
/// its own ping payload and connect data (RTSP finds sessions by key, not by address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sessions_from_one_address_each_negotiate_their_own() {
    const N: usize = 20;
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let mut clients = Vec::new();
    for _ in 0..N {
        let mut c = host.client_with(Arc::new(ClientIdentity::generate().unwrap()));
        assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
        clients.push(c);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move { negotiate(c, i, &barrier).await }));
    }
    let mut negotiated = Vec::new();
    for t in tasks {
        negotiated.push(t.await.unwrap());
    }
    let sessions = host.running().host.sessions.list();
    assert_eq!(sessions.len(), N);
    for (fingerprint, height, ping, connect_data) in &negotiated {
        let s = sessions.iter().find(|s| &s.client_fingerprint == fingerprint).expect("its session");
        assert!(s.rtsp.playing, "session {} plays", s.id);
        assert_eq!(s.rtsp.stream.as_ref().map(|c| c.height), Some(*height), "session {} has its own ANNOUNCE", s.id);
        assert_eq!(&s.rtsp.ping_payload, ping, "session {} handed its own ping payload to its client", s.id);
        assert_eq!(s.rtsp.connect_data, *connect_data);
    }
    let mut pings: Vec<&String> = negotiated.iter().map(|n| &n.2).collect();
    pings.sort();
    pings.dedup();
    assert_eq!(pings.len(), N, "every session has its own ping payload");
    host.stop().await;
}

/// Launch with a rikey of this client's own once all are ready, then run RTSP to PLAY with a height
/// of its own; (fingerprint, height, ping payload, connect data).
async fn negotiate(c: GameStreamClient, i: usize, barrier: &tokio::sync::Barrier) -> (String, u32, String, u32) {
    let rikey = [i as u8 + 1; 16];
    let url = c.launch_url("1", "1280x720x60", &hex::encode(rikey));
    barrier.wait().await;
    let reply = c.https_get(&url).await.unwrap();
    let rtsp = RtspSession::from_url(&reply.field("sessionUrl0").unwrap(), rikey).unwrap();
    let height = 400 + 2 * i as u32;
    let sdp = SDP.replace("clientViewportHt:720", &format!("clientViewportHt:{height}"));
    let a = rtsp.request("SETUP", "streamid=audio/0/0", 1, &[], "").await.unwrap();
    assert_eq!(a.code, 200);
    let session = a.header("Session").unwrap().split(';').next().unwrap().to_owned();
    let sh = [("Session", session.as_str())];
    assert_eq!(rtsp.request("SETUP", "streamid=video/0/0", 2, &sh, "").await.unwrap().code, 200);
    let ctl = rtsp.request("SETUP", "streamid=control/13/0", 3, &sh, "").await.unwrap();
    assert_eq!(ctl.code, 200);
    assert_eq!(rtsp.request("ANNOUNCE", "streamid=control/13/0", 4, &sh, &sdp).await.unwrap().code, 200);
    assert_eq!(rtsp.request("PLAY", "/", 5, &sh, "").await.unwrap().code, 200);
    (
        c.identity.cert.fingerprint_hex(),
        height,
        a.header("X-SS-Ping-Payload").unwrap().to_owned(),
        ctl.header("X-SS-Connect-Data").unwrap().parse().unwrap(),
    )
}

/// Idle connections from 16 other addresses, 16 each (as many as the port holds), do not stop a
/// client's RTSP: every one of its 40 requests is answered, the idle ones making room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_from_many_addresses_answers_every_real_request() {
    let (host, rtsp) = launched().await;
    let mut idle = Vec::new();
    for src in 2..18u8 {
        for _ in 0..16 {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(std::net::SocketAddr::from(([127, 0, 0, src], 0))).unwrap();
            idle.push(sock.connect(rtsp.addr).await.unwrap());
        }
    }
    let mut answered = 0;
    for cseq in 0..40 {
        if rtsp.request("OPTIONS", "rtsp://x", cseq, &[], "").await.is_ok_and(|r| r.code == 200) {
            answered += 1;
        }
    }
    assert_eq!(answered, 40, "every request of the client is answered beside {} idle connections", idle.len());
    host.stop().await;
}

/// A plain-RTSP client's session has an RTSP port of its own: a stranger on the same address (its
/// NAT, its gateway) who sends SETUP to the shared port first gets 454 and learns nothing, and the
/// client then negotiates on its own port as if nobody had tried.
#[tokio::test]
async fn a_stranger_who_sets_up_first_on_the_shared_port_does_not_deny_a_plain_rtsp_client() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let q = c.url("/launch", &[("appid", "1"), ("mode", "1280x720x60"), ("rikey", RIKEY_HEX), ("rikeyid", "1")]);
    let rtsp = wolf_testkit::launch_rtsp(&c, &q).await;
    let shared = host.running().host.ports.rtsp;
    assert!(!rtsp.encrypted());
    assert_ne!(rtsp.addr.port(), shared, "a port of its own");
    let shared = std::net::SocketAddr::new(rtsp.addr.ip(), shared);
    for (cseq, target) in [(1, "streamid=audio/0/0"), (2, "streamid=video/0/0"), (3, "streamid=control/13/0")] {
        let r = rtsp_request(shared, "SETUP", target, cseq, &[], "").await.unwrap();
        assert_eq!(r.code, 454, "the shared port does not find a session that has its own port");
        assert!(r.header("X-SS-Ping-Payload").is_none() && r.header("X-SS-Connect-Data").is_none());
    }
    let a = rtsp.request("SETUP", "streamid=audio/0/0", 1, &[], "").await.unwrap();
    assert_eq!(a.code, 200, "the client's own first SETUP");
    let s = host.running().host.sessions.list().pop().unwrap();
    assert_eq!(a.header("X-SS-Ping-Payload"), Some(s.rtsp.ping_payload.as_str()));
    host.stop().await;
}

/// `[stream] encryption = "required"`: a launch without `corever` (plain RTSP) is refused with
/// why, and counted; one that encrypts gets `rtspenc://`. `"off"`: even an encrypting client is
/// told plain RTSP.
#[tokio::test]
async fn required_encryption_refuses_a_plain_rtsp_launch_and_off_never_encrypts() {
    use wolf_rs::config::Encryption;
    let required = ConfigBuilder::loopback().pin(PIN).with(|c| c.stream.encryption = Encryption::Required);
    let host = TestHost::start(required).await;
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let plain = c.url("/launch", &[("appid", "1"), ("mode", "1280x720x60"), ("rikey", RIKEY_HEX), ("rikeyid", "1")]);
    let r = c.https_get(&plain).await.unwrap();
    assert_eq!(r.xml_status(), Some(403), "{}", r.text());
    assert!(r.text().contains("requires encrypted streaming"), "{}", r.text());
    assert!(host.running().host.sessions.is_empty(), "no session for it");
    let m = host.running().host.metrics.render().unwrap();
    assert!(m.contains("wolf_session_creation_errors_total{reason=\"plain_rtsp\"} 1"), "{m}");
    let rtsp = wolf_testkit::launch_rtsp(&c, &c.launch_url("1", "1280x720x60", RIKEY_HEX)).await;
    assert!(rtsp.encrypted(), "a client that encrypts is let through");
    host.stop().await;

    let off = ConfigBuilder::loopback().pin(PIN).with(|c| c.stream.encryption = Encryption::Off);
    let host = TestHost::start(off).await;
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let rtsp = wolf_testkit::launch_rtsp(&c, &c.launch_url("1", "1280x720x60", RIKEY_HEX)).await;
    assert!(!rtsp.encrypted(), "off: plain RTSP even for a client that sends corever");
    let d = rtsp.request("DESCRIBE", "rtsp://x", 1, &[], "").await.unwrap();
    let sdp = &d.body;
    assert!(sdp.contains(&format!("encryptionSupported:{}\r", wolf_protocol::rtsp::SS_ENC_CONTROL_V2)), "{sdp}");
    host.stop().await;
}
