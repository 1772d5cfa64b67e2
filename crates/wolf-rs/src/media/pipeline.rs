//! An encoder pipeline (video or audio) on its own thread: built from text, frames out of an appsink into a bounded
//! hand-off, the bus watched, keyframes forced by message. Nothing else ever touches the pipeline.
//!
//! Video never loses an encoded frame silently. Under backpressure raw frames are dropped, by a leaky queue in front
//! of the encoder (`encoder_queue`): the hand-off holds the encoder back rather than drop. An encoded frame lost all
//! the same (the sender took none for [`HANDOFF_WAIT`]: `handoff`; the sender could not send it: `sender`) is
//! counted, an IDR is forced, and the frames up to that IDR are discarded and counted too, so no P-frame that
//! refers to a lost frame reaches the client.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::MediaError;
use crate::metrics::{DROP_ENCODER_QUEUE, DROP_HANDOFF, DROP_SENDER};
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
    Error(Fault),
}

/// Why a pipeline failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// It never ran (its starter was told why).
    #[error("the pipeline did not start")]
    NotStarted,
    #[error("the pipeline thread panicked")]
    Panicked,
    /// An element posted an error.
    #[error("{element}: {error}")]
    Element { element: String, error: gst::glib::Error },
}

/// Counters the pipeline updates.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub frames: AtomicU64,
    /// Encoded frames lost on the host (video: each also in `wolf_video_frames_dropped_total`; audio: packets the
    /// sender was too far behind to take).
    pub dropped: AtomicU64,
    /// Raw video frames dropped by a leaky queue before they were encoded.
    pub raw_dropped: AtomicU64,
}

/// How a pipeline reports to the host. The default reports nowhere (tests, one-off pipelines).
#[derive(Clone, Default)]
pub struct Reporting {
    /// Counts every encoded frame, across pipelines.
    pub frames: Option<prometheus::IntCounter>,
    /// `wolf_video_frames_dropped_total`, by `where` (video pipelines only).
    pub video_drops: Option<prometheus::IntCounterVec>,
    /// The pipeline thread beats for the watchdog under this name while it runs.
    pub heartbeat: Option<(Arc<Heartbeats>, String)>,
}

/// What happens to an encoded frame when the sender thread is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Audio: a full hand-off drops the new packet (counted in [`PipelineStats::dropped`]); the encoder is never held
    /// up. Nothing refers to a lost Opus packet, so nothing more is needed.
    DropNewest,
    /// Video: a full hand-off holds the encoder back up to `wait` (backpressure, down to the leaky raw queue), then
    /// drops the frame, counts it and forces an IDR, discarding the frames before it.
    Backpressure { wait: Duration },
}

impl Handoff {
    /// What video streams use.
    pub const VIDEO: Handoff = Handoff::Backpressure { wait: HANDOFF_WAIT };
}

pub struct EncoderPipeline {
    ctl: std_mpsc::Sender<Control>,
    thread: Option<JoinHandle<Ended>>,
    /// Encoded frames, for the one sender thread that owns this pipeline.
    queue: Arc<FrameQueue>,
    /// Frames lost by the sender: nothing but an IDR goes out after one.
    sender_gate: Mutex<IdrGate>,
    drops: Drops,
    pub stats: Arc<PipelineStats>,
}

/// How long building and starting a pipeline may take before it is an error.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames buffered between the encoder and the sender.
const FRAME_QUEUE: usize = 8;
/// How long a full hand-off holds the encoder back before an encoded frame is dropped: far beyond a normal
/// sender hiccup (frames that late are stale anyway), short enough that a stuck sender never wedges the pipeline.
pub const HANDOFF_WAIT: Duration = Duration::from_millis(500);
/// While frames are discarded until an IDR, ask for it again this often (a request may be lost, and the stream
/// must not stay frozen).
const IDR_ASK_AGAIN: Duration = Duration::from_millis(500);

/// The bounded queue from the appsink's streaming thread to the sender thread.
#[derive(Default)]
struct FrameQueue {
    state: Mutex<QueueState>,
    /// A frame was queued, or the queue closed.
    filled: Condvar,
    /// A frame was taken, or the queue closed.
    emptied: Condvar,
}

