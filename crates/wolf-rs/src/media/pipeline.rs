//! An encoder pipeline (video or audio) on its own thread: built from text, frames out of an appsink into a bounded
//! channel, the bus watched, keyframes forced by message. Nothing else ever touches the pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::MediaError;
use crate::watchdog::{Heartbeat, Heartbeats};

/// One encoded access unit (Annex B).
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    /// Presentation time in 90 kHz units.
    pub pts_90k: u32,
    pub keyframe: bool,
    /// When the appsink handed it over (host latency is measured from here).
    pub produced: Instant,
}

/// What waiting for a frame gave.
pub enum NextFrame {
    Frame(EncodedFrame),
    /// Nothing yet; the pipeline runs.
    Idle,
    /// The pipeline ended (EOS or error): stop and collect how.
    Ended,
}

enum Control {
    ForceKeyframe,
    Stop,
}

/// How the pipeline thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Stopped,
    Eos,
    Error(String),
}

/// Counters the pipeline thread updates.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub frames: AtomicU64,
    /// Frames dropped because the consumer was behind.
    pub dropped: AtomicU64,
}

/// How a pipeline reports to the host. The default reports nowhere (tests, one-off pipelines).
#[derive(Clone, Default)]
pub struct Reporting {
    /// Counts every encoded frame, across pipelines.
    pub frames: Option<prometheus::IntCounter>,
    /// The pipeline thread beats for the watchdog under this name while it runs.
    pub heartbeat: Option<(Arc<Heartbeats>, String)>,
}

pub struct EncoderPipeline {
    ctl: std_mpsc::Sender<Control>,
    thread: Option<JoinHandle<Ended>>,
    /// Encoded frames, for the one sender thread that owns this pipeline.
    pub frames: std_mpsc::Receiver<EncodedFrame>,
    pub stats: Arc<PipelineStats>,
}

/// How long building and starting a pipeline may take before it is an error.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames buffered between the encoder and the sender; older ones are dropped beyond it.
const FRAME_QUEUE: usize = 8;

fn clock_to_90k(t: Option<gst::ClockTime>) -> u32 {
    t.map_or(0, |t| (t.nseconds() as u128 * 9 / 100_000) as u32)
}

impl EncoderPipeline {
    /// Build and start `description` (gst-launch syntax ending in `appsink name=sink`) on a new
    /// thread. Errors in the description are returned here.
    pub fn start(description: String, reporting: Reporting) -> Result<EncoderPipeline, MediaError> {
        super::init()?;
        let (ctl_tx, ctl_rx) = std_mpsc::channel();
        let (frame_tx, frame_rx) = std_mpsc::sync_channel(FRAME_QUEUE);
        let (ack_tx, ack_rx) = std_mpsc::sync_channel(1);
        let stats = Arc::new(PipelineStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("gst-pipeline".into())
            .spawn(move || {
                let beat = reporting.heartbeat.map(|(beats, name)| beats.register("pipeline", name));
                run(description, ctl_rx, frame_tx, ack_tx, thread_stats, reporting.frames, beat.as_ref())
            })
            .map_err(|e| MediaError::Pipeline(format!("spawning the pipeline thread: {e}")))?;
        match ack_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => Ok(EncoderPipeline { ctl: ctl_tx, thread: Some(thread), frames: frame_rx, stats }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = ctl_tx.send(Control::Stop);
                Err(MediaError::Pipeline("the pipeline did not start in time".into()))
            }
        }
    }

    /// Ask the encoder for an IDR frame (with SPS/PPS) as soon as possible.
    pub fn force_keyframe(&self) {
        let _ = self.ctl.send(Control::ForceKeyframe);
    }

    /// Wait up to `wait` for the next frame.
    pub fn next_frame(&self, wait: Duration) -> NextFrame {
        match self.frames.recv_timeout(wait) {
            Ok(f) => NextFrame::Frame(f),
            Err(std_mpsc::RecvTimeoutError::Timeout) if !self.has_ended() => NextFrame::Idle,
            Err(_) => NextFrame::Ended,
        }
    }

    /// Has the pipeline thread ended on its own (EOS or error)?
    pub fn has_ended(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stop the pipeline and join its thread.
    pub fn stop(mut self) -> Ended {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Ended {
        let _ = self.ctl.send(Control::Stop);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(e)) => e,
            Some(Err(_)) => Ended::Error("the pipeline thread panicked".into()),
            None => Ended::Stopped,
        }
    }
}

impl Drop for EncoderPipeline {
    /// No thread is ever left behind.
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

fn build(
    description: &str,
    frame_tx: std_mpsc::SyncSender<EncodedFrame>,
    stats: Arc<PipelineStats>,
    frames: Option<prometheus::IntCounter>,
) -> Result<gst::Pipeline, MediaError> {
    let element = gst::parse::launch(description).map_err(|e| MediaError::Pipeline(format!("parse: {e}")))?;
    let pipeline = element
        .downcast::<gst::Pipeline>()
        .map_err(|_| MediaError::Pipeline("the description is not a pipeline".into()))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| MediaError::Pipeline("no appsink named \"sink\"".into()))?;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                let frame = EncodedFrame {
                    data: map.as_slice().to_vec(),
                    pts_90k: clock_to_90k(buffer.pts()),
                    keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    produced: Instant::now(),
                };
                stats.frames.fetch_add(1, Ordering::Relaxed);
                if let Some(f) = &frames {
                    f.inc();
                }
                if frame_tx.try_send(frame).is_err() {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).map_err(|e| MediaError::Pipeline(format!("cannot start: {e}")))?;
    Ok(pipeline)
}

fn run(
    description: String,
    ctl: std_mpsc::Receiver<Control>,
    frame_tx: std_mpsc::SyncSender<EncodedFrame>,
    ack: std_mpsc::SyncSender<Result<(), MediaError>>,
    stats: Arc<PipelineStats>,
    frames: Option<prometheus::IntCounter>,
    beat: Option<&Heartbeat>,
) -> Ended {
    let pipeline = match build(&description, frame_tx, stats, frames) {
        Ok(p) => p,
        Err(e) => {
            let _ = ack.send(Err(e.clone()));
            return Ended::Error(e.to_string());
        }
    };
    let Some(bus) = pipeline.bus() else {
        let _ = pipeline.set_state(gst::State::Null);
        let _ = ack.send(Err(MediaError::Pipeline("pipeline has no bus".into())));
        return Ended::Error("no bus".into());
    };
    let _ = ack.send(Ok(()));
    let ended = 'outer: loop {
        if let Some(b) = beat {
            b.beat();
        }
        match ctl.recv_timeout(Duration::from_millis(20)) {
            Ok(Control::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => break Ended::Stopped,
            Ok(Control::ForceKeyframe) => {
                let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
                if !pipeline.send_event(event) {
                    tracing::warn!("the encoder did not accept a force-keyframe event");
                }
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
        }
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    let src = e.src().map(|s| s.path_string().to_string()).unwrap_or_default();
                    break 'outer Ended::Error(format!("{src}: {}", e.error()));
                }
                gst::MessageView::Eos(_) => break 'outer Ended::Eos,
                _ => {}
            }
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    ended
}
