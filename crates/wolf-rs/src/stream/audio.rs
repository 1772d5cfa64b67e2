//! The audio sender thread of a session: Opus pipeline → RTP (+AES-CBC when asked) with 4+2 FEC → UDP.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Streams, send};
use crate::media::pipeline::{EncoderPipeline, Ended, NextFrame};
use crate::media::{self, AudioSpec, MediaError};
use crate::sessions::Session;
use wolf_protocol::audio::{AudioPacketizer, SURROUND_CHANNELS};

/// `x-nv-general.featureFlags` bit: the client wants encrypted audio.
pub const FEATURE_AUDIO_ENCRYPTION: u32 = 0x20;

pub fn spawn(
    streams: &Streams,
    session: &Session,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, MediaError> {
    let cfg = session.rtsp.stream.clone().ok_or(MediaError::NoAnnounce)?;
    let server = streams.runners.audio.server();
    let sink = session.streamed_sink().map(|s| (server.as_str(), s.name.as_str()));
    let source = match (&session.lobby, sink) {
        // In a lobby: what the lobby plays.
        (Some(_), Some((server, sink))) => crate::config::sink_monitor_source(server, sink),
        _ => streams
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
    let text = media::render_audio(media::AUDIO_TEMPLATE, &spec)?;
    let encryption = (cfg.feature_flags & FEATURE_AUDIO_ENCRYPTION != 0).then_some((session.rikey, session.rikeyid));
    let live = streams.sessions.live(session.id);
    let carried = live.as_ref().and_then(|l| l.carry().audio.take());
    let packetizer = match carried {
        Some(p) => p,
        None => AudioPacketizer::new(spec.packet_ms, 0x5747_4f4c ^ session.id, encryption)?,
    };
    let socket = streams.audio.socket.try_clone().map_err(|source| MediaError::Socket { what: "audio", source })?;
    let session_id = session.id;
    super::spawn_sender(streams, super::Kind::Audio, session.id, text, None, move |pipeline, metrics, beat| {
        tracing::info!(session = session_id, %addr, encrypted = encryption.is_some(), "audio stream started");
        let mut packetizer = packetizer;
        let ended = send_loop(pipeline, &mut packetizer, &socket, addr, &cancel, metrics, beat);
        if let Some(l) = &live {
            l.carry().audio = Some(packetizer);
        }
        ended
    })
}

fn send_loop(
    pipeline: EncoderPipeline,
    packetizer: &mut AudioPacketizer,
    socket: &std::net::UdpSocket,
    addr: SocketAddr,
    cancel: &CancellationToken,
    metrics: &crate::metrics::Metrics,
    beat: &crate::watchdog::Heartbeat,
) -> Ended {
    while !cancel.is_cancelled() {
        beat.beat();
        let frame = match pipeline.next_frame(Duration::from_millis(100)) {
            NextFrame::Frame(f) => f,
            NextFrame::Idle => continue,
            NextFrame::Ended => break,
        };
        match packetizer.packetize(&frame.data) {
            Ok(packets) => {
                for p in &packets {
                    if send(socket, p, addr) {
                        metrics.audio_packets_sent.inc();
                        metrics.stream_packets_sent.inc();
                    } else {
                        metrics.stream_packets_dropped.inc();
                    }
                }
            }
            Err(e) => {
                metrics.pipeline_errors.inc();
                tracing::warn!(error = %e, "audio packet not sent");
            }
        }
    }
    let ended = pipeline.stop();
    tracing::debug!(?ended, "audio pipeline ended");
    ended
}