#[derive(Default)]
struct QueueState {
    frames: VecDeque<EncodedFrame>,
    /// No more frames are taken (the pipeline ended or is stopping); those queued can still be popped.
    closed: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Push {
    Queued,
    Full,
    Closed,
}

enum Pop {
    Frame(EncodedFrame),
    Empty,
    Closed,
}

impl FrameQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `frame`, waiting up to `wait` for room.
    fn push(&self, frame: EncodedFrame, wait: Duration) -> Push {
        let (mut s, _) = self
            .emptied
            .wait_timeout_while(self.lock(), wait, |s| !s.closed && s.frames.len() >= FRAME_QUEUE)
            .unwrap_or_else(PoisonError::into_inner);
        if s.closed {
            return Push::Closed;
        }
        if s.frames.len() >= FRAME_QUEUE {
            return Push::Full;
        }
        s.frames.push_back(frame);
        drop(s);
        self.filled.notify_one();
        Push::Queued
    }

    /// The oldest frame, waiting up to `wait` for one.
    fn pop(&self, wait: Duration) -> Pop {
        let (mut s, _) = self
            .filled
            .wait_timeout_while(self.lock(), wait, |s| !s.closed && s.frames.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        match s.frames.pop_front() {
            Some(f) => {
                drop(s);
                self.emptied.notify_one();
                Pop::Frame(f)
            }
            None if s.closed => Pop::Closed,
            None => Pop::Empty,
        }
    }

    /// Wakes a producer held up by backpressure, so the pipeline can stop.
    fn close(&self) {
        self.lock().closed = true;
        self.filled.notify_all();
        self.emptied.notify_all();
    }
}

/// After a lost frame, lets nothing but an IDR through.
#[derive(Debug, Default)]
struct IdrGate {
    /// Set while waiting for the IDR: when it was last asked for.
    asked: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
enum Gate {
    Pass,
    /// Discard the frame; `ask`: request the IDR again.
    Discard {
        ask: bool,
    },
}

impl IdrGate {
    /// A frame was lost: wait for an IDR (the caller asks for it).
    fn lost(&mut self, now: Instant) {
        self.asked = Some(now);
    }

