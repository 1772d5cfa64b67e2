//! The watchdog: an OS thread outside the async runtime. It pings the event loop, watches the
//! heartbeats of pipeline threads and accept loops, warns when one is slow, and ends the process
//! with [`EXIT_CODE`] when one hangs, so Docker or systemd restarts it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, ProcSampler};
use crate::status::Health;

/// The process exit code when the watchdog ends a hung host.
pub const EXIT_CODE: i32 = 86;
/// A start-up step (kind `startup`) may block this long at least before the watchdog exits: a
/// cold GStreamer registry scan alone can take seconds.
pub const STARTUP_MIN: Duration = Duration::from_secs(20);
/// The crash marker's file name in the state directory.
pub const MARKER_FILE: &str = "watchdog_exit";

#[derive(Debug, Clone, Copy)]
pub struct WatchdogConfig {
    pub interval: Duration,
    pub warn_after: Duration,
    /// `None`: never exit.
    pub exit_after: Option<Duration>,
}

impl From<&crate::config::Watchdog> for WatchdogConfig {
    fn from(w: &crate::config::Watchdog) -> Self {
        WatchdogConfig {
            interval: Duration::from_millis(w.interval_ms),
            warn_after: Duration::from_millis(w.warn_after_ms),
            exit_after: (w.exit_after_ms > 0).then(|| Duration::from_millis(w.exit_after_ms)),
        }
    }
}

struct Beat {
    name: String,
    kind: &'static str,
    last_ms: AtomicU64,
    /// Fault injection: the thread sleeps until this (ms since the registry's epoch) at its next beat.
    stall_until_ms: AtomicU64,
}

/// Threads and loops that promise to beat regularly while they are registered.
pub struct Heartbeats {
    epoch: Instant,
    next: AtomicU64,
    beats: Mutex<HashMap<u64, Arc<Beat>>>,
}

/// A registration; dropping it unregisters (a thread that ends is not a hung thread).
pub struct Heartbeat {
    registry: Arc<Heartbeats>,
    id: u64,
    beat: Arc<Beat>,
}

