//! The host's Prometheus metrics: one registry per host, every metric defined here and nowhere
//! else. Components hold clones of the handles they update (lock-free atomics).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Upper bounds (seconds) of the handshake-duration buckets, 1 ms to 10 s.
pub const HANDSHAKE_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Frame-send buckets (seconds), 50 µs to 250 ms: fine where packetizing and sending one frame
/// normally lands, so quantiles read from them are close.
pub const FRAME_SEND_BUCKETS: [f64; 19] = [
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02,
    0.03, 0.05, 0.1, 0.25,
];
/// Event-loop lag buckets (seconds), 1 ms to 60 s.
pub const LAG_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// Outcomes of a TLS handshake at the gate (the `outcome` label).
pub const HANDSHAKE_OUTCOMES: [&str; 4] = ["ok", "timeout", "rejected", "error"];
/// Outcomes of a pairing attempt (the `outcome` label).
pub const PAIRING_OUTCOMES: [&str; 6] = ["paired", "wrong_pin", "timeout", "banned", "refused", "error"];
/// Why a launch failed (the `reason` label).
pub const LAUNCH_ERRORS: [&str; 10] = [
    "bad_request",
    "unknown_app",
    "already_running",
    "store",
    "runner",
    "display",
    "audio",
    "draining",
    "session_process",
    "plain_rtsp",
];
/// Why an input event was not injected (`wolf_input_dropped_total{reason}`): the session has no
/// display, its injector's queue was full, its display could not be reached, the kind is not
/// injected (gamepads, touch, pen), or the packet did not parse.
pub const INPUT_DROP_REASONS: [&str; 5] =
    ["no_display", "queue_full", "display_unavailable", "unsupported", "malformed"];
/// Outcomes of the start-up reconcile pass (the `result` label).
pub const RECONCILE_RESULTS: [&str; 3] = ["adopted", "cleaned", "orphan_removed"];

/// A raw video frame dropped by the leaky queue in front of the encoder while the encoder or sender is behind
/// (nothing to repair).
pub const DROP_ENCODER_QUEUE: &str = "encoder_queue";
/// An encoded frame the sender thread did not take within `media::pipeline::HANDOFF_WAIT`, and the frames discarded
/// after it until the IDR that was forced.
pub const DROP_HANDOFF: &str = "handoff";
/// An encoded frame the sender thread could not packetize, and the frames discarded after it until the forced IDR.
pub const DROP_SENDER: &str = "sender";
/// Where a video frame was dropped on the host (the `where` label of `wolf_video_frames_dropped_total`).
pub const VIDEO_DROP_POINTS: [&str; 3] = [DROP_ENCODER_QUEUE, DROP_HANDOFF, DROP_SENDER];

/// What the TLS handshake gate records.
pub struct GateStats {
    pub outcomes: IntCounterVec,
    pub duration: Histogram,
    /// Connections past accept and not yet through (or out of) their handshake.
    pub pending: IntGauge,
    /// Connections waiting for a permit.
    pub waiting: IntGauge,
    /// Permits held by handshakes doing crypto.
    pub in_use: IntGauge,
    /// When the gate last turned a connection away (ms since the Unix epoch; 0: never).
    last_rejected_ms: AtomicU64,
}

impl GateStats {
    pub fn count(&self, outcome: &str) -> u64 {
        self.outcomes.with_label_values(&[outcome]).get()
    }

    pub fn record(&self, outcome: &str, secs: f64) {
        self.count_only(outcome);
        self.duration.observe(secs);
    }

    pub fn count_only(&self, outcome: &str) {
        self.outcomes.with_label_values(&[outcome]).inc();
        if outcome == "rejected" {
            self.last_rejected_ms.store(unix_ms(), Ordering::Relaxed);
        }
    }

    /// Has the gate turned a connection away within `window_ms`?
    pub fn rejected_within(&self, window_ms: u64) -> bool {
        let last = self.last_rejected_ms.load(Ordering::Relaxed);
        last != 0 && unix_ms().saturating_sub(last) <= window_ms
    }
}

/// A counter's value, by the metric's name and label value (empty for none).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Count {
    pub name: String,
    pub label: String,
    pub value: u64,
}