    fn pass(&mut self, keyframe: bool, now: Instant) -> Gate {
        match self.asked {
            None => Gate::Pass,
            Some(_) if keyframe => {
                self.asked = None;
                Gate::Pass
            }
            Some(t) if now.saturating_duration_since(t) >= IDR_ASK_AGAIN => {
                self.asked = Some(now);
                Gate::Discard { ask: true }
            }
            Some(_) => Gate::Discard { ask: false },
        }
    }
}

/// Counts a dropped frame where it was dropped.
#[derive(Clone)]
struct Drops {
    stats: Arc<PipelineStats>,
    metric: Option<prometheus::IntCounterVec>,
}

impl Drops {
    fn count(&self, at: &str) {
        let stat = if at == DROP_ENCODER_QUEUE { &self.stats.raw_dropped } else { &self.stats.dropped };
        stat.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metric {
            m.with_label_values(&[at]).inc();
        }
    }
}

fn clock_to_90k(t: Option<gst::ClockTime>) -> u32 {
    t.map_or(0, |t| (t.nseconds() as u128 * 9 / 100_000) as u32)
}

impl EncoderPipeline {
    /// Build and start `description` (gst-launch syntax ending in `appsink name=sink`) on a new
    /// thread. Errors in the description are returned here.
    pub fn start(description: String, handoff: Handoff, reporting: Reporting) -> Result<EncoderPipeline, MediaError> {
        super::init()?;
        let (ctl_tx, ctl_rx) = std_mpsc::channel();
        let (ack_tx, ack_rx) = std_mpsc::sync_channel(1);
        let stats = Arc::new(PipelineStats::default());
        let queue = Arc::new(FrameQueue::default());
        let drops = Drops { stats: stats.clone(), metric: reporting.video_drops.clone() };
        let producer = Producer {
            queue: queue.clone(),
            handoff,
            drops: drops.clone(),
            frames: reporting.frames.clone(),
            ctl: ctl_tx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("gst-pipeline".into())
            .spawn(move || {
                let beat = reporting.heartbeat.map(|(beats, name)| beats.register("pipeline", name));
                run(description, ctl_rx, producer, ack_tx, beat.as_ref())
            })
            .map_err(|source| MediaError::Spawn { what: "pipeline", source })?;
        match ack_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => Ok(EncoderPipeline {
                ctl: ctl_tx,
                thread: Some(thread),
                queue,
                sender_gate: Mutex::default(),
                drops,
                stats,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                queue.close();
                let _ = ctl_tx.send(Control::Stop);
                Err(MediaError::StartTimeout)
            }
        }
    }

    /// Ask the encoder for an IDR frame (with SPS/PPS) as soon as possible.
    pub fn force_keyframe(&self) {
        let _ = self.ctl.send(Control::ForceKeyframe);
    }

    /// The sender could not send the frame it was given: count it, force an IDR, and discard every frame before it
    /// (a P-frame after a lost one would not decode).
    pub fn frame_lost(&self) {
        self.drops.count(DROP_SENDER);
        self.sender_gate.lock().unwrap_or_else(PoisonError::into_inner).lost(Instant::now());
        self.force_keyframe();
    }

    /// Wait up to `wait` for the next frame.
    pub fn next_frame(&self, wait: Duration) -> NextFrame {
        let deadline = Instant::now() + wait;
        loop {
            let frame = match self.queue.pop(deadline.saturating_duration_since(Instant::now())) {
                Pop::Frame(f) => f,
                Pop::Closed => return NextFrame::Ended,
                Pop::Empty if self.has_ended() => return NextFrame::Ended,
                Pop::Empty => return NextFrame::Idle,
            };
            let gate =
                self.sender_gate.lock().unwrap_or_else(PoisonError::into_inner).pass(frame.keyframe, Instant::now());
            match gate {
                Gate::Pass => return NextFrame::Frame(frame),
                Gate::Discard { ask } => {
                    self.drops.count(DROP_SENDER);
                    if ask {
                        self.force_keyframe();
                    }
                }
            }
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
        // First release a streaming thread held up by a full hand-off: the pipeline cannot stop under it.
        self.queue.close();
        let _ = self.ctl.send(Control::Stop);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(e)) => e,
            Some(Err(_)) => Ended::Error(Fault::Panicked),
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

/// The appsink's side of the hand-off, on the streaming thread.
struct Producer {
    queue: Arc<FrameQueue>,
    handoff: Handoff,
    drops: Drops,
    frames: Option<prometheus::IntCounter>,
    ctl: std_mpsc::Sender<Control>,
}

impl Producer {
    fn deliver(&self, frame: EncodedFrame, gate: &mut IdrGate) {
        let wait = match self.handoff {
            Handoff::DropNewest => {
                if self.queue.push(frame, Duration::ZERO) == Push::Full {
                    self.drops.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Handoff::Backpressure { wait } => wait,
        };
        let now = Instant::now();
        if let Gate::Discard { ask } = gate.pass(frame.keyframe, now) {
            self.drops.count(DROP_HANDOFF);
            if ask {
                let _ = self.ctl.send(Control::ForceKeyframe);
            }
            return;
        }
        // Blocking here is the backpressure: the encoder waits, and the leaky queue before it drops raw frames.
        if self.queue.push(frame, wait) == Push::Full {
            self.drops.count(DROP_HANDOFF);
            gate.lost(Instant::now());
            let _ = self.ctl.send(Control::ForceKeyframe);
        }
    }
}

fn build(description: &str, producer: Producer) -> Result<gst::Pipeline, MediaError> {
    let element = gst::parse::launch(description).map_err(MediaError::Parse)?;
    let pipeline = element.downcast::<gst::Pipeline>().map_err(|_| MediaError::NotAPipeline)?;
    let sink =
        pipeline.by_name("sink").and_then(|s| s.downcast::<gst_app::AppSink>().ok()).ok_or(MediaError::NoAppsink)?;
    if matches!(producer.handoff, Handoff::Backpressure { .. }) {
        hold_back_encoded_frames(&pipeline, &sink, &producer.drops);
    }
    let stats = producer.drops.stats.clone();
    let mut gate = IdrGate::default();
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
                if let Some(f) = &producer.frames {
                    f.inc();
                }
                producer.deliver(frame, &mut gate);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).map_err(MediaError::CannotStart)?;
    Ok(pipeline)
}

/// Video: the appsink never drops an encoded frame (a user template's `drop=true` is overridden: such a drop could
/// be neither seen nor repaired), and raw frames dropped by a leaky queue are counted.
fn hold_back_encoded_frames(pipeline: &gst::Pipeline, sink: &gst_app::AppSink, drops: &Drops) {
    if sink.is_drop() {
        tracing::warn!("the pipeline's appsink has drop=true: ignored, encoded video frames are never dropped");
        sink.set_drop(false);
    }
    let mut leaky = 0;
    for element in pipeline.iterate_recurse().into_iter().flatten() {
        let is_queue = element.factory().is_some_and(|f| f.name() == "queue");
        let leaks =
            is_queue && element.property_value("leaky").get::<&gst::glib::EnumValue>().is_ok_and(|v| v.nick() != "no");
        if leaks {
            leaky += 1;
            let drops = drops.clone();
            // Emitted each time the full queue has to leak a buffer.
            element.connect("overrun", false, move |_| {
                drops.count(DROP_ENCODER_QUEUE);
                None
            });
        }
    }
    if leaky == 0 {
        tracing::warn!(
            "the video pipeline has no leaky queue (the built-in templates have one before the encoder): a slow \
             sender holds up the source instead of dropping raw frames"
        );
    }
}

fn run(
    description: String,
    ctl: std_mpsc::Receiver<Control>,
    producer: Producer,
    ack: std_mpsc::SyncSender<Result<(), MediaError>>,
    beat: Option<&Heartbeat>,
) -> Ended {
    let queue = producer.queue.clone();
    let ended = run_pipeline(&description, &ctl, producer, &ack, beat, &queue);
    // The sender sees the end once it has taken what is queued.
    queue.close();
    ended
}

fn run_pipeline(
    description: &str,
    ctl: &std_mpsc::Receiver<Control>,
    producer: Producer,
    ack: &std_mpsc::SyncSender<Result<(), MediaError>>,
    beat: Option<&Heartbeat>,
    queue: &FrameQueue,
) -> Ended {
    let pipeline = match build(description, producer) {
        Ok(p) => p,
        Err(e) => {
            // The starter reports why.
            let _ = ack.send(Err(e));
            return Ended::Error(Fault::NotStarted);
        }
    };
    let Some(bus) = pipeline.bus() else {
        queue.close();
        let _ = pipeline.set_state(gst::State::Null);
        let _ = ack.send(Err(MediaError::NoBus));
        return Ended::Error(Fault::NotStarted);
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
                    let element = e.src().map(|s| s.path_string().to_string()).unwrap_or_default();
                    break 'outer Ended::Error(Fault::Element { element, error: e.error() });
                }
                gst::MessageView::Eos(_) => break 'outer Ended::Eos,
                _ => {}
            }
        }
    };
    // A streaming thread held up by a full hand-off would keep the pipeline from stopping.
    queue.close();
    let _ = pipeline.set_state(gst::State::Null);
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(keyframe: bool) -> EncodedFrame {
        EncodedFrame { data: Vec::new(), pts_90k: 0, keyframe, produced: Instant::now() }
    }

    #[test]
    fn after_a_loss_only_an_idr_passes_and_it_is_asked_for_again() {
        let t0 = Instant::now();
        let mut g = IdrGate::default();
        assert_eq!(g.pass(false, t0), Gate::Pass);
        g.lost(t0);
        assert_eq!(g.pass(false, t0), Gate::Discard { ask: false });
        assert_eq!(g.pass(false, t0 + IDR_ASK_AGAIN), Gate::Discard { ask: true });
        assert_eq!(g.pass(false, t0 + IDR_ASK_AGAIN), Gate::Discard { ask: false }, "asked again only once a while");
        assert_eq!(g.pass(true, t0 + IDR_ASK_AGAIN), Gate::Pass);
        assert_eq!(g.pass(false, t0 + IDR_ASK_AGAIN), Gate::Pass, "P-frames after the IDR pass");
    }

    #[test]
    fn the_queue_is_bounded_keeps_order_and_closes() {
        let q = FrameQueue::default();
        for i in 0..FRAME_QUEUE {
            assert_eq!(q.push(frame(i == 0), Duration::ZERO), Push::Queued);
        }
        assert_eq!(q.push(frame(false), Duration::from_millis(1)), Push::Full);
        assert!(matches!(q.pop(Duration::ZERO), Pop::Frame(f) if f.keyframe), "oldest first");
        assert_eq!(q.push(frame(false), Duration::ZERO), Push::Queued, "room again");
        q.close();
        assert_eq!(q.push(frame(false), Duration::ZERO), Push::Closed);
        let left = std::iter::from_fn(|| match q.pop(Duration::ZERO) {
            Pop::Frame(_) => Some(()),
            _ => None,
        });
        assert_eq!(left.count(), FRAME_QUEUE, "what was queued is still taken after close");
        assert!(matches!(q.pop(Duration::from_secs(5)), Pop::Closed), "closed and empty: no wait");
    }

    #[test]
    fn a_producer_held_up_by_a_full_queue_is_released_by_close() {
        let q = Arc::new(FrameQueue::default());
        for _ in 0..FRAME_QUEUE {
            q.push(frame(false), Duration::ZERO);
        }
        let p = q.clone();
        let held = std::thread::spawn(move || p.push(frame(false), Duration::from_secs(600)));
        q.close();
        assert_eq!(held.join().ok(), Some(Push::Closed));
    }
}
