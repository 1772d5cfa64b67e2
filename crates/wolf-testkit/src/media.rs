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

/// A decoded picture, RGB, row after row.
#[derive(Debug, Clone)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Picture {
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The share of pixels for which `f` holds.
    pub fn share(&self, f: impl Fn([u8; 3]) -> bool) -> f64 {
        let n = self.rgb.chunks_exact(3).filter(|p| f([p[0], p[1], p[2]])).count();
        n as f64 / (self.width * self.height).max(1) as f64
    }

    /// The picture as a PNG file (to look at what a client received).
    pub fn save_png(&self, path: &std::path::Path) -> Result<(), String> {
        let launch = format!(
            "appsrc name=src format=time caps=video/x-raw,format=RGB,width={},height={},framerate=1/1 \
             ! videoconvert ! pngenc ! appsink name=out sync=false",
            self.width, self.height
        );
        // RGB rows are padded to 4 bytes in GStreamer's default layout.
        let stride = (self.width * 3).div_ceil(4) * 4;
        let mut padded = vec![0u8; stride * self.height];
        for row in 0..self.height {
            padded[row * stride..row * stride + self.width * 3]
                .copy_from_slice(&self.rgb[row * self.width * 3..(row + 1) * self.width * 3]);
        }
        let samples = run_pipeline(&launch, &[padded], 1000)?;
        let png = samples.first().and_then(|s| s.buffer()).ok_or("nothing encoded")?;
        let map = png.map_readable().map_err(|e| e.to_string())?;
        std::fs::write(path, map.as_slice()).map_err(|e| e.to_string())
    }
}

/// Decode H.264 access units (from an IDR on) and return the last picture: what the client shows.
pub fn h264_last_picture(frames: &[Vec<u8>]) -> Result<Picture, String> {
    let decode =
        h264_decoding()?.replace(" ! appsink name=out", " ! videoconvert ! video/x-raw,format=RGB ! appsink name=out");
    let samples = run_pipeline(&decode, frames, 16)?;
    let last = samples.last().ok_or("nothing decoded")?;
    let info = gstreamer_video::VideoInfo::from_caps(last.caps().ok_or("no caps")?).map_err(|e| e.to_string())?;
    let buffer = last.buffer().ok_or("no buffer")?;
    let map = buffer.map_readable().map_err(|e| e.to_string())?;
    let (w, h, stride) = (info.width() as usize, info.height() as usize, info.stride()[0] as usize);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        rgb.extend_from_slice(map.get(row * stride..row * stride + w * 3).ok_or("short picture")?);
    }
    Ok(Picture { width: w, height: h, rgb })
}

/// Decode the Opus packets of a stereo stream (decrypted RTP payloads) into interleaved samples.
pub fn opus_stereo_samples(packets: &[Vec<u8>]) -> Result<Vec<f32>, String> {
    opus_samples(packets, "audio/x-opus,channel-mapping-family=0,channels=2,rate=48000", 2)
}

/// Decode Opus packets with these caps (a surround layout as the client read it from DESCRIBE)
/// into `channels` interleaved samples, in the stream's own channel order.
pub fn opus_samples(packets: &[Vec<u8>], caps: &str, channels: usize) -> Result<Vec<f32>, String> {
    let launch = format!(
        "appsrc name=src format=time caps=\"{caps}\" ! opusdec ! audio/x-raw,format=S16LE,channels={channels} ! appsink name=out sync=false"
    );
    let mut out = Vec::new();
    for s in run_pipeline(&launch, packets, 5)? {
        let Some(b) = s.buffer() else { continue };
        let map = b.map_readable().map_err(|e| e.to_string())?;
        out.extend(map.chunks_exact(2).map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0));
    }
    Ok(out)
}

/// The Opus caps a client builds for a surround layout it read from DESCRIBE (channels, streams,
/// coupled streams, mapping).
pub fn opus_surround_caps((channels, streams, coupled, mapping): &(u32, u32, u32, Vec<u8>)) -> String {
    let mapping: Vec<String> = mapping.iter().map(u8::to_string).collect();
    format!(
        "audio/x-opus,rate=48000,channels={channels},channel-mapping-family=255,stream-count={streams},\
         coupled-count={coupled},channel-mapping=(int)<{}>",
        mapping.join(",")
    )
}

/// The power of `freq` Hz in one channel of interleaved 48 kHz samples, and the channel's mean
/// power: a pure tone has nearly all of its power at its frequency. Goertzel over 20 ms windows
/// (whole periods of the frequencies tests use), so a lost packet's phase jump costs one window.
pub fn tone_power(samples: &[f32], channels: usize, channel: usize, freq: f64) -> (f64, f64) {
    const WINDOW: usize = 960;
    let x: Vec<f64> = samples.iter().skip(channel).step_by(channels).map(|v| f64::from(*v)).collect();
    let w = 2.0 * std::f64::consts::PI * freq / 48_000.0;
    let (mut at, mut windows) = (0.0, 0usize);
    for chunk in x.chunks_exact(WINDOW) {
        let (mut s1, mut s2) = (0.0, 0.0);
        for v in chunk {
            let s = v + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let n = WINDOW as f64;
        // |X(f)|² · 2 / N²: a sinusoid's power (amplitude² / 2).
        at += (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) * 2.0 / (n * n);
        windows += 1;
    }
    let total = x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64;
    (at / windows.max(1) as f64, total)
}
