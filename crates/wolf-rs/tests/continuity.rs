//! Streams outlive the control plane: three clients stream (receiving and decoding video, and
//! audio) from a supervised host while its control plane is killed with SIGKILL, hangs until the
//! watchdog exits it, and is restarted in place for an upgrade; each stream goes on with no
//! frame missing beyond a few and no reconnect. A session process that dies ends only its own
//! session.

use std::time::{Duration, Instant};

use wolf_rs::lifecycle::Entry;
use wolf_rs::sessions::SessionRecord;
use wolf_testkit::host_process::{Proc, kill9, spawn_supervised};
use wolf_testkit::session::{ControlEvent, from_first_idr};
use wolf_testkit::viewer::Viewer;
use wolf_testkit::{ConfigBuilder, PIN};

/// The most frame numbers a stream may skip at once (a UDP datagram lost on a busy machine).
const MAX_INDEX_GAP: u32 = 3;

fn config() -> ConfigBuilder {
    ConfigBuilder::loopback().pin(PIN).watchdog(500, 1000, 2000).with(|c| {
        c.debug.fault_injection = true;
        c.supervisor.restart_backoff_ms = 100;
        c.supervisor.max_backoff_ms = 400;
    })
}

async fn viewers(host: &Proc, n: usize) -> Vec<Viewer> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Viewer::start(host.client()).await);
    }
    out
}

fn session_of<'a>(sessions: &'a [SessionRecord], v: &Viewer) -> Option<&'a SessionRecord> {
    let fp = v.client.identity.cert.fingerprint_hex();
    sessions.iter().find(|s| s.client_fingerprint == fp)
}

/// Each viewer gets `n` more frames after `t`, and its control channel saw nothing but its
/// connect: no termination, no disconnect.
async fn all_stream_on(viewers: &[Viewer], t: Instant, n: usize, what: &str) {
    for (i, v) in viewers.iter().enumerate() {
        v.frames_after(t, n).await;
        let events = v.control_events();
        assert!(events.is_empty(), "viewer {i} after {what}: control events {events:?}");
        let gap = v.received().largest_index_gap();
        assert!(gap <= MAX_INDEX_GAP, "viewer {i} after {what}: {gap} frames missing at once");
    }
}

