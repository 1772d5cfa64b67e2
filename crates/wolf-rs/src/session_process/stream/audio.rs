//! The audio sender thread of a session: Opus pipeline → RTP (+AES-CBC when asked) with 4+2 FEC → UDP.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Senders, send};
use crate::media::MediaError;
use crate::media::pipeline::{EncoderPipeline, Ended, NextFrame};
use crate::session_process::wire::{AudioPlan, Negotiated};
use wolf_protocol::audio::AudioPacketizer;

/// `x-nv-general.featureFlags` bit: the client wants encrypted audio.
pub const FEATURE_AUDIO_ENCRYPTION: u32 = 0x20;

/// Run the audio stream of `plan` to `addr` until cancelled (blocking); `Err` says why it failed.
pub fn run(
    senders: &Senders,
    plan: &AudioPlan,
    negotiated: &Negotiated,
    addr: SocketAddr,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let cfg = &negotiated.announced;
    let encryption =
        (cfg.feature_flags & FEATURE_AUDIO_ENCRYPTION != 0).then_some((negotiated.rikey, negotiated.rikeyid));
    let carried = senders.client.carry().audio.take();
    let mut packetizer = match carried {
        Some(p) => p,
        None => AudioPacketizer::new(plan.packet_ms, 0x5747_4f4c ^ senders.session_id, encryption)
            .map_err(|e| MediaError::from(e).to_string())?,
    };
    let (socket, metrics) = (&senders.audio, &senders.metrics);
    let result = senders.run_pipeline(super::Kind::Audio, plan.pipeline.clone(), None, |pipeline, beat| {
        tracing::info!(%addr, encrypted = encryption.is_some(), "audio stream started");
        send_loop(pipeline, &mut packetizer, socket, addr, cancel, metrics, beat)
    });
    senders.client.carry().audio = Some(packetizer);
    result
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
