//! Surround audio end to end: DESCRIBE offers 5.1 and 7.1, a client asks for them in ANNOUNCE, and
//! the Opus packets it receives decode with the layout it read from DESCRIBE (after its LFE swap).

use std::time::Duration;

use wolf_testkit::{ConfigBuilder, PIN, TestHost};

fn sdp(channels: u32, mask: u32) -> String {
    wolf_testkit::with_surround(wolf_testkit::STREAM_SDP, channels, mask)
}

async fn receives_decodable_surround(channels: u32, mask: u32) {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let ((_c, _video, audio, ping, _), describe) = wolf_testkit::play_sdp(host.client(), &sdp(channels, mask)).await;
    let layout = wolf_testkit::advertised_surround(&describe, channels);
    let c = layout.0;
    assert_eq!(c, channels);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut pinger = ping.into_bytes();
    pinger.extend_from_slice(&0u32.to_be_bytes());
    sock.send_to(&pinger, audio).await.unwrap();
    let mut opus = Vec::new();
    let mut buf = vec![0u8; 2048];
    while opus.len() < 100 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(20), sock.recv_from(&mut buf))
            .await
            .expect("audio arrives")
            .unwrap();
        // Payload type 97 is audio; 127 is FEC parity.
        if buf[1] & 0x7f == 97 {
            let seq = u16::from_be_bytes([buf[2], buf[3]]);
            opus.push(wolf_testkit::media::decrypt_audio(&buf[12..n], seq));
        }
    }
    let launch = format!(
        "appsrc name=src format=time caps=\"{}\" ! opusdec ! audio/x-raw,channels={c} ! appsink name=out sync=false",
        wolf_testkit::media::opus_surround_caps(&layout)
    );
    let decoded =
        wolf_testkit::media::run_decoder(&launch, &opus, 5).expect("surround Opus decodes with the advertised layout");
    assert!(decoded >= 90, "decoded {decoded} of {}", opus.len());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_one_decodes_with_the_advertised_layout() {
    receives_decodable_surround(6, 0x3f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_one_decodes_with_the_advertised_layout() {
    receives_decodable_surround(8, 0x63f).await;
}
