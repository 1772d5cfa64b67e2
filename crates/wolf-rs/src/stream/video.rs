//! The video sender thread of a session: pipeline → strip AUD/SEI → packetize with FEC → seal each
//! packet (when the client enabled SS_ENC_VIDEO) → UDP.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Streams, send};
use crate::media::pipeline::{EncoderPipeline, Ended, NextFrame};
use crate::media::{self, MediaError, VideoSpec};
use crate::sessions::Session;
use wolf_protocol::annexb::strip_aud_sei;
use wolf_protocol::rtsp::SS_ENC_VIDEO;
use wolf_protocol::video::{FrameType, Packetizer, VideoParams, VideoSealer};

pub fn spawn(
    streams: &Streams,
    session: &Session,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, MediaError> {
    let cfg = session.rtsp.stream.clone().ok_or(MediaError::NoAnnounce)?;
    let config = &streams.config;
    let app = streams.apps.get(session.app_id);
    let app = app.as_deref();
    // The session's display (its lobby's when it joined one), captured in a child process, unless
    // the app names its own source.
    let streamed = session.streamed_display();
    let capture_it =
        |a: Option<&crate::config::App>| session.lobby.is_some() || a.is_some_and(|a| a.video_source.trim().is_empty());
    let capture = match streamed {
        Some(d) if capture_it(app) => Some(crate::runners::display::CaptureSpec {
            process: streams.runners.process.clone(),
            session_id: session.id,
            display: d.clone(),
            fps: cfg.fps,
            socket: streams.runners.capture_socket(session.id),
        }),
        _ => None,
    };
    let display = streamed.map(|d| d.name());
    let source = match (&capture, app) {
        (Some(c), _) => c.source(),
        (None, Some(a)) => a.video_source_for(display.as_deref(), cfg.fps),
        (None, None) => crate::config::TEST_PATTERN_SOURCE.to_owned(),
    };
    let dir = (!config.video.pipelines_dir.is_empty()).then(|| std::path::PathBuf::from(&config.video.pipelines_dir));
    // The client picks HEVC (bitStreamFormat 1) only when DESCRIBE offered it, i.e. we have one.
    let candidate = match (cfg.video_format, streams.encoder.hevc) {
        (1, Some(hevc)) => hevc,
        _ => streams.encoder.h264,
    };
    let spec = VideoSpec {
        source,
        width: cfg.width,
        height: cfg.height,
        fps: cfg.fps,
        bitrate_kbps: candidate.bitrate_kbps(cfg.bitrate_kbps),
        slices: cfg.slices_per_frame,
    };
    let hevc = candidate.codec == media::Codec::Hevc;
    let text = media::template(&candidate, dir.as_deref()).and_then(|t| media::render(&t, &spec))?;
    let params = VideoParams {
        packet_size: cfg.packet_size,
        fec_percent: config.video.fec_percentage,
        min_parity: cfg.min_fec_packets,
    };
    let live = streams.sessions.live(session.id);
    let carried = live.as_ref().and_then(|l| l.carry().video.take());
    let (packetizer, sealer) = match carried {
        Some(c) => c,
        None => (
            Packetizer::new(params)?,
            // The client already took the 32-byte header off its packetSize; its other bits are not ours.
            (cfg.encryption & SS_ENC_VIDEO != 0).then(|| VideoSealer::new(&session.rikey)).transpose()?,
        ),
    };
    let socket = streams.video.socket.try_clone().map_err(|source| MediaError::Socket { what: "video", source })?;
    let live = streams.sessions.live(session.id);
    let (id, encoder) = (session.id, candidate.name);
    super::spawn_sender(streams, super::Kind::Video, id, text, capture, move |pipeline, metrics, beat| {
        tracing::info!(session = id, %addr, encoder, encrypted = sealer.is_some(), "video stream started");
        let (mut packetizer, mut sealer) = (packetizer, sealer);
        let ended =
            send_loop(pipeline, &mut packetizer, &mut sealer, hevc, &socket, addr, &cancel, metrics, beat, || {
                live.as_ref().is_some_and(|l| l.take_keyframe())
            });
        if let Some(l) = &live {
            l.carry().video = Some((packetizer, sealer));
        }
        ended
    })
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
