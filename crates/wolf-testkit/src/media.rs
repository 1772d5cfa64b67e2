//! Client-side media helpers for the streaming tests: GStreamer decoding, audio decryption.

use gstreamer::prelude::*;

/// Push `buffers` (one every `frame_ms`) through `launch` (appsrc `src` … appsink `out`); returns
/// the samples that came out, or the first error on the bus.
fn run_pipeline(launch: &str, buffers: &[Vec<u8>], frame_ms: u64) -> Result<Vec<gstreamer::Sample>, String> {
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
    let mut samples = Vec::new();
    while let Some(s) = out.try_pull_sample(gstreamer::ClockTime::from_seconds(10)) {
        samples.push(s);
    }
    let bus = pipeline.bus().ok_or("bus")?;
    let error = bus.iter().find_map(|m| match m.view() {
        gstreamer::MessageView::Error(e) => Some(e.error().to_string()),
        _ => None,
    });
    let _ = pipeline.set_state(gstreamer::State::Null);
    match error {
        Some(e) => Err(e),
        None => Ok(samples),
    }
}

/// As [`run_pipeline`]: how many buffers came out.
pub fn run_decoder(launch: &str, buffers: &[Vec<u8>], frame_ms: u64) -> Result<usize, String> {
    run_pipeline(launch, buffers, frame_ms).map(|s| s.len())
}

/// A pipeline that decodes H.264 access units (Annex B) from appsrc `src` into appsink `out`.
pub fn h264_decoding() -> Result<String, String> {
    gstreamer::init().map_err(|e| e.to_string())?;
    let decoder = ["avdec_h264", "openh264dec"]
        .into_iter()
        .find(|d| gstreamer::ElementFactory::make(d).build().is_ok())
        .ok_or("no H.264 decoder (gstreamer1.0-libav)")?;
    Ok(format!(
        "appsrc name=src format=time caps=video/x-h264,stream-format=byte-stream,alignment=au ! h264parse ! {decoder} ! appsink name=out sync=false"
    ))
}

/// Decode H.264 access units and return the first decoded picture's size: what the client shows.
pub fn h264_picture_size(frames: &[Vec<u8>]) -> Result<(i32, i32), String> {
    let samples = run_pipeline(&h264_decoding()?, frames, 16)?;
    let caps = samples.first().and_then(|s| s.caps()?.structure(0).map(|c| c.to_owned())).ok_or("nothing decoded")?;
    Ok((caps.get::<i32>("width").map_err(|e| e.to_string())?, caps.get::<i32>("height").map_err(|e| e.to_string())?))
}

/// AES-CBC audio payload as the test client's launch keyed it (rikey 0011…ff, rikeyid 1).
pub fn decrypt_audio(data: &[u8], seq: u16) -> Vec<u8> {
    decrypt_audio_with(&crate::RIKEY, data, seq).expect("audio decrypts")
}

/// AES-CBC audio payload under a launch's `rikey` (rikeyid 1, as `wolf-client` launches); `None`
/// when it does not decrypt (another key's audio, most likely).
pub fn decrypt_audio_with(rikey: &[u8; 16], data: &[u8], seq: u16) -> Option<Vec<u8>> {
    use aws_lc_rs::cipher::{AES_128, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey};
    let mut iv = [0u8; 16];
    // rikeyid 1 from /launch, plus the sequence number.
    iv[..4].copy_from_slice(&(1u32.wrapping_add(u32::from(seq))).to_be_bytes());
    let k = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_128, rikey).ok()?).ok()?;
    let mut buf = data.to_vec();
    k.decrypt(&mut buf, DecryptionContext::Iv128(iv.into())).ok().map(|p| p.to_vec())
}
