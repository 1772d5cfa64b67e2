//! Known-answer test of sealed video (SS_ENC_VIDEO) against packets sealed outside this crate, with
//! Python's `cryptography` (tests/fixtures/video/make_enc_vectors.py writes enc_vectors.json).

use serde_json::Value;
use wolf_protocol::gcm::StreamKey;
use wolf_protocol::video::{FrameType, Packetizer, VideoParams, decrypt_packet, encrypt_packet, sealed_frame_index};

#[test]
fn sealed_video_matches_the_vectors() {
    let path = format!("{}/tests/fixtures/video/enc_vectors.json", env!("CARGO_MANIFEST_DIR"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rikey: [u8; 16] = hex::decode(v["key_hex"].as_str().unwrap()).unwrap().try_into().unwrap();
    let key = StreamKey::new(&rikey).unwrap();
    // The plaintexts are what our packetizer sends for the script's frame.
    let mut p = Packetizer::new(VideoParams { packet_size: 64, fec_percent: 50, min_parity: 1 }).unwrap();
    let bits: Vec<u8> = (0..100usize).map(|i| ((i * 7 + 3) % 256) as u8).collect();
    let packets = p.packetize(&bits, FrameType::Idr, 90_000, 12).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let plain = hex::decode(c["plain_hex"].as_str().unwrap()).unwrap();
        let sealed = hex::decode(c["sealed_hex"].as_str().unwrap()).unwrap();
        let counter = c["iv_counter"].as_u64().unwrap();
        assert_eq!(packets[c["packet_index"].as_u64().unwrap() as usize], plain);
        assert_eq!(encrypt_packet(&key, counter, &plain).unwrap(), sealed, "counter {counter:#x}");
        assert_eq!(decrypt_packet(&key, &sealed).unwrap(), plain);
        assert_eq!(sealed_frame_index(&sealed), Some(1));
    }
}
