//! GStreamer: initialisation, the encoder chosen at start-up, and pipeline text from the templates
//! in `gst-pipelines/`. Every call into GStreamer runs on a dedicated thread or `spawn_blocking`.

pub mod pipeline;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(#[source] gstreamer::glib::Error),
    #[error(
        "no H.264 encoder could be created (tried the base element {0} is missing); install gstreamer1.0-plugins-ugly (x264enc) or -bad (openh264enc)"
    )]
    NoBaseElement(&'static str),
    #[error(
        "no H.264 encoder could be created (tried {0}); install gstreamer1.0-plugins-ugly (x264enc) or -bad (openh264enc)"
    )]
    NoEncoder(Tried),
    #[error("the configured encoder {0:?} cannot be created on this machine")]
    ForcedUnavailable(String),
    #[error("pipeline template {}: {source}", .path.display())]
    TemplateRead { path: std::path::PathBuf, source: std::io::Error },
    #[error("pipeline template template: unknown placeholder {0}")]
    UnknownPlaceholder(String),
    #[error("pipeline: spawning the {what} thread: {source}")]
    Spawn { what: &'static str, source: std::io::Error },
    #[error("pipeline: the pipeline did not start in time")]
    StartTimeout,
    #[error("pipeline: parse: {0}")]
    Parse(#[source] gstreamer::glib::Error),
    #[error("pipeline: the description is not a pipeline")]
    NotAPipeline,
    #[error("pipeline: no appsink named \"sink\"")]
    NoAppsink,
    #[error("pipeline: cannot start: {0}")]
    CannotStart(#[source] gstreamer::StateChangeError),
    #[error("pipeline: pipeline has no bus")]
    NoBus,
    #[error("pipeline: no ANNOUNCE for this session")]
    NoAnnounce,
    #[error("pipeline: {0}")]
    Video(#[from] wolf_protocol::video::VideoError),
    #[error("pipeline: {0}")]
    Audio(#[from] wolf_protocol::audio::AudioError),
    #[error("pipeline: {what} socket: {source}")]
    Socket { what: &'static str, source: std::io::Error },
}

/// The encoders tried and the element each lacked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tried(pub Vec<(&'static str, &'static str)>);

impl std::fmt::Display for Tried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (candidate, missing)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{candidate}: no {missing}")?;
        }
        Ok(())
    }
}

pub fn init() -> Result<(), MediaError> {
    gstreamer::init().map_err(MediaError::Init)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    Hevc,
}

/// One way to encode: the elements it needs and its pipeline template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// What `[video] encoder` names it.
    pub name: &'static str,
    pub codec: Codec,
    pub elements: &'static [&'static str],
    pub template_file: &'static str,
    builtin: &'static str,
}

macro_rules! template {
    ($f:literal) => {
        include_str!(concat!("../../../../gst-pipelines/", $f))
    };
}

/// In order of preference: GPU first, then software.
pub const H264_CANDIDATES: [Candidate; 4] = [
    Candidate {
        name: "nvcodec",
        codec: Codec::H264,
        elements: &["nvh264enc", "cudaupload"],
        template_file: "h264-nvcodec.txt",
        builtin: template!("h264-nvcodec.txt"),
    },
    Candidate {
        name: "va",
        codec: Codec::H264,
        elements: &["vah264enc"],
        template_file: "h264-va.txt",
        builtin: template!("h264-va.txt"),
    },
    Candidate {
        name: "x264",
        codec: Codec::H264,
        elements: &["x264enc"],
        template_file: "h264-x264.txt",
        builtin: template!("h264-x264.txt"),
    },
    Candidate {
        name: "openh264",
        codec: Codec::H264,
        elements: &["openh264enc"],
        template_file: "h264-openh264.txt",
        builtin: template!("h264-openh264.txt"),
    },
];

/// GPU encoders first; `x265` (software) only when `[video] software_hevc` allows it.
pub const HEVC_CANDIDATES: [Candidate; 3] = [
    Candidate {
        name: "nvcodec",
        codec: Codec::Hevc,
        elements: &["nvh265enc", "cudaupload"],
        template_file: "hevc-nvcodec.txt",
        builtin: template!("hevc-nvcodec.txt"),
    },
    Candidate {
        name: "va",
        codec: Codec::Hevc,
        elements: &["vah265enc"],
        template_file: "hevc-va.txt",
        builtin: template!("hevc-va.txt"),
    },
    Candidate {
        name: "x265",
        codec: Codec::Hevc,
        elements: &["x265enc"],
        template_file: "hevc-x265.txt",
        builtin: template!("hevc-x265.txt"),
    },
];

