//! HEVC end to end with the software encoder (x265, `[video] software_hevc`): serverinfo and
//! DESCRIBE offer HEVC, a client that picks it (bitStreamFormat 1) receives frames that start with
//! VPS/SPS/PPS and an IDR, carry no AUD or SEI, and decode with GStreamer.

use std::time::Duration;

use wolf_protocol::annexb::{HEVC_AUD, HEVC_SEI_PREFIX, HEVC_SEI_SUFFIX, hevc_nal_types};
use wolf_protocol::video::{parse_packet, reassemble};
use wolf_testkit::{ConfigBuilder, PIN, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_picks_hevc_gets_decodable_hevc() {
    gstreamer::init().unwrap();
    if gstreamer::ElementFactory::make("x265enc").build().is_err() {
        panic!("x265enc is missing: scripts/deps.sh installs gstreamer1.0-plugins-bad");
    }
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| c.video.software_hevc = true)).await;
    assert_eq!(host.running().gamestream.encoder.hevc.map(|c| c.name), Some("x265"));
    let sdp = wolf_testkit::STREAM_SDP.replace("bitStreamFormat:0", "bitStreamFormat:1");
    let ((c, video, _audio, ping, _), describe) = wolf_testkit::play_sdp(host.client(), &sdp).await;
    assert!(describe.contains("sprop-parameter-sets=AAAAAU"), "DESCRIBE offers HEVC: {describe}");
    let info = c.https_get("/serverinfo").await.unwrap();
    let codecs: u32 = info.field("ServerCodecModeSupport").unwrap().parse().unwrap();
    assert_ne!(codecs & 0x100, 0, "serverinfo offers HEVC Main");

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut pinger = ping.into_bytes();
    pinger.extend_from_slice(&0u32.to_be_bytes());
    sock.send_to(&pinger, video).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (mut current, mut packets, mut frames) = (None, Vec::new(), Vec::new());
    let collect = async {
        while frames.len() < 60 {
            let n = match tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await {
                Ok(r) => r.unwrap().0,
                Err(_) => {
                    sock.send_to(&pinger, video).await.unwrap();
                    continue;
                }
            };
            let p = buf[..n].to_vec();
            let info = parse_packet(&p).unwrap();
            if current.is_some_and(|f| f != info.frame_index) {
                frames.push(reassemble(&std::mem::take(&mut packets)).expect("a whole frame"));
            }
            current = Some(info.frame_index);
            packets.push(p);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), collect).await.expect("60 HEVC frames within 2 minutes");
    let (kind, first) = &frames[0];
    assert_eq!(*kind, 2, "the first frame is an IDR");
    let types: Vec<u8> = hevc_nal_types(first).iter().map(|x| x.1).collect();
    assert_eq!(&types[..3], &[32, 33, 34], "VPS, SPS, PPS first: {types:?}");
    assert!(matches!(types[3], 19 | 20), "then an IDR slice: {types:?}");
    for (_, f) in &frames {
        let t: Vec<u8> = hevc_nal_types(f).iter().map(|x| x.1).collect();
        assert!(!t.iter().any(|n| [HEVC_AUD, HEVC_SEI_PREFIX, HEVC_SEI_SUFFIX].contains(n)), "AUD/SEI stripped: {t:?}");
    }
    let bitstreams: Vec<Vec<u8>> = frames.into_iter().map(|(_, b)| b).collect();
    let decoded = tokio::task::spawn_blocking(move || {
        wolf_testkit::media::run_decoder(
            "appsrc name=src format=time caps=video/x-h265,stream-format=byte-stream,alignment=au ! h265parse ! \
             avdec_h265 ! appsink name=out sync=false",
            &bitstreams,
            16,
        )
    })
    .await
    .unwrap()
    .expect("HEVC decodes without error");
    assert!(decoded >= 55, "decoded {decoded} frames");
    host.stop().await;
}
