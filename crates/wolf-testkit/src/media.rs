//! Client-side media helpers for the streaming tests: GStreamer decoding, audio decryption.

use gstreamer::prelude::*;

/// Push `buffers` (one every `frame_ms`) through `launch` (appsrc `src` … appsink `out`); returns how
/// many buffers came out, or the first error on the bus.
pub fn run_decoder(launch: &str, buffers: &[Vec<u8>], frame_ms: u64) -> Result<usize, String> {
    gstreamer::init().map_err(|e| e.to_string())?;
    let pipeline = gstreamer::parse::launch(launch)
        .map_err(|e| e.to_string())?
        .downcast::<gstreamer::Pipeline>()
        .map_err(|_| "not a pipeline")?;
    let src = pipeline.by_name("src").and_then(|e| e.downcast::<gstreamer_app::AppSrc>().ok()).ok_or("appsrc")?;
    let out = pipeline.by_name("out").and_then(|e| e.downcast::<gstreamer_app::AppSink>().ok()).ok_or("appsink")?;
    pipeline.set_state(gstreamer::State::Playing).map_err(|e| e.to_string())?;
    for (i, f) in buffers.iter().enumerate() {
        let mut b = gstreamer::Buffer::from_slice(f.clone());
        if let Some(m) = b.get_mut() {
            m.set_pts(gstreamer::ClockTime::from_mseconds(i as u64 * frame_ms));
            m.set_duration(gstreamer::ClockTime::from_mseconds(frame_ms));
        }
        src.push_buffer(b).map_err(|e| e.to_string())?;
    }
    src.end_of_stream().map_err(|e| e.to_string())?;
    let mut decoded = 0;
    while out.try_pull_sample(gstreamer::ClockTime::from_seconds(10)).is_some() {
        decoded += 1;
    }
    let bus = pipeline.bus().ok_or("bus")?;
    let error = bus.iter().find_map(|m| match m.view() {
        gstreamer::MessageView::Error(e) => Some(e.error().to_string()),
        _ => None,
    });
    let _ = pipeline.set_state(gstreamer::State::Null);
    match error {
        Some(e) => Err(e),
        None => Ok(decoded),
    }
}

/// AES-CBC audio payload as the test client's launch keyed it (rikey 0011…ff, rikeyid 1).
pub fn decrypt_audio(data: &[u8], seq: u16) -> Vec<u8> {
    use aws_lc_rs::cipher::{AES_128, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey};
    let key: [u8; 16] = crate::RIKEY;
    let mut iv = [0u8; 16];
    // rikeyid 1 from /launch, plus the sequence number.
    iv[..4].copy_from_slice(&(1u32.wrapping_add(u32::from(seq))).to_be_bytes());
    let k = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_128, &key).unwrap()).unwrap();
    let mut buf = data.to_vec();
    k.decrypt(&mut buf, DecryptionContext::Iv128(iv.into())).expect("audio decrypts").to_vec()
}