/// Elements every video pipeline needs besides the encoder.
const COMMON_ELEMENTS: [&str; 6] = ["videoconvert", "videoscale", "videorate", "h264parse", "appsink", "videotestsrc"];

/// Can every element of `names` be created here? The first that cannot, when not.
fn creatable(names: &[&'static str]) -> Result<(), &'static str> {
    for n in names {
        gstreamer::ElementFactory::make(n).build().map_err(|_| *n)?;
    }
    Ok(())
}

/// The encoders picked at start-up, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderChoice {
    pub h264: Candidate,
    pub hevc: Option<Candidate>,
    /// Human-readable: what was tried and what failed.
    pub reason: String,
}

/// Try the candidates in order by creating their elements. `forced` is `[video] encoder`
/// ("auto" or a candidate name); `software_hevc` lets x265 serve HEVC when no GPU can. Blocking:
/// GStreamer calls.
pub fn probe(forced: &str, software_hevc: bool) -> Result<EncoderChoice, MediaError> {
    init()?;
    if let Err(missing) = creatable(&COMMON_ELEMENTS) {
        return Err(MediaError::NoBaseElement(missing));
    }
    let mut notes = Tried::default();
    let mut h264 = None;
    for c in H264_CANDIDATES.iter().filter(|c| forced == "auto" || c.name == forced) {
        match creatable(c.elements) {
            Ok(()) => {
                h264 = Some(*c);
                break;
            }
            Err(missing) => notes.0.push((c.name, missing)),
        }
    }
    let Some(h264) = h264 else {
        return Err(if forced == "auto" {
            MediaError::NoEncoder(notes)
        } else {
            MediaError::ForcedUnavailable(forced.to_owned())
        });
    };
    let hevc = HEVC_CANDIDATES
        .iter()
        .filter(|c| if c.name == "x265" { software_hevc } else { forced == "auto" || c.name == forced })
        .find(|c| creatable(c.elements).is_ok() && creatable(&["h265parse"]).is_ok())
        .copied();
    let mut reason = format!("H.264 with {}", h264.name);
    if forced != "auto" {
        reason.push_str(" (forced by [video] encoder)");
    }
    if !notes.0.is_empty() {
        reason.push_str(&format!("; skipped {}", notes));
    }
    match hevc {
        Some(c) => reason.push_str(&format!("; HEVC with {}", c.name)),
        None if software_hevc => reason.push_str("; no HEVC encoder"),
        None => reason.push_str("; no GPU HEVC encoder (software HEVC is off: [video] software_hevc)"),
    }
    Ok(EncoderChoice { h264, hevc, reason })
}

/// The audio pipeline template: CBR Opus at 48 kHz, one frame per buffer.
pub const AUDIO_TEMPLATE: &str = template!("audio-opus.txt");

/// What an audio pipeline is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpec {
    pub source: String,
    pub channels: u32,
    pub bitrate_bps: u32,
    /// Opus frame length in ms (5 or 10 from the client).
    pub packet_ms: u32,
}

/// Caps before the Opus encoder. Surround is positioned in the clients' order (FL FR FC LFE BL BR
/// [SL SR]), then unpositioned, so opusenc encodes one mono stream per channel in that order
/// (the identity layout `wolf_protocol::audio::opus_layout` advertises) on every GStreamer version.
pub fn audio_caps(channels: u32) -> String {
    match channels {
        6 | 8 => {
            let mask = if channels == 6 { "0x3f" } else { "0xc3f" };
            format!(
                "audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels={channels},channel-mask=(bitmask){mask} ! \
                 capssetter caps=\"audio/x-raw,channel-mask=(bitmask)0x0\""
            )
        }
        c => format!("audio/x-raw,rate=48000,channels={}", c.clamp(1, 2)),
    }
}

pub fn render_audio(template: &str, spec: &AudioSpec) -> Result<String, MediaError> {
    let out = template
        .trim()
        .replace("{audio_source}", &spec.source)
        .replace("{audio_caps}", &audio_caps(spec.channels))
        .replace("{channels}", &spec.channels.to_string())
        .replace("{bitrate_bps}", &spec.bitrate_bps.to_string())
        .replace("{packet_duration}", &spec.packet_ms.to_string());
    check_placeholders(out)
}