/// What a session process counted, cumulative: its stream counters, and its frame-send histogram
/// as cumulative bucket counts and the sum of seconds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamFigures {
    pub counts: Vec<Count>,
    pub frame_send: (Vec<u64>, f64),
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub struct Metrics {
    registry: Registry,
    pub gate: Arc<GateStats>,
    pub active_sessions: IntGauge,
    pub displays: IntGauge,
    pub audio_sinks: IntGauge,
    pub sessions_created: IntCounter,
    pub sessions_ended: IntCounterVec,
    pub session_creation_errors: IntCounterVec,
    pub pairing_attempts: IntCounterVec,
    pub cpu_usage_percent: Gauge,
    pub memory_usage_bytes: IntGauge,
    pub event_loop_lag: Histogram,
    pub watchdog_warnings: IntCounter,
    pub last_exit_by_watchdog: IntGauge,
    /// As the supervisor tells its control plane at each start.
    pub control_plane_restarts: IntGauge,
    pub control_plane_crash_loops: IntGauge,
    pub encoder_frames: IntCounter,
    pub pipeline_errors: IntCounter,
    pub video_frames_sent: IntCounter,
    pub video_frames_dropped: IntCounterVec,
    pub video_frame_send: Histogram,
    pub audio_packets_sent: IntCounter,
    pub stream_packets_sent: IntCounter,
    pub stream_packets_dropped: IntCounter,
    pub streams_started: IntCounter,
    pub control_messages: IntCounterVec,
    pub input_events: IntCounterVec,
    pub input_dropped: IntCounterVec,
    pub api_events_dropped: IntCounterVec,
    pub session_store_corrupt: IntCounter,
    pub session_store_errors: IntCounter,
    pub sessions_reconciled: IntCounterVec,
    /// Each session process's CPU seconds and resident memory, by session id.
    pub session_cpu: prometheus::GaugeVec,
    pub session_memory: IntGaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
    // Every known label value is exported from the start, at 0.
    for v in values {
        c.with_label_values(&[*v]);
    }
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Arc<Metrics>> {
        let r = Registry::new();
        let gate = GateStats {
            outcomes: counter_vec(
                &r,
                "wolf_ssl_handshakes_total",
                "TLS handshakes on the HTTPS port by outcome (rejected: turned away by a cap or the permit wait)",
                "outcome",
                &HANDSHAKE_OUTCOMES,
            )?,
            duration: histogram(
                &r,
                "wolf_ssl_handshake_duration_seconds",
                "Time from accept to the end of the TLS handshake, any outcome",
                &HANDSHAKE_BUCKETS,
            )?,
            pending: gauge(
                &r,
                "wolf_ssl_handshake_pending",
                "Connections accepted and not yet through their handshake",
            )?,
            waiting: gauge(&r, "wolf_ssl_handshake_waiting", "Handshakes waiting for a permit")?,
            in_use: gauge(&r, "wolf_ssl_handshake_permits_in_use", "Handshake permits held (crypto in progress)")?,
            last_rejected_ms: AtomicU64::new(0),
        };
        let build = IntGaugeVec::new(Opts::new("wolf_build_info", "Always 1; the version in a label"), &["version"])?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        r.register(Box::new(build))?;
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let cpu = Gauge::new(
            "wolf_cpu_usage_percent",
            "CPU used by the process over the last watchdog interval (100 = one core)",
        )?;
        r.register(Box::new(cpu.clone()))?;
        Ok(Arc::new(Metrics {
            gate: Arc::new(gate),
            active_sessions: gauge(&r, "wolf_active_sessions", "Sessions launched and not ended")?,
            displays: gauge(&r, "wolf_displays", "Virtual displays the host's sessions own")?,
            audio_sinks: gauge(&r, "wolf_audio_sinks", "Audio sinks the host's sessions own")?,
            sessions_created: counter(&r, "wolf_sessions_created_total", "Sessions launched")?,
            sessions_ended: counter_vec(
                &r,
                "wolf_sessions_ended_total",
                "Sessions ended, by reason (cancelled, app_exited, idle, stream_failed, shutdown, display_lost, audio_lost)",
                "reason",
                &crate::commands::EndReason::ALL.map(crate::commands::EndReason::as_str),
            )?,
            session_creation_errors: counter_vec(
                &r,
                "wolf_session_creation_errors_total",
                "Launches that failed, by reason",
                "reason",
                &LAUNCH_ERRORS,
            )?,
            pairing_attempts: counter_vec(
                &r,
                "wolf_pairing_attempts_total",
                "Pairing attempts by outcome",
                "outcome",
                &PAIRING_OUTCOMES,
            )?,
            cpu_usage_percent: cpu,
            memory_usage_bytes: gauge(&r, "wolf_memory_usage_bytes", "Resident memory of the process")?,
            event_loop_lag: histogram(
                &r,
                "wolf_event_loop_lag_seconds",
                "Time the async runtime took to run the watchdog's ping",
                &LAG_BUCKETS,
            )?,
            watchdog_warnings: counter(
                &r,
                "wolf_watchdog_warnings_total",
                "Times the event loop or a watched thread was slower than watchdog.warn_after_ms",
            )?,
            last_exit_by_watchdog: gauge(
                &r,
                "wolf_last_exit_by_watchdog",
                "1 when the previous run of this host was ended by the watchdog (its marker was found at start)",
            )?,
            control_plane_restarts: gauge(
                &r,
                "wolf_control_plane_restarts",
                "Times the supervisor started the control plane again (since the supervisor started)",
            )?,
            control_plane_crash_loops: gauge(
                &r,
                "wolf_control_plane_crash_loop_pauses",
                "Crash-loop pauses the supervisor made before starting the control plane again",
            )?,
            encoder_frames: counter(&r, "wolf_encoder_frames_total", "Frames out of the video and audio encoders")?,
            pipeline_errors: counter(&r, "wolf_pipeline_errors_total", "Streams ended or refused by a pipeline error")?,
            video_frames_sent: counter(&r, "wolf_video_frames_sent_total", "Video frames packetized and sent")?,
            video_frames_dropped: counter_vec(
                &r,
                "wolf_video_frames_dropped_total",
                "Video frames dropped on the host, by where: raw before the encoder (encoder_queue), or encoded \
                 (handoff, sender; each followed by a forced IDR, the frames discarded until it counted too)",
                "where",
                &VIDEO_DROP_POINTS,
            )?,
            video_frame_send: histogram(
                &r,
                "wolf_video_frame_send_seconds",
                "Host latency of a video frame: out of the encoder to its last packet sent",
                &FRAME_SEND_BUCKETS,
            )?,
            audio_packets_sent: counter(&r, "wolf_audio_packets_sent_total", "Audio packets sent")?,
            stream_packets_sent: counter(&r, "wolf_stream_packets_sent_total", "RTP packets sent, video and audio")?,
            stream_packets_dropped: counter(
                &r,
                "wolf_stream_packets_dropped_total",
                "RTP packets the socket would not take",
            )?,
            streams_started: counter(&r, "wolf_streams_started_total", "Video and audio streams started")?,
            control_messages: counter_vec(
                &r,
                "wolf_control_messages_total",
                "Control-channel events from clients by kind (connected and refused are connects; \
                 unknown_connect: ENet connect datagrams naming no session, dropped before ENet)",
                "kind",
                &[
                    "connected",
                    "refused",
                    "unknown_connect",
                    "ping",
                    "idr_request",
                    "loss_stats",
                    "input",
                    "malformed",
                    "undecryptable",
                    "other",
                ],
            )?,
            input_events: counter_vec(
                &r,
                "wolf_input_events_total",
                "Input events from clients' control channels, by kind",
                "kind",
                &wolf_protocol::input::InputEvent::KINDS,
            )?,
            input_dropped: counter_vec(
                &r,
                "wolf_input_dropped_total",
                "Input events not injected, by reason",
                "reason",
                &INPUT_DROP_REASONS,
            )?,
            api_events_dropped: counter_vec(
                &r,
                "wolf_api_events_dropped_total",
                "Events an API subscriber did not get, by reason (slow_subscriber: it read too slowly)",
                "reason",
                &["slow_subscriber"],
            )?,
            session_store_corrupt: counter(
                &r,
                "wolf_session_store_corrupt_total",
                "Sessions files found corrupt at start and moved aside",
            )?,
            session_store_errors: counter(&r, "wolf_session_store_errors_total", "Failed writes of the sessions file")?,
            sessions_reconciled: counter_vec(
                &r,
                "wolf_sessions_reconciled_total",
                "Start-up reconcile: saved sessions adopted or cleaned up, orphan containers removed",
                "result",
                &RECONCILE_RESULTS,
            )?,
            session_cpu: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "wolf_session_process_cpu_seconds",
                        "CPU time a session's process used (user + system, its display captures included)",
                    ),
                    &["session"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            session_memory: {
                let g = IntGaugeVec::new(
                    Opts::new("wolf_session_process_resident_bytes", "Resident memory of a session's process"),
                    &["session"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            registry: r,
        }))
    }

    pub fn pairing(&self, outcome: &str) {
        self.pairing_attempts.with_label_values(&[outcome]).inc();
    }

    pub fn launch_failed(&self, reason: &str) {
        self.session_creation_errors.with_label_values(&[reason]).inc();
    }

    /// What session `id`'s process reported of its resources.
    pub fn session_process(&self, id: u32, cpu_seconds: f64, rss_bytes: u64) {
        let label = id.to_string();
        self.session_cpu.with_label_values(&[label.as_str()]).set(cpu_seconds);
        self.session_memory.with_label_values(&[label.as_str()]).set(rss_bytes as i64);
    }

    /// Session `id`'s process is gone: its figures go too.
    pub fn forget_session_process(&self, id: u32) {
        let label = id.to_string();
        let _ = self.session_cpu.remove_label_values(&[label.as_str()]);
        let _ = self.session_memory.remove_label_values(&[label.as_str()]);
    }

    /// A stream counter by its name and label value (empty for none): the metrics a session
    /// process counts and its control plane adds up.
    fn stream_counter(&self, name: &str, label: &str) -> Option<IntCounter> {
        let vec = |v: &IntCounterVec| v.get_metric_with_label_values(&[label]).ok();
        match name {
            "wolf_encoder_frames_total" => Some(self.encoder_frames.clone()),
            "wolf_pipeline_errors_total" => Some(self.pipeline_errors.clone()),
            "wolf_video_frames_sent_total" => Some(self.video_frames_sent.clone()),
            "wolf_audio_packets_sent_total" => Some(self.audio_packets_sent.clone()),
            "wolf_stream_packets_sent_total" => Some(self.stream_packets_sent.clone()),
            "wolf_stream_packets_dropped_total" => Some(self.stream_packets_dropped.clone()),
            "wolf_streams_started_total" => Some(self.streams_started.clone()),
            "wolf_video_frames_dropped_total" => vec(&self.video_frames_dropped),
            "wolf_control_messages_total" => vec(&self.control_messages),
            "wolf_input_events_total" => vec(&self.input_events),
            "wolf_input_dropped_total" => vec(&self.input_dropped),
            _ => None,
        }
    }

    /// This process's stream counters (a session process's, for its report), and its frame-send
    /// histogram as cumulative bucket counts and the sum.
    pub fn stream_counts(&self) -> StreamFigures {
        let mut counts = Vec::new();
        let mut hist = (Vec::new(), 0.0);
        for family in self.registry.gather() {
            let name = family.name();
            if name == "wolf_video_frame_send_seconds" {
                if let Some(h) = family.get_metric().first().map(|m| m.get_histogram()) {
                    hist = (h.get_bucket().iter().map(|b| b.cumulative_count()).collect(), h.get_sample_sum());
                }
                continue;
            }
            for m in family.get_metric() {
                let label = m.get_label().first().map(|l| l.value().to_owned()).unwrap_or_default();
                if self.stream_counter(name, &label).is_none() {
                    continue;
                }
                let value = m.get_counter().value() as u64;
                counts.push(Count { name: name.to_owned(), label, value });
            }
        }
        StreamFigures { counts, frame_send: hist }
    }

    /// Add what a session process counted since its `before` report (none: since it started).
    /// A count lower than before is a new process: all of it is new.
    pub fn add_stream_counts(&self, before: Option<&StreamFigures>, now: &StreamFigures) {
        for c in &now.counts {
            let was = before
                .and_then(|b| b.counts.iter().find(|p| p.name == c.name && p.label == c.label))
                .map_or(0, |p| p.value);
            let delta = if c.value >= was { c.value - was } else { c.value };
            if delta > 0
                && let Some(counter) = self.stream_counter(&c.name, &c.label)
            {
                counter.inc_by(delta);
            }
        }
        // Each new observation lands in its own bucket again (at the bucket's bound), so the
        // quantiles read from the buckets are the session process's.
        let (cum, _) = &now.frame_send;
        let old = before.map(|b| b.frame_send.0.as_slice()).unwrap_or(&[]);
        let fresh = |i: usize| -> u64 {
            let here = |v: &[u64]| {
                let c = v.get(i).copied().unwrap_or(0);
                let below = if i == 0 { 0 } else { v.get(i - 1).copied().unwrap_or(0) };
                c.saturating_sub(below)
            };
            let (n, o) = (here(cum), here(old));
            if n >= o { n - o } else { n }
        };
        for (i, bound) in FRAME_SEND_BUCKETS.iter().enumerate() {
            for _ in 0..fresh(i).min(100_000) {
                self.video_frame_send.observe(*bound);
            }
        }
    }

    /// The exposition text. Reads /proc for the process metrics: call it off the async workers.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// CPU and memory of this process, sampled from /proc (blocking, cheap).
pub struct ProcSampler {
    last: Option<(std::time::Instant, u64)>,
}

impl ProcSampler {
    pub fn new() -> ProcSampler {
        ProcSampler { last: None }
    }

    pub fn sample(&mut self, m: &Metrics) {
        let Ok(me) = procfs::process::Process::myself() else { return };
        if let Ok(stat) = me.stat() {
            let ticks = stat.utime + stat.stime;
            let now = std::time::Instant::now();
            if let Some((then, before)) = self.last {
                let secs = now.duration_since(then).as_secs_f64();
                let tps = procfs::ticks_per_second() as f64;
                if secs > 0.0 && tps > 0.0 {
                    m.cpu_usage_percent.set(ticks.saturating_sub(before) as f64 / tps / secs * 100.0);
                }
            }
            self.last = Some((now, ticks));
            let page = procfs::page_size();
            m.memory_usage_bytes.set((stat.rss * page) as i64);
        }
    }
}

impl Default for ProcSampler {
    fn default() -> Self {
        Self::new()
    }
}
