//! What a load run found: serializable for scripts, printable as tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Latencies recorded in microseconds, 1 µs to 10 min, 3 significant digits. (The bounds are
/// constants hdrhistogram accepts; were they refused, nothing would be recorded.)
pub struct Recorder(Option<hdrhistogram::Histogram<u64>>);

impl Recorder {
    pub fn new() -> Recorder {
        Recorder(hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).ok())
    }

    pub fn record(&mut self, d: std::time::Duration) {
        if let Some(h) = &mut self.0 {
            h.saturating_record(d.as_micros().clamp(1, u128::from(u64::MAX)) as u64);
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        if let (Some(h), Some(o)) = (&mut self.0, &other.0) {
            let _ = h.add(o);
        }
    }

    pub fn percentiles(&self) -> Percentiles {
        let Some(h) = &self.0 else { return Percentiles::default() };
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            samples: h.len(),
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// A storm of full handshakes, each followed by one GET.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Storm {
    pub clients: usize,
    pub seconds: f64,
    pub ok: u64,
    /// Failed requests by kind (connect, tls, http, timeout, status_N, xml_status_N).
    pub failed: BTreeMap<String, u64>,
    pub success_rate: f64,
    /// Successful handshake + GET per second.
    pub rate_per_s: f64,
    /// TCP connect to the end of the TLS handshake.
    pub handshake: Percentiles,
    /// TCP connect to the whole reply.
    pub request: Percentiles,
    /// Version, cipher suite and key exchange of the first successful handshake.
    pub tls: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// Requests made: one every 100 ms, 2 s timeout each.
    pub idle: Percentiles,
    pub storm: Percentiles,
    pub unanswered: u64,
    /// `status` values /health gave during the storm.
    pub statuses: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Slowloris {
    /// Idle connections held at once, half sending nothing, half half a ClientHello.
    pub idle_connections: usize,
    /// Loopback source addresses they came from.
    pub idle_sources: usize,
    pub opened: u64,
    pub closed_by_host: u64,
    pub refused: u64,
    /// How long the host let an idle connection live.
    pub idle_lifetime: Percentiles,
    /// The real clients meanwhile.
    pub real: Storm,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Launch {
    pub launches: usize,
    pub ok: u64,
    pub failed: BTreeMap<String, u64>,
    pub success_rate: f64,
    /// /launch request, all started at once (handshake included).
    pub latency: Percentiles,
    pub cancel_failed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamClient {
    pub packets: u64,
    pub frames: u64,
    pub fps: f64,
    pub mbps: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stream {
    pub streams: usize,
    /// The app streamed.
    pub app: u32,
    pub mode: String,
    pub bitrate_kbps: u32,
    /// The clients enabled video encryption (SS_ENC_VIDEO).
    pub encrypted_video: bool,
    pub seconds: f64,
    /// Host latency per frame, encoder out → last packet sent (wolf_video_frame_send_seconds,
    /// quantiles interpolated inside its buckets).
    pub frame_send: Percentiles,
    /// Host CPU (100 = one core) while streaming, divided by the streams.
    pub cpu_percent_per_stream: f64,
    /// Host CPU with no stream, measured just before.
    pub idle_cpu_percent: f64,
    pub clients: Vec<StreamClient>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub wolf_rs: String,
    pub target: String,
    pub started_unix: u64,
    pub elapsed_s: f64,
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake: Option<Storm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowloris: Option<Slowloris>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<Stream>,
    #[serde(skip)]
    started: Option<std::time::Instant>,
}

/// Quantiles of a Prometheus histogram's growth between two scrapes (cumulative `(le, count)`
/// buckets), interpolated linearly inside a bucket as `histogram_quantile` does.
pub fn bucket_percentiles(before: &[(f64, f64)], after: &[(f64, f64)]) -> Percentiles {
    let delta: Vec<(f64, f64)> =
        after.iter().map(|(le, n)| (*le, n - before.iter().find(|(b, _)| b == le).map_or(0.0, |(_, c)| *c))).collect();
    let total = delta.iter().map(|(_, n)| *n).fold(0.0, f64::max);
    let quantile = |q: f64| -> f64 {
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, n) in &delta {
            if *n >= rank && *n > 0.0 {
                // The +Inf bucket has no upper bound: report the last finite one.
                if le.is_infinite() {
                    return lower;
                }
                let inside = n - below;
                let frac = if inside > 0.0 { (rank - below) / inside } else { 1.0 };
                return lower + (le - lower) * frac;
            }
            (lower, below) = (*le, *n);
        }
        lower
    };
    let ms = |q: f64| quantile(q) * 1000.0;
    Percentiles { samples: total as u64, p50_ms: ms(0.5), p95_ms: ms(0.95), p99_ms: ms(0.99), max_ms: ms(1.0) }
}

pub fn rate(ok: u64, failed: &BTreeMap<String, u64>) -> f64 {
    let total = ok + failed.values().sum::<u64>();
    if total == 0 { 0.0 } else { ok as f64 / total as f64 }
}

impl Report {
    pub fn new(target: &str) -> Report {
        Report {
            wolf_rs: env!("CARGO_PKG_VERSION").into(),
            target: target.into(),
            started_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            started: Some(std::time::Instant::now()),
            ..Default::default()
        }
    }

    pub fn finish(&mut self) {
        self.elapsed_s = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    }

    /// Human-readable tables.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "wolf-load against {} ({:.0} s)", self.target, self.elapsed_s);
        let pct = |p: &Percentiles| format!("{:>8.2} {:>8.2} {:>8.2} {:>8.2}", p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms);
        let head = format!("{:<34} {:>8} {:>8} {:>8} {:>8}", "latency (ms)", "p50", "p95", "p99", "max");
        let storm = |o: &mut String, name: &str, s: &Storm| {
            let _ = writeln!(
                o,
                "\n{name}: {} clients, {:.1} s, {} ok, {:.1}/s, success {:.2} %, failures {:?}\n  {}",
                s.clients,
                s.seconds,
                s.ok,
                s.rate_per_s,
                s.success_rate * 100.0,
                s.failed,
                s.tls
            );
            let _ = writeln!(o, "  {head}");
            let _ = writeln!(o, "  {:<34} {}", "handshake", pct(&s.handshake));
            let _ = writeln!(o, "  {:<34} {}", "handshake + GET", pct(&s.request));
        };
        if let Some(s) = &self.handshake {
            storm(&mut o, "handshake storm", s);
        }
        if let Some(h) = &self.health {
            let _ = writeln!(o, "\n/health: unanswered {}, statuses under storm {:?}", h.unanswered, h.statuses);
            let _ = writeln!(o, "  {head}");
            let _ = writeln!(o, "  {:<34} {}", "idle", pct(&h.idle));
            let _ = writeln!(o, "  {:<34} {}", "during the storm", pct(&h.storm));
        }
        if let Some(s) = &self.slowloris {
            let _ = writeln!(
                o,
                "\nslowloris: {} idle connections from {} addresses; opened {}, closed by the host {}, refused {}",
                s.idle_connections, s.idle_sources, s.opened, s.closed_by_host, s.refused
            );
            let _ = writeln!(o, "  {head}");
            let _ = writeln!(o, "  {:<34} {}", "idle connection lifetime", pct(&s.idle_lifetime));
            storm(&mut o, "  real clients meanwhile", &s.real);
        }
        if let Some(l) = &self.launch {
            let _ = writeln!(
                o,
                "\nlaunch: {} at once, {} ok, success {:.2} %, failures {:?}, cancel failures {}",
                l.launches,
                l.ok,
                l.success_rate * 100.0,
                l.failed,
                l.cancel_failed
            );
            let _ = writeln!(o, "  {head}");
            let _ = writeln!(o, "  {:<34} {}", "/launch", pct(&l.latency));
        }
        if let Some(s) = &self.stream {
            let _ = writeln!(
                o,
                "\nstream: {} x app {} {} at {} kbps{} for {:.1} s; host CPU {:.1} % per stream (idle host {:.1} %)",
                s.streams,
                s.app,
                s.mode,
                s.bitrate_kbps,
                if s.encrypted_video { ", video encrypted" } else { "" },
                s.seconds,
                s.cpu_percent_per_stream,
                s.idle_cpu_percent
            );
            let _ = writeln!(o, "  {head}");
            let _ = writeln!(o, "  {:<34} {}", "frame: encoder out -> last packet", pct(&s.frame_send));
            for (i, c) in s.clients.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "  client {i}: {} packets, {} frames, {:.1} fps, {:.2} Mbit/s",
                    c.packets, c.frames, c.fps, c.mbps
                );
            }
        }
        o
    }
}
