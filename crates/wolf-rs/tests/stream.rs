//! Video end to end on loopback: pair, launch, RTSP, ping, then receive the test pattern as RTP,
//! reassemble it (also with packets dropped on purpose, recovered by FEC), decode it with
//! GStreamer, cancel, and see the stream stop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use wolf_protocol::annexb::{NAL_IDR, NAL_PPS, NAL_SPS, h264_nal_types};
use wolf_protocol::control::{MSG_IDR_REQUEST, MSG_TERMINATION};
use wolf_protocol::video::{parse_packet, reassemble};
use wolf_testkit::session::{ControlEvent, EnetClient};
use wolf_testkit::{ConfigBuilder, PIN, RIKEY, TestHost};

/// Decode H.264 access units with GStreamer.
fn decode(frames: &[Vec<u8>]) -> Result<usize, String> {
    wolf_testkit::media::run_decoder(&wolf_testkit::media::h264_decoding()?, frames, 16)
}

/// Connect the control channel (asserting it connects) and ping the video port once from a new
/// socket, as a client starting a stream does; the control client and the video socket.
async fn connect_and_ping(
    control_port: u16,
    connect_data: u32,
    ping: &str,
    video: SocketAddr,
) -> (EnetClient, tokio::net::UdpSocket) {
    let control = EnetClient::connect(SocketAddr::from(([127, 0, 0, 1], control_port)), connect_data, RIKEY);
    assert_eq!(
        control.events.recv_timeout(Duration::from_secs(10)).expect("control connects"),
        ControlEvent::Connected
    );
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    wolf_testkit::session::ping(&sock, video, ping, 0).await;
    (control, sock)
}

/// Threads of this process that belong to a stream (sender or pipeline).
/// Stream threads of the session process `pid` (none once it is gone).
fn stream_threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|t| t.ok())
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .filter(|n| n.starts_with("video-") || n.starts_with("audio-") || n.starts_with("gst-pipeline"))
                .count()
        })
        .unwrap_or(0)
}