impl Heartbeat {
    pub fn beat(&self) {
        let now = self.registry.now_ms();
        let stall = self.beat.stall_until_ms.swap(0, Ordering::Relaxed);
        if stall > now {
            tracing::warn!(thread = %self.beat.name, ms = stall - now, "fault injection: stalling this thread");
            std::thread::sleep(Duration::from_millis(stall - now));
        }
        self.beat.last_ms.store(self.registry.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        lock(&self.registry.beats).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A registered thread that has not beaten for `silent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silent {
    pub name: String,
    pub kind: &'static str,
    pub silent: Duration,
}

impl Heartbeats {
    pub fn new() -> Arc<Heartbeats> {
        Arc::new(Heartbeats { epoch: Instant::now(), next: AtomicU64::new(1), beats: Mutex::new(HashMap::new()) })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Register `name` (of `kind`: "pipeline", "accept", ...) as beating from now on.
    pub fn register(self: &Arc<Self>, kind: &'static str, name: impl Into<String>) -> Heartbeat {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let beat = Arc::new(Beat {
            name: name.into(),
            kind,
            last_ms: AtomicU64::new(self.now_ms()),
            stall_until_ms: AtomicU64::new(0),
        });
        lock(&self.beats).insert(id, beat.clone());
        Heartbeat { registry: self.clone(), id, beat }
    }

    /// The registered threads silent for longer than `threshold`, most silent first.
    pub fn silent(&self, threshold: Duration) -> Vec<Silent> {
        let now = self.now_ms();
        let mut out: Vec<Silent> = lock(&self.beats)
            .values()
            .filter_map(|b| {
                let silent = Duration::from_millis(now.saturating_sub(b.last_ms.load(Ordering::Relaxed)));
                (silent > threshold).then(|| Silent { name: b.name.clone(), kind: b.kind, silent })
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.silent));
        out
    }

    /// Fault injection: the first registered thread of `kind` stalls for `secs` at its next beat.
    /// Returns its name, or `None` when no such thread runs.
    pub fn stall(&self, kind: &str, secs: u64) -> Option<String> {
        let beats = lock(&self.beats);
        let mut of_kind: Vec<(&u64, &Arc<Beat>)> = beats.iter().filter(|(_, b)| b.kind == kind).collect();
        of_kind.sort_by_key(|(id, _)| **id);
        let (_, b) = of_kind.first()?;
        b.stall_until_ms.store(self.now_ms() + secs * 1000, Ordering::Relaxed);
        Some(b.name.clone())
    }

    pub fn count(&self, kind: &str) -> usize {
        lock(&self.beats).values().filter(|b| b.kind == kind).count()
    }
}

/// The one-line file the watchdog writes before it exits. Opened at start-up so that writing it
/// needs no allocation and no lock.
pub struct CrashMarker {
    file: File,
}

impl CrashMarker {
    /// Open (or create) the marker, returning the line a previous exit left in it, and clear it.
    pub fn open(path: &Path) -> std::io::Result<(CrashMarker, Option<String>)> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut &file, &mut text)?;
        let last = text.trim();
        let last = (!last.is_empty()).then(|| last.to_owned());
        file.set_len(0)?;
        file.sync_all()?;
        Ok((CrashMarker { file }, last))
    }

    /// Write the marker line and end the process at once: no destructors, no atexit handlers.
    fn write_and_exit(&self, what: &str, silent_ms: u64) -> ! {
        let mut buf = [0u8; 512];
        let len = {
            let mut w: &mut [u8] = &mut buf;
            let secs = crate::metrics::unix_ms() / 1000;
            // Writing into a fixed buffer does not allocate; a line too long is cut.
            let _ = writeln!(w, "unix_time={secs} code={EXIT_CODE} hung={what} silent_ms={silent_ms}");
            512 - w.len()
        };
        let _ = self.file.write_all_at(&buf[..len], 0);
        let _ = self.file.sync_data();
        // SAFETY: _exit ends the process without running anything else; that is the point.
        unsafe { libc::_exit(EXIT_CODE) }
    }
}

/// Handle to stop the watchdog thread (in-process hosts, e.g. tests).
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the watchdog watches and where it reports.
pub struct Watched {
    /// The runtime it pings.
    pub runtime: tokio::runtime::Handle,
    pub cfg: WatchdogConfig,
    pub health: Arc<Health>,
    pub beats: Arc<Heartbeats>,
    pub metrics: Arc<Metrics>,
    /// Written before an exit; `None` exits without one.
    pub marker: Option<CrashMarker>,
}

impl Watchdog {
    pub fn spawn(watched: Watched) -> std::io::Result<Watchdog> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("watchdog".into()).spawn(move || run(watched, s))?;
        Ok(Watchdog { stop, thread: Some(thread) })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(watched: Watched, stop: Arc<AtomicBool>) {
    let Watched { runtime, cfg, health, beats, metrics, marker } = watched;
    let systemd = std::env::var_os("NOTIFY_SOCKET").is_some();
    // Checks run this often so an exit comes within exit_after + tick.
    let tick = (cfg.interval / 5).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut sampler = ProcSampler::new();
    let (pong_tx, pong_rx) = std::sync::mpsc::channel::<Instant>();
    let mut outstanding: Option<Instant> = None;
    let mut next_ping = Instant::now();
    let mut warned_loop = false;
    let mut warned_threads: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if outstanding.is_none() && now >= next_ping {
            let tx = pong_tx.clone();
            runtime.spawn(async move {
                let _ = tx.send(Instant::now());
            });
            outstanding = Some(now);
            next_ping = now + cfg.interval;
            sampler.sample(&metrics);
        }
        while let Ok(answered) = pong_rx.try_recv() {
            if let Some(sent) = outstanding.take() {
                let lag = answered.saturating_duration_since(sent);
                metrics.event_loop_lag.observe(lag.as_secs_f64());
                health.loop_answered(lag);
                warned_loop = false;
                if systemd {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
        if let Some(sent) = outstanding {
            let waited = sent.elapsed();
            health.loop_waiting(waited);
            if waited > cfg.warn_after && !warned_loop {
                warned_loop = true;
                metrics.watchdog_warnings.inc();
                tracing::warn!(waited_ms = waited.as_millis() as u64, "watchdog: the event loop has not answered");
            }
            if let Some(limit) = cfg.exit_after
                && waited > limit
            {
                tracing::error!(
                    waited_ms = waited.as_millis() as u64,
                    "watchdog: the async event loop hung; exiting with code {EXIT_CODE} so the host is restarted"
                );
                exit(marker.as_ref(), "event_loop", waited);
            }
        }
        // Accept loops run on the runtime: while the loop itself does not answer, their silence is
        // the loop's, and the exit names the loop.
        let loop_stuck = outstanding.is_some_and(|s| s.elapsed() > cfg.warn_after);
        let mut silent = beats.silent(cfg.warn_after);
        if loop_stuck {
            silent.retain(|s| s.kind != "accept");
        }
        for s in &silent {
            if !warned_threads.contains(&s.name) {
                metrics.watchdog_warnings.inc();
                tracing::warn!(thread = %s.name, silent_ms = s.silent.as_millis() as u64, "watchdog: a watched thread is silent");
            }
            let limit = cfg.exit_after.map(|l| if s.kind == "startup" { l.max(STARTUP_MIN) } else { l });
            if let Some(limit) = limit
                && s.silent > limit
            {
                tracing::error!(
                    thread = %s.name,
                    silent_ms = s.silent.as_millis() as u64,
                    "watchdog: a watched thread hung; exiting with code {EXIT_CODE} so the host is restarted"
                );
                exit(marker.as_ref(), &s.name, s.silent);
            }
        }
        warned_threads = silent.iter().map(|s| s.name.clone()).collect();
        health.set_stalled(warned_threads.clone());
        std::thread::sleep(tick);
    }
}

fn exit(marker: Option<&CrashMarker>, what: &str, silent: Duration) -> ! {
    let ms = silent.as_millis() as u64;
    match marker {
        Some(m) => m.write_and_exit(what, ms),
        // SAFETY: as above.
        None => unsafe { libc::_exit(EXIT_CODE) },
    }
}

/// The names fault injection and the marker use: no spaces, so the marker stays one parseable line.
pub fn thread_name(kind: &str, what: &str, session: u32) -> String {
    format!("{kind}:{what}:session-{session}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MARKER_FILE);
        let (_m, last) = CrashMarker::open(&path).unwrap();
        assert_eq!(last, None);
        std::fs::write(&path, "unix_time=1 code=86 hung=event_loop silent_ms=31000\n").unwrap();
        let (_m, last) = CrashMarker::open(&path).unwrap();
        assert_eq!(last.as_deref(), Some("unix_time=1 code=86 hung=event_loop silent_ms=31000"));
        let (_m, last) = CrashMarker::open(&path).unwrap();
        assert_eq!(last, None, "the marker is cleared once read");
    }

    #[test]
    fn heartbeats_report_silence_and_unregister() {
        let beats = Heartbeats::new();
        let hb = beats.register("pipeline", "pipeline:video:session-1");
        assert!(beats.silent(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        let silent = beats.silent(Duration::from_millis(10));
        assert_eq!(silent.len(), 1);
        assert_eq!(silent[0].name, "pipeline:video:session-1");
        hb.beat();
        assert!(beats.silent(Duration::from_millis(10)).is_empty());
        assert_eq!(beats.stall("pipeline", 0).as_deref(), Some("pipeline:video:session-1"));
        assert_eq!(beats.stall("accept", 1), None);
        drop(hb);
        assert_eq!(beats.count("pipeline"), 0);
    }
}
