//! What a session's streams are to be, decided by the control plane (it knows the app, the encoder
//! and the templates) and run as given by the session process.

use std::sync::Arc;

use crate::config::Config;
use crate::media::{self, AudioSpec, EncoderChoice, MediaError, VideoSpec};
use crate::session_process::wire::{AudioPlan, CapturePlan, Negotiated, StreamPlan, VideoPlan};
use crate::sessions::Session;
use wolf_protocol::audio::SURROUND_CHANNELS;

pub struct Planner {
    pub config: Arc<Config>,
    /// Where a session's app (and its sources) is looked up.
    pub apps: Arc<crate::state::apps::AppCatalog>,
    pub encoder: EncoderChoice,
    /// The display captures' sockets and the audio server the pipelines read.
    pub runners: Arc<crate::runners::Runners>,
}

impl Planner {
    /// What the client negotiated (after its ANNOUNCE).
    pub fn negotiated(session: &Session) -> Result<Negotiated, MediaError> {
        let announced = session.rtsp.stream.clone().ok_or(MediaError::NoAnnounce)?;
        Ok(Negotiated {
            rikey: session.rikey,
            rikeyid: session.rikeyid,
            ping_payload: session.rtsp.ping_payload.clone(),
            connect_data: session.rtsp.connect_data,
            announced,
        })
    }

    /// Both streams of `session` on its current sources (its lobby's when it joined one).
    pub fn plan(&self, session: &Session) -> Result<StreamPlan, MediaError> {
        let cfg = session.rtsp.stream.as_ref().ok_or(MediaError::NoAnnounce)?;
        let display = session.streamed_display().map(|d| d.name());
        Ok(StreamPlan { video: self.video(session, cfg)?, audio: self.audio(session, cfg)?, input_display: display })
    }

    fn video(&self, session: &Session, cfg: &wolf_protocol::rtsp::StreamConfig) -> Result<VideoPlan, MediaError> {
        let config = &self.config;
        let app = self.apps.get(session.app_id);
        let app = app.as_deref();
        // The session's display (its lobby's when it joined one), captured in a child process, unless
        // the app names its own source.
        let streamed = session.streamed_display();
        let capture_it = |a: Option<&crate::config::App>| {
            session.lobby.is_some() || a.is_some_and(|a| a.video_source.trim().is_empty())
        };
        let capture = match streamed {
            Some(d) if capture_it(app) => {
                Some(CapturePlan { display: d.clone(), fps: cfg.fps, socket: self.runners.capture_socket(session.id) })
            }
            _ => None,
        };
        let display = streamed.map(|d| d.name());
        let source = match (&capture, app) {
            (Some(c), _) => crate::runners::display::capture_source(&c.socket, &c.display, c.fps),
            (None, Some(a)) => a.video_source_for(display.as_deref(), cfg.fps),
            (None, None) => crate::config::TEST_PATTERN_SOURCE.to_owned(),
        };
        let dir =
            (!config.video.pipelines_dir.is_empty()).then(|| std::path::PathBuf::from(&config.video.pipelines_dir));
        // The client picks HEVC (bitStreamFormat 1) only when DESCRIBE offered it, i.e. we have one.
        let candidate = match (cfg.video_format, self.encoder.hevc) {
            (1, Some(hevc)) => hevc,
            _ => self.encoder.h264,
        };
        let spec = VideoSpec {
            source,
            width: cfg.width,
            height: cfg.height,
            fps: cfg.fps,
            bitrate_kbps: candidate.bitrate_kbps(cfg.bitrate_kbps),
            slices: cfg.slices_per_frame,
        };
        let pipeline = media::template(&candidate, dir.as_deref()).and_then(|t| media::render(&t, &spec))?;
        Ok(VideoPlan {
            pipeline,
            encoder: candidate.name.to_owned(),
            hevc: candidate.codec == media::Codec::Hevc,
            capture,
            fec_percent: config.video.fec_percentage,
        })
    }

    fn audio(&self, session: &Session, cfg: &wolf_protocol::rtsp::StreamConfig) -> Result<AudioPlan, MediaError> {
        let server = self.runners.audio.server();
        let sink = session.streamed_sink().map(|s| (server.as_str(), s.name.as_str()));
        let source = match (&session.lobby, sink) {
            // In a lobby: what the lobby plays.
            (Some(_), Some((server, sink))) => crate::config::sink_monitor_source(server, sink),
            _ => self
                .apps
                .get(session.app_id)
                .map_or_else(|| crate::config::TEST_TONE_SOURCE.to_owned(), |a| a.audio_source_for(sink)),
        };
        // Only the layouts DESCRIBE offered; anything else is stereo.
        let channels = if SURROUND_CHANNELS.contains(&cfg.audio_channels) { cfg.audio_channels } else { 2 };
        let spec = AudioSpec {
            source,
            channels,
            // The normal-quality rates of GameStream hosts.
            bitrate_bps: match channels {
                6 => 256_000,
                8 => 450_000,
                _ => 96_000,
            },
            packet_ms: if cfg.audio_packet_ms >= 10 { 10 } else { 5 },
        };
        let pipeline = media::render_audio(media::AUDIO_TEMPLATE, &spec)?;
        Ok(AudioPlan { pipeline, packet_ms: spec.packet_ms })
    }
}