/// Decode Opus packets (5 ms each) with GStreamer.
fn decode_opus(packets: &[Vec<u8>]) -> Result<usize, String> {
    let launch = "appsrc name=src format=time caps=audio/x-opus,channel-mapping-family=0,channels=2,rate=48000 ! opusdec ! appsink name=out sync=false";
    wolf_testkit::media::run_decoder(launch, packets, 5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pattern_streams_to_the_client_and_survives_ten_percent_loss() {
    let _ = tracing_subscriber::fmt().with_env_filter("wolf_rs=debug").with_test_writer().try_init();
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let (c, video, audio, ping, (control_port, connect_data)) = wolf_testkit::play(host.client()).await;
    let control = EnetClient::connect(SocketAddr::from(([127, 0, 0, 1], control_port)), connect_data, RIKEY);
    assert_eq!(
        control.events.recv_timeout(Duration::from_secs(10)).expect("control connects"),
        ControlEvent::Connected
    );
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let audio_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // SS_PING: the 16-byte payload from SETUP and a sequence number, from the receiving socket.
    let mut pinger = ping.clone().into_bytes();
    pinger.extend_from_slice(&0u32.to_be_bytes());
    sock.send_to(&pinger, video).await.unwrap();
    audio_sock.send_to(&pinger, audio).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let mut current: Option<u32> = None;
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut frames: BTreeMap<u32, (u8, Vec<u8>)> = BTreeMap::new();
    let mut received = 0usize;
    let mut dropped = 0usize;
    let mut idr_asked = false;
    let collect = async {
        while frames.len() < 300 {
            let (n, _) = match tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await {
                Ok(r) => r.unwrap(),
                Err(_) => {
                    // Keep pinging, as the client does every 500 ms.
                    sock.send_to(&pinger, video).await.unwrap();
                    continue;
                }
            };
            received += 1;
            // Halfway, ask for a keyframe over the control channel, as a client does after a loss.
            if frames.len() == 150 && !idr_asked {
                idr_asked = true;
                control.send(MSG_IDR_REQUEST, &[0, 0]);
            }
            // Drop every 10th packet on purpose: FEC must recover them.
            if received % 10 == 0 {
                dropped += 1;
                continue;
            }
            let p = buf[..n].to_vec();
            let info = parse_packet(&p).unwrap();
            if current.is_some_and(|f| f != info.frame_index) {
                let done = std::mem::take(&mut packets);
                let (kind, bits) = reassemble(&done).expect("FEC recovers the dropped packets");
                frames.insert(current.unwrap(), (kind, bits));
            }
            current = Some(info.frame_index);
            packets.push(p);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), collect).await.expect("300 frames within 2 minutes");
    assert!(dropped > 30, "packets were dropped: {dropped}");
    // Frames arrive numbered from 1, in order, and the first is an IDR with SPS/PPS up front.
    let indices: Vec<u32> = frames.keys().copied().collect();
    assert_eq!(indices[0], 1);
    assert!(indices.windows(2).all(|w| w[1] == w[0] + 1));
    let (kind, first) = &frames[&1];
    assert_eq!(*kind, 2, "frame 1 is an IDR");
    let types: Vec<u8> = h264_nal_types(first).iter().map(|x| x.1).collect();
    assert_eq!(&types[..3], &[NAL_SPS, NAL_PPS, NAL_IDR][..], "{types:?}");

    // Control messages are the session's client activity.
    control.send(wolf_protocol::control::MSG_PING, &[4, 0, 0, 0, 0, 0, 0, 0]);
    let id = host.running().host.sessions.list()[0].id;
    for _ in 0..200 {
        if host.running().host.sessions.last_activity(id).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(host.running().host.sessions.last_activity(id).is_some(), "pings count as client activity");

    // Only the first frame and the one asked for are IDRs (the encoder's GOP is unbounded).
    // A frame lost on the host (counted) is followed by an IDR too; none is expected here.
    let idrs: Vec<u32> = frames.iter().filter(|(_, (k, _))| *k == 2).map(|(i, _)| *i).collect();
    let drops = &host.running().host.metrics.video_frames_dropped;
    let lost = ["handoff", "sender"].iter().map(|w| drops.with_label_values(&[w]).get()).sum::<u64>() as usize;
    assert!(idrs.len() >= 2 && idrs.len() <= 2 + lost, "IDR frames at {idrs:?}, {lost} frames lost on the host");
    assert!(idrs.iter().any(|i| *i > 150), "an IDR followed the request: {idrs:?}");

    let bitstreams: Vec<Vec<u8>> = frames.values().map(|(_, b)| b.clone()).collect();
    let decoded =
        tokio::task::spawn_blocking(move || decode(&bitstreams)).await.unwrap().expect("decodes without error");
    assert!(decoded >= 290, "decoded {decoded} frames");

    // Audio: RTP PT 97 with 4+2 FEC (PT 127), AES-CBC encrypted (featureFlags has 0x20); it
    // decrypts with the launch key and decodes as Opus.
    let mut opus = Vec::new();
    let mut parity = 0;
    while opus.len() < 200 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(20), audio_sock.recv_from(&mut buf))
            .await
            .expect("audio")
            .unwrap();
        match buf[1] {
            97 => {
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                opus.push(wolf_testkit::media::decrypt_audio(&buf[12..n], seq));
            }
            127 => parity += 1,
            other => panic!("unexpected audio payload type {other}"),
        }
    }
    assert!(parity >= 90, "2 parity packets per 4 data packets: {parity}");
    let packets = opus.clone();
    let decoded = tokio::task::spawn_blocking(move || decode_opus(&packets)).await.unwrap().expect("Opus decodes");
    assert!(decoded >= 190, "decoded {decoded} Opus packets");

    // They run in the session's own process.
    let pid = host.running().host.sessions.list()[0].process.as_ref().expect("a session process").pid;
    assert_ne!(pid as u32, std::process::id());
    assert!(stream_threads(pid) >= 2, "a video and an audio thread run");

    // Cancel: the stream stops.
    let r = c.https_get(&c.url("/cancel", &[])).await.unwrap();
    assert_eq!(r.field("cancel").as_deref(), Some("1"));
    // Drain what was in flight, then nothing more comes.
    let mut quiet = false;
    for _ in 0..5000 {
        if tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await.is_err() {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "no video after /cancel");
    // The client was told the stream ended, gracefully, then disconnected.
    let mut events = Vec::new();
    while let Ok(e) = control.events.recv_timeout(Duration::from_secs(10)) {
        let done = e == ControlEvent::Disconnected;
        events.push(e);
        if done {
            break;
        }
    }
    assert!(events.contains(&ControlEvent::Message(MSG_TERMINATION, vec![0x80, 0x03, 0x00, 0x23])), "{events:?}");
    assert_eq!(events.last(), Some(&ControlEvent::Disconnected));
    // The sender and pipeline threads are joined, not left behind.
    for _ in 0..100 {
        if stream_threads(pid) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stream_threads(pid), 0, "no stream thread left after /cancel: the session process is gone");
    assert!(host.running().host.sessions.is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_that_fails_ends_the_session_and_tells_the_client() {
    // A user template that cannot work: H.264 out of x264 forced into H.265 caps.
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("h264-x264.txt"),
        "videotestsrc is-live=true ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 ! x264enc name=encoder ! video/x-h265 ! appsink name=sink",
    )
    .unwrap();
    let pipelines_dir = templates.path().display().to_string();
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| {
        c.video.encoder = "x264".into();
        c.video.pipelines_dir = pipelines_dir;
    }))
    .await;
    let (_c, video, _audio, ping, (control_port, connect_data)) = wolf_testkit::play(host.client()).await;
    let (control, _sock) = connect_and_ping(control_port, connect_data, &ping, video).await;
    let mut events = Vec::new();
    while let Ok(e) = control.events.recv_timeout(Duration::from_secs(20)) {
        let done = e == ControlEvent::Disconnected;
        events.push(e);
        if done {
            break;
        }
    }
    assert!(events.contains(&ControlEvent::Message(MSG_TERMINATION, vec![0x80, 0x0e, 0x94, 0x03])), "{events:?}");
    assert!(host.running().host.sessions.is_empty(), "the failed session is gone");
    let ended = &host.running().host.metrics.sessions_ended;
    assert_eq!(ended.with_label_values(&["stream_failed"]).get(), 1, "ended once, for its reason");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_enables_video_encryption_gets_sealed_packets_only_its_key_opens() {
    use wolf_protocol::gcm::StreamKey;
    use wolf_protocol::rtsp::{SS_ENC_CONTROL_V2, SS_ENC_VIDEO};
    use wolf_protocol::video::{ENC_HEADER_LEN, decrypt_packet, sealed_frame_index};

    let _ = tracing_subscriber::fmt().with_env_filter("wolf_rs=debug").with_test_writer().try_init();
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let sdp = wolf_testkit::stream_sdp(SS_ENC_CONTROL_V2 | SS_ENC_VIDEO);
    let ((c, video, _audio, ping, (control_port, connect_data)), describe) =
        wolf_testkit::play_sdp(host.client(), &sdp).await;
    // Offered, not forced.
    assert!(describe.contains("a=x-ss-general.encryptionSupported:3\r\n"), "{describe}");
    assert!(describe.contains("a=x-ss-general.encryptionRequested:0\r\n"), "{describe}");
    let (_control, sock) = connect_and_ping(control_port, connect_data, &ping, video).await;

    let key = StreamKey::new(&RIKEY).unwrap();
    let mut wrong = RIKEY;
    wrong[15] ^= 0x01;
    let stranger = StreamKey::new(&wrong).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut sealed: Vec<Vec<u8>> = Vec::new();
    let mut current: Option<u32> = None;
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut frames: BTreeMap<u32, (u8, Vec<u8>)> = BTreeMap::new();
    let collect = async {
        while frames.len() < 60 {
            let (n, _) = match tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await {
                Ok(r) => r.unwrap(),
                Err(_) => {
                    wolf_testkit::session::ping(&sock, video, &ping, 1).await;
                    continue;
                }
            };
            let d = buf[..n].to_vec();
            sealed.push(d.clone());
            // Drop every 10th datagram: the parity shards, sealed too, must recover them once opened.
            if sealed.len() % 10 == 0 {
                continue;
            }
            let p = decrypt_packet(&key, &d).expect("the client's rikey opens every packet");
            let info = parse_packet(&p).unwrap();
            assert_eq!(sealed_frame_index(&d), Some(info.frame_index), "the clear frame index is the packet's");
            if current.is_some_and(|f| f != info.frame_index) {
                let (kind, bits) = reassemble(&std::mem::take(&mut packets)).expect("opened packets reassemble");
                frames.insert(current.unwrap(), (kind, bits));
            }
            current = Some(info.frame_index);
            packets.push(p);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), collect).await.expect("60 frames within 2 minutes");

    // The wire: 992 (the SDP's packet size) + 16 RTP bytes, sealed behind the 32-byte header; the
    // first datagram starts with IV 0, so it is no RTP packet at all.
    assert!(sealed.iter().all(|d| d.len() == 992 + 16 + ENC_HEADER_LEN));
    assert_eq!(&sealed[0][..12], b"\0\0\0\0\0\0\0\0\0\0\0V");
    assert!(parse_packet(&sealed[0]).is_err(), "a sealed packet does not parse as plain video");
    // Every packet has its own IV, counting up in send order.
    let counters: Vec<u64> = sealed.iter().map(|d| u64::from_le_bytes(d[..8].try_into().unwrap())).collect();
    assert!(counters.windows(2).all(|w| w[1] > w[0]), "IV counters increase");
    assert!(sealed.iter().all(|d| d[8..12] == *b"\0\0\0V"));
    // Someone with another key opens none of them.
    assert!(sealed.iter().all(|d| decrypt_packet(&stranger, d).is_err()), "a wrong key opens nothing");

    // What the packets open into is the video: frames from 1, the first an IDR with SPS/PPS, decodable.
    let indices: Vec<u32> = frames.keys().copied().collect();
    assert_eq!(indices[0], 1);
    assert!(indices.windows(2).all(|w| w[1] == w[0] + 1));
    let (kind, first) = &frames[&1];
    assert_eq!(*kind, 2, "frame 1 is an IDR");
    let types: Vec<u8> = h264_nal_types(first).iter().map(|x| x.1).collect();
    assert_eq!(&types[..3], &[NAL_SPS, NAL_PPS, NAL_IDR][..], "{types:?}");
    let bitstreams: Vec<Vec<u8>> = frames.values().map(|(_, b)| b.clone()).collect();
    let decoded =
        tokio::task::spawn_blocking(move || decode(&bitstreams)).await.unwrap().expect("decodes without error");
    assert!(decoded >= 55, "decoded {decoded} frames");

    let r = c.https_get(&c.url("/cancel", &[])).await.unwrap();
    assert_eq!(r.field("cancel").as_deref(), Some("1"));
    host.stop().await;
}