fn check_placeholders(out: String) -> Result<String, MediaError> {
    if let Some(start) = out.find('{') {
        let name: String = out[start..].chars().take_while(|c| *c != '}').chain(std::iter::once('}')).collect();
        return Err(MediaError::UnknownPlaceholder(name));
    }
    Ok(out)
}

/// What a video pipeline is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoSpec {
    pub source: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub slices: u32,
}

/// Bitrates the encoders take (kbit/s): below it a stream is unwatchable; above the encoder's own
/// maximum (x265enc stops at 100 Mbit/s, the others at 2 Gbit/s, Moonlight asks for at most
/// 500 Mbit/s) GStreamer only warns and the encoder runs at its default.
pub const MIN_BITRATE_KBPS: u32 = 500;

impl Candidate {
    pub fn max_bitrate_kbps(&self) -> u32 {
        if self.name == "x265" { 100_000 } else { 500_000 }
    }

    /// The client's bitrate within what this encoder takes; a change is logged.
    pub fn bitrate_kbps(&self, requested: u32) -> u32 {
        let b = requested.clamp(MIN_BITRATE_KBPS, self.max_bitrate_kbps());
        if b != requested {
            tracing::info!(
                requested,
                used = b,
                encoder = self.name,
                "client's bitrate is outside what the encoder takes: clamped"
            );
        }
        b
    }
}

/// The template text: `<dir>/<file>` when a pipelines dir is configured and has it, else built in.
pub fn template(c: &Candidate, dir: Option<&Path>) -> Result<String, MediaError> {
    match dir {
        Some(d) if d.join(c.template_file).exists() => std::fs::read_to_string(d.join(c.template_file))
            .map_err(|source| MediaError::TemplateRead { path: d.join(c.template_file), source }),
        _ => Ok(c.builtin.to_owned()),
    }
}

/// Fill the placeholders. Unknown `{...}` left in the result is an error naming it.
pub fn render(template: &str, spec: &VideoSpec) -> Result<String, MediaError> {
    let out = template
        .trim()
        .replace("{video_source}", &spec.source)
        .replace("{width}", &spec.width.to_string())
        .replace("{height}", &spec.height.to_string())
        .replace("{fps}", &spec.fps.to_string())
        .replace("{bitrate_kbps}", &spec.bitrate_kbps.to_string())
        .replace("{bitrate_bps}", &(u64::from(spec.bitrate_kbps) * 1000).to_string())
        .replace("{slices}", &spec.slices.max(1).to_string());
    check_placeholders(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates_are_clamped_to_what_each_encoder_takes() {
        let x264 = H264_CANDIDATES.iter().find(|c| c.name == "x264").unwrap();
        let x265 = HEVC_CANDIDATES.iter().find(|c| c.name == "x265").unwrap();
        assert_eq!(x264.bitrate_kbps(20_000), 20_000);
        assert_eq!(x264.bitrate_kbps(4_000_000), 500_000);
        assert_eq!(x264.bitrate_kbps(0), MIN_BITRATE_KBPS);
        assert_eq!(x265.bitrate_kbps(150_000), 100_000);
    }

    fn spec() -> VideoSpec {
        VideoSpec { source: "videotestsrc".into(), width: 1280, height: 720, fps: 60, bitrate_kbps: 5000, slices: 1 }
    }

    #[test]
    fn every_builtin_template_renders() {
        for c in H264_CANDIDATES.iter().chain(HEVC_CANDIDATES.iter()) {
            let text = render(c.builtin, &spec()).unwrap();
            assert!(text.starts_with("videotestsrc !"), "{}", c.name);
            assert!(text.contains("width=1280,height=720,framerate=60/1"), "{}", c.name);
            assert!(text.contains("name=sink") && text.contains("name=encoder"), "{}", c.name);
            assert!(text.contains("format=I420") || text.contains("format=NV12"), "{}: raw format pinned", c.name);
            // Backpressure drops raw frames before the encoder, never encoded ones after it.
            let leaky = text.find("leaky=downstream").unwrap_or_else(|| panic!("{}: no leaky queue", c.name));
            assert!(
                leaky < text.find("name=encoder").unwrap_or(0),
                "{}: the leaky queue is before the encoder",
                c.name
            );
            assert!(text.contains("drop=false") && !text.contains("drop=true"), "{}: the appsink never drops", c.name);
        }
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let e = render("{video_source} ! {nope} ! appsink", &spec()).unwrap_err();
        assert!(e.to_string().contains("{nope}"), "{e}");
    }
}
