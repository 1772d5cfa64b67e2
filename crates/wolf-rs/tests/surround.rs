//! Surround audio end to end: DESCRIBE offers 5.1 and 7.1, a client asks for them in ANNOUNCE, and
//! the Opus packets it receives decode with the layout it read from DESCRIBE (after its LFE swap).

use std::time::Duration;

use wolf_protocol::audio::client_surround_layout;
use wolf_testkit::{ConfigBuilder, PIN, TestHost};

fn sdp(channels: u32, mask: u32) -> String {
    wolf_testkit::STREAM_SDP.replace(
        "t=0 0\r\n",
        &format!(
            "a=x-nv-audio.surround.numChannels:{channels} \r\na=x-nv-audio.surround.channelMask:{mask} \r\n\
             a=x-nv-audio.surround.enable:1 \r\na=x-nv-audio.surround.AudioQuality:0 \r\nt=0 0\r\n"
        ),
    )
}

/// What the client reads from DESCRIBE for `channels`: the first `surround-params` line for it.
fn advertised(describe: &str, channels: u32) -> (u32, u32, u32, Vec<u8>) {
    let prefix = format!("a=fmtp:97 surround-params={channels}");
    let line = describe.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{prefix} in {describe}"));
    client_surround_layout(line.trim_start_matches("a=fmtp:97 surround-params=")).expect("well formed")
}

async fn receives_decodable_surround(channels: u32, mask: u32) {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let ((_c, _video, audio, ping, _), describe) = wolf_testkit::play_sdp(host.client(), &sdp(channels, mask)).await;
    let (c, streams, coupled, mapping) = advertised(&describe, channels);
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
    let mapping_list: Vec<String> = mapping.iter().map(u8::to_string).collect();
    let launch = format!(
        "appsrc name=src format=time caps=\"audio/x-opus,rate=48000,channels={c},channel-mapping-family=255,\
         stream-count={streams},coupled-count={coupled},channel-mapping=(int)<{}>\" ! opusdec ! \
         audio/x-raw,channels={c} ! appsink name=out sync=false",
        mapping_list.join(",")
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
