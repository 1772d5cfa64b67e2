//! The video sender thread of a session: pipeline → strip AUD/SEI → packetize with FEC → seal each
//! packet (when the client enabled SS_ENC_VIDEO) → UDP.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Senders, send};
use crate::media::MediaError;
use crate::media::pipeline::{EncoderPipeline, Ended, NextFrame};
use crate::session_process::wire::{Negotiated, VideoPlan};
use wolf_protocol::annexb::strip_aud_sei;
use wolf_protocol::rtsp::SS_ENC_VIDEO;
use wolf_protocol::video::{FrameType, Packetizer, VideoParams, VideoSealer};

/// Run the video stream of `plan` to `addr` until cancelled (blocking); `Err` says why it failed.
pub fn run(
    senders: &Senders,
    plan: &VideoPlan,
    negotiated: &Negotiated,
    addr: SocketAddr,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let cfg = &negotiated.announced;
    let params =
        VideoParams { packet_size: cfg.packet_size, fec_percent: plan.fec_percent, min_parity: cfg.min_fec_packets };
    let carried = senders.client.carry().video.take();
    let (mut packetizer, mut sealer) = match carried {
        Some(c) => c,
        None => (
            Packetizer::new(params).map_err(|e| MediaError::from(e).to_string())?,
            // The client already took the 32-byte header off its packetSize; its other bits are not ours.
            (cfg.encryption & SS_ENC_VIDEO != 0)
                .then(|| VideoSealer::new(&negotiated.rikey))
                .transpose()
                .map_err(|e| MediaError::from(e).to_string())?,
        ),
    };
    let capture = plan.capture.as_ref().map(|c| crate::runners::display::CaptureSpec {
        process: senders.process.clone(),
        session_id: senders.session_id,
        display: c.display.clone(),
        fps: c.fps,
        socket: c.socket.clone(),
    });
    let (socket, metrics, client, hevc) = (&senders.video, &senders.metrics, &senders.client, plan.hevc);
    let encoder = plan.encoder.as_str();
    let result = senders.run_pipeline(super::Kind::Video, plan.pipeline.clone(), capture, |pipeline, beat| {
        tracing::info!(%addr, encoder, encrypted = sealer.is_some(), "video stream started");
        send_loop(pipeline, &mut packetizer, &mut sealer, hevc, socket, addr, cancel, metrics, beat, || {
            client.take_keyframe()
        })
    });
    client.carry().video = Some((packetizer, sealer));
    result
}

#[allow(clippy::too_many_arguments)]
fn send_loop(
    pipeline: EncoderPipeline,
    packetizer: &mut Packetizer,
    sealer: &mut Option<VideoSealer>,
    hevc: bool,
    socket: &std::net::UdpSocket,
    addr: SocketAddr,
    cancel: &CancellationToken,
    metrics: &crate::metrics::Metrics,
    beat: &crate::watchdog::Heartbeat,
    keyframe_asked: impl Fn() -> bool,
) -> Ended {
    while !cancel.is_cancelled() {
        beat.beat();
        if keyframe_asked() {
            pipeline.force_keyframe();
        }
        let frame = match pipeline.next_frame(Duration::from_millis(100)) {
            NextFrame::Frame(f) => f,
            NextFrame::Idle => continue,
            NextFrame::Ended => break,
        };
        let kind = if frame.keyframe { FrameType::Idr } else { FrameType::P };
        let data = strip_aud_sei(&frame.data, hevc);
        let latency = (frame.produced.elapsed().as_micros() / 100).min(u16::MAX as u128) as u16;
        let packets = match packetizer.packetize(&data, kind, frame.pts_90k, latency) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "frame not sent");
                metrics.pipeline_errors.inc();
                // The frame index did not advance, so the client would not notice: an IDR must follow.
                pipeline.frame_lost();
                continue;
            }
        };
        for p in &packets {
            let sealed = match sealer.as_mut().map(|s| s.seal(p)) {
                None => None,
                Some(Ok(s)) => Some(s),
                // Never sent in the clear to a client that asked for it sealed.
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "video packet not sealed, not sent");
                    metrics.stream_packets_dropped.inc();
                    continue;
                }
            };
            let datagram = sealed.as_deref().unwrap_or(p);
            let counter = if send(socket, datagram, addr) {
                &metrics.stream_packets_sent
            } else {
                &metrics.stream_packets_dropped
            };
            counter.inc();
        }
        metrics.video_frames_sent.inc();
        metrics.video_frame_send.observe(frame.produced.elapsed().as_secs_f64());
    }
    let ended = pipeline.stop();
    tracing::debug!(?ended, "video pipeline ended");
    ended
}