fn decode(frames: &[Vec<u8>]) -> Result<usize, String> {
    wolf_testkit::media::run_decoder(&wolf_testkit::media::h264_decoding()?, frames, 33)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_streams_go_on_through_a_kill_9_a_hang_and_an_upgrade_of_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let host = spawn_supervised(dir.path(), config());
    host.health_until("healthy").await;
    let viewers = viewers(&host, 3).await;
    for v in &viewers {
        v.frames_after(Instant::now() - Duration::from_secs(60), 30).await;
    }
    let listed = host.sessions();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let pids: Vec<i32> = listed.iter().map(|s| s.process.as_ref().expect("a session process").pid).collect();
    for s in &listed {
        // Only the host's user may command a session process.
        let socket = &s.process.as_ref().unwrap().socket;
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(socket).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{}", socket.display());
    }

    // A crash of the control plane.
    let first = host.control_plane().expect("a control plane");
    let t = Instant::now();
    kill9(first);
    let second = host.next_control_plane(first).await;
    all_stream_on(&viewers, t, 60, "kill -9 of the control plane").await;

    // A hang: the watchdog exits it (86), the supervisor starts the next.
    let t = Instant::now();
    assert_eq!(host.post("/debug/hang?scope=runtime&seconds=120").await.status, 202);
    let third = host.next_control_plane(second).await;
    all_stream_on(&viewers, t, 60, "a watchdog exit").await;

    // An upgrade: restarted in place.
    let t = Instant::now();
    let out = host.cli(&["restart"]);
    assert!(out.status.success(), "wolf-rs restart: {}", String::from_utf8_lossy(&out.stderr));
    host.next_control_plane(third).await;
    all_stream_on(&viewers, t, 60, "wolf-rs restart").await;

    // The same session processes stream all along; the API lists all three, streaming.
    let listed = host.sessions();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for v in &viewers {
        let s = session_of(&listed, v).expect("the viewer's session is listed");
        assert!(pids.contains(&s.process.as_ref().unwrap().pid), "the same process streams it");
        assert_eq!(s.state, wolf_rs::sessions::SessionState::Streaming, "{s:?}");
    }

    // The lifecycle log tells each process's start and each adoption (three restarts).
    let log = host.events();
    let count = |f: &dyn Fn(&Entry) -> bool| log.iter().filter(|r| f(&r.entry)).count();
    assert_eq!(count(&|e| matches!(e, Entry::SessionProcessStart { .. })), 3);
    assert_eq!(count(&|e| matches!(e, Entry::SessionProcessAdopted { .. })), 9);
    // Each process's CPU and memory, by session, in the control plane's /metrics.
    let metrics = host.get("/metrics").await.expect("metrics").text();
    for s in &listed {
        let line = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(&format!("{name}{{session=\"{}\"}} ", s.id)))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        assert!(line("wolf_session_process_cpu_seconds").is_some_and(|v| v > 0.0), "{metrics}");
        assert!(line("wolf_session_process_resident_bytes").is_some_and(|v| v > 1e6), "{metrics}");
    }

    // /cancel of one ends it, and only it.
    let mut viewers = viewers;
    let cancelled = viewers.remove(0);
    let r = cancelled.client.https_get(&cancelled.client.url("/cancel", &[])).await.unwrap();
    assert_eq!(r.field("cancel").as_deref(), Some("1"), "{}", r.text());
    let ended = tokio::task::spawn_blocking(move || {
        let e = cancelled.control.events.recv_timeout(Duration::from_secs(20));
        (e, cancelled)
    });
    let (event, _cancelled) = ended.await.unwrap();
    assert!(
        matches!(event, Ok(ControlEvent::Message(t, _)) if t == wolf_protocol::control::MSG_TERMINATION),
        "{event:?}"
    );
    let t = Instant::now();
    all_stream_on(&viewers, t, 30, "the other's /cancel").await;
    assert_eq!(host.sessions().len(), 2);

    for (i, v) in viewers.into_iter().enumerate() {
        let (r, _) = v.stop().await;
        assert!(r.audio > 100, "viewer {i}: audio flowed ({} packets)", r.audio);
        let frames = from_first_idr(&r.frames);
        let n = frames.len();
        let decoded = tokio::task::spawn_blocking(move || decode(&frames)).await.unwrap().expect("decodes");
        assert!(decoded + 5 >= n && n > 200, "viewer {i}: decoded {decoded} of {n} frames");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_session_process_ends_only_its_own_session() {
    let dir = tempfile::tempdir().unwrap();
    let host = spawn_supervised(dir.path(), config());
    host.health_until("healthy").await;
    let mut viewers = viewers(&host, 3).await;
    for v in &viewers {
        v.frames_after(Instant::now() - Duration::from_secs(60), 30).await;
    }
    let listed = host.sessions();
    let victim = viewers.remove(0);
    let s = session_of(&listed, &victim).expect("listed").clone();
    let t = Instant::now();
    kill9(s.process.as_ref().expect("a session process").pid as u32);
    wolf_testkit::until("the session with the killed process ends", || !host.sessions().iter().any(|x| x.id == s.id))
        .await;
    // Counted and logged with its reason.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = host.get("/metrics").await.expect("metrics").text();
        if metrics.contains("wolf_sessions_ended_total{reason=\"process_lost\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics.contains("wolf_sessions_ended_total{reason=\"process_lost\"} 1"), "{metrics}");
    let end = Entry::SessionEnd { session: s.id, reason: "process_lost".into() };
    let pid = s.process.as_ref().unwrap().pid;
    let exit = Entry::SessionProcessExit { session: s.id, process: pid, how: "lost".into() };
    wolf_testkit::until("the lifecycle log tells why", || {
        let log = host.events();
        log.iter().any(|r| r.entry == end) && log.iter().any(|r| r.entry == exit)
    })
    .await;
    all_stream_on(&viewers, t, 60, "another session's process was killed").await;
    assert_eq!(host.sessions().len(), 2);
}

/// The control plane killed ten times, a second apart, while two streams run: the supervisor's
/// backoff and crash-loop pause show in the log and the metrics; both streams go on throughout,
/// and the sessions file keeps both sessions with their processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_outlive_a_control_plane_killed_ten_times() {
    let dir = tempfile::tempdir().unwrap();
    let host = spawn_supervised(
        dir.path(),
        config().with(|c| {
            c.supervisor.crash_loop_exits = 5;
            c.supervisor.crash_loop_window_s = 60;
            c.supervisor.crash_loop_pause_s = 2;
        }),
    );
    host.health_until("healthy").await;
    let viewers = viewers(&host, 2).await;
    for v in &viewers {
        v.frames_after(Instant::now() - Duration::from_secs(60), 30).await;
    }
    let before = host.sessions();
    let t = Instant::now();
    let mut pid = host.control_plane().expect("a control plane");
    for _ in 0..10 {
        kill9(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        pid = host.next_control_plane(pid).await;
    }
    all_stream_on(&viewers, t, 30, "ten kills of the control plane").await;
    let log = host.events();
    let restarts: Vec<&Entry> =
        log.iter().map(|r| &r.entry).filter(|e| matches!(e, Entry::ControlPlaneRestart { .. })).collect();
    assert_eq!(restarts.len(), 10, "{restarts:?}");
    assert!(restarts.iter().any(|e| matches!(e, Entry::ControlPlaneRestart { crash_loop: true, .. })), "{restarts:?}");
    let backoffs: Vec<u64> = restarts
        .iter()
        .filter_map(|e| match e {
            Entry::ControlPlaneRestart { after_ms, crash_loop: false, .. } => Some(*after_ms),
            _ => None,
        })
        .collect();
    assert!(backoffs.windows(2).any(|w| w[1] > w[0]), "the backoff grows: {backoffs:?}");
    let metrics = host.get("/metrics").await.expect("metrics").text();
    assert!(metrics.contains("\nwolf_control_plane_restarts 10\n"), "{metrics}");
    assert!(!metrics.contains("\nwolf_control_plane_crash_loop_pauses 0\n"), "{metrics}");
    let after = host.sessions();
    assert_eq!(after.len(), 2);
    for s in &before {
        let now = after.iter().find(|a| a.id == s.id).expect("the session is still there");
        assert_eq!(now.process, s.process, "the same process, on file");
    }
}
