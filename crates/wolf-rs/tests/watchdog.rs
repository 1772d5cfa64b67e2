//! The watchdog in the real binary: an injected runtime hang and a stalled pipeline end the process
//! with the watchdog's exit code and a crash marker the next start reports; a TLS handshake storm
//! that saturates the machine does not (`tests/storm.rs`). `wolf-rs healthcheck` reads /health.

use std::process::Command;
use std::time::{Duration, Instant};

use wolf_rs::watchdog::{EXIT_CODE, MARKER_FILE};
use wolf_testkit::host_process::{spawn, spawn_env};
use wolf_testkit::{ConfigBuilder, PIN};

const BIN: &str = env!("CARGO_BIN_EXE_wolf-rs");

/// `silent_ms` from the marker line.
fn marker_silent_ms(line: &str) -> u64 {
    line.split_whitespace().find_map(|f| f.strip_prefix("silent_ms=")).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn healthcheck(url: &str) -> std::process::Output {
    Command::new(BIN).args(["healthcheck", "--url", url]).output().unwrap()
}

/// Watchdog interval, warn and exit thresholds (ms).
const TIGHT: (u64, u64, u64) = (500, 1000, 2000);

/// Config with fault injection on and these watchdog settings.
fn watchdog((interval_ms, warn_after_ms, exit_after_ms): (u64, u64, u64)) -> ConfigBuilder {
    ConfigBuilder::loopback()
        .pin(PIN)
        .watchdog(interval_ms, warn_after_ms, exit_after_ms)
        .with(|c| c.debug.fault_injection = true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_runtime_exits_with_the_watchdog_code_and_the_next_start_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = spawn(dir.path(), watchdog(TIGHT));
    let v = host.health_until("healthy").await;
    assert!(v["last_exit"].is_null());
    assert!(host.get("/metrics").await.unwrap().text().contains("\nwolf_last_exit_by_watchdog 0\n"));
    let url = format!("http://127.0.0.1:{}/health", host.health);
    let ok = healthcheck(&url);
    assert!(ok.status.success(), "healthcheck on a healthy host: {}", String::from_utf8_lossy(&ok.stderr));

    let injected = Instant::now();
    let r = host.post("/debug/hang?scope=runtime&seconds=120").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let status = host.exit_status(Duration::from_secs(30)).await;
    let took = injected.elapsed();
    assert_eq!(status.code(), Some(EXIT_CODE), "log:\n{}", host.log());
    let marker = std::fs::read_to_string(dir.path().join(MARKER_FILE)).unwrap();
    assert!(marker.contains("hung=event_loop"), "{marker}");
    let silent = marker_silent_ms(&marker);
    // The watchdog's own measure: past exit_after_ms, and no later than exit_after_ms + interval_ms.
    assert!((2000..=2500).contains(&silent), "{marker}");
    println!("runtime hang injected → exit {EXIT_CODE} after {} ms (marker: {})", took.as_millis(), marker.trim());
    assert!(host.log().contains("the async event loop hung"), "the log names what hung");

    let gone = healthcheck(&url);
    assert_eq!(gone.status.code(), Some(1), "healthcheck with nothing listening fails");

    // The next start reads the marker, reports it, and clears it.
    let host2 = spawn(dir.path(), watchdog(TIGHT));
    let v = host2.health_until("healthy").await;
    assert!(v["last_exit"].as_str().unwrap_or_default().contains("hung=event_loop"), "{v}");
    assert!(host2.log().contains("the previous run was ended by the watchdog"));
    let metrics = host2.get("/metrics").await.unwrap().text();
    assert!(metrics.contains("\nwolf_last_exit_by_watchdog 1\n"), "the alert's input: {metrics}");
    assert_eq!(std::fs::read_to_string(dir.path().join(MARKER_FILE)).unwrap(), "", "the marker is cleared");
}

/// A pipeline stalls in its session process: /health says degraded and names it, then that
/// process exits (its watchdog) and only its session ends (`process_hung`); the control plane
/// stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pipeline_degrades_the_host_then_ends_only_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = spawn(dir.path(), watchdog((500, 1000, 4000)));
    host.health_until("healthy").await;
    let (_c, video, _audio, ping, _) = wolf_testkit::play(host.client()).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut pinger = ping.into_bytes();
    pinger.extend_from_slice(&0u32.to_be_bytes());
    // Ping until video flows: then the pipeline thread runs.
    let mut buf = vec![0u8; 2048];
    let mut flowing = false;
    for _ in 0..100 {
        sock.send_to(&pinger, video).await.unwrap();
        if tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await.is_ok() {
            flowing = true;
            break;
        }
    }
    assert!(flowing, "video flows; log:\n{}", host.log());
    let r = host.post("/debug/hang?scope=pipeline&seconds=120").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let v = host.health_until("degraded").await;
    let stalled = v["checks"]["stalled_threads"].to_string();
    assert!(stalled.contains("pipeline:video:session-"), "{v}");
    wolf_testkit::until("the hung session ends", || host.sessions().is_empty()).await;
    let metrics = host.get("/metrics").await.expect("the control plane answers").text();
    assert!(metrics.contains("wolf_sessions_ended_total{reason=\"process_hung\"} 1"), "{metrics}");
    host.health_until("healthy").await;
    assert!(host.process.exited().is_none(), "the control plane did not exit");
    assert!(std::fs::read_to_string(dir.path().join(MARKER_FILE)).unwrap_or_default().is_empty());
}

/// Under systemd (`NOTIFY_SOCKET`): `READY=1` once the host is up, then `WATCHDOG=1` while the loop answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_gets_ready_and_watchdog_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let notify = sock_path.to_str().unwrap().to_owned();
    // Killed on every path.
    let host = spawn_env(
        &state,
        ConfigBuilder::loopback().pin(PIN).watchdog(200, 1000, 0),
        &[("NOTIFY_SOCKET", notify.as_str())],
    );
    let got = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !(seen.iter().any(|m: &String| m.contains("READY=1"))
            && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
        {
            match sock.recv(&mut buf) {
                Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => break,
            }
        }
        seen
    })
    .await
    .unwrap();
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?} (health port {})", host.health);
    assert!(got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2, "{got:?}");
}

/// A start-up step that blocks (an app icon that is a FIFO here, read with the apps; a file on a
/// hung network mount in life) is named by the watchdog, which exits so the supervisor restarts
/// the host: never a host that stays alive, unready and silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_step_that_blocks_is_named_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("icon.png");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let icon = fifo.display().to_string();
    let mut host = spawn(dir.path(), watchdog((500, 1000, 1500)).with(|c| c.apps[0].icon_png = icon));
    let limit = wolf_rs::watchdog::STARTUP_MIN + Duration::from_secs(30);
    let status = host.exit_status(limit).await;
    assert_eq!(status.code(), Some(EXIT_CODE), "log:\n{}", host.log());
    let marker = std::fs::read_to_string(dir.path().join(MARKER_FILE)).unwrap();
    assert!(marker.contains("hung=startup:apps"), "{marker}");
    assert!(host.log().contains("startup:apps"), "the log names the step:\n{}", host.log());
}

/// The lines of `wolf-rs events --json` against `host`'s state dir.
fn lifecycle(host: &wolf_testkit::host_process::Proc) -> Vec<wolf_rs::lifecycle::Record> {
    let out = host.cli(&["events", "--json"]);
    assert!(out.status.success(), "wolf-rs events: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Three control planes in one state dir: one killed with SIGKILL after a session, one ended by the
/// watchdog, one stopped with SIGTERM. The lifecycle log tells each start and how each ended (the
/// first two found by the next start), and the session's start and end with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_log_tells_each_start_exit_and_session_across_restarts() {
    use wolf_rs::lifecycle::Entry;
    let dir = tempfile::tempdir().unwrap();
    let mut first = spawn(dir.path(), watchdog(TIGHT));
    first.health_until("healthy").await;
    let mut c = first.client();
    assert_eq!(c.pair(PIN).await.unwrap(), wolf_client::PairOutcome::Paired);
    let r = c.https_get(&c.launch_url("1", "1280x720x60", wolf_testkit::RIKEY_HEX)).await.unwrap();
    assert_eq!(r.field("gamesession").as_deref(), Some("1"), "{}", r.text());
    assert_eq!(c.https_get("/cancel").await.unwrap().field("cancel").as_deref(), Some("1"));
    let ended = |log: &[wolf_rs::lifecycle::Record]| log.iter().any(|r| matches!(r.entry, Entry::SessionEnd { .. }));
    wolf_testkit::until("the session's end in the log", || ended(&lifecycle(&first))).await;
    first.kill9();

    let mut second = spawn(dir.path(), watchdog(TIGHT));
    second.health_until("healthy").await;
    assert_eq!(second.post("/debug/hang?scope=runtime&seconds=120").await.status, 202);
    assert_eq!(second.exit_status(Duration::from_secs(30)).await.code(), Some(EXIT_CODE));

    let mut third = spawn(dir.path(), watchdog(TIGHT));
    third.health_until("healthy").await;
    third.process.terminate(Duration::from_secs(20));

    let log = lifecycle(&third);
    // The session's process has entries of its own, in an order of its own with the session's.
    let process = |e: &Entry| matches!(e, Entry::SessionProcessStart { .. } | Entry::SessionProcessExit { .. });
    assert!(
        log.iter().any(|r| matches!(r.entry, Entry::SessionProcessStart { session: 1, .. })),
        "the session's process started: {log:#?}"
    );
    let entries: Vec<Entry> = log.iter().map(|r| r.entry.clone()).filter(|e| !process(e)).collect();
    let start = Entry::ControlPlaneStart { version: env!("CARGO_PKG_VERSION").into() };
    let found = |code: Option<i32>, hung: Option<&str>| Entry::ControlPlaneExit {
        code,
        hung: hung.map(str::to_owned),
        found_at_start: true,
    };
    let expected = vec![
        start.clone(),
        Entry::ControlPlaneReady,
        Entry::SessionStart { session: 1, app_id: "1".into() },
        Entry::SessionEnd { session: 1, reason: "cancelled".into() },
        found(None, None),
        start.clone(),
        Entry::ControlPlaneReady,
        found(Some(EXIT_CODE), Some("event_loop")),
        start,
        Entry::ControlPlaneReady,
        Entry::ControlPlaneExit { code: Some(0), hung: None, found_at_start: false },
    ];
    assert_eq!(entries, expected, "{log:#?}");
    // Each line names the process that wrote it: three control planes.
    let pids: std::collections::BTreeSet<u32> = log.iter().map(|r| r.pid).collect();
    assert_eq!(pids.len(), 3, "{log:#?}");
    let text = String::from_utf8_lossy(&third.cli(&["events"]).stdout).into_owned();
    assert!(text.contains("control plane exited with code 86; hung: event_loop (found at this start)"), "{text}");
    assert!(text.contains("session 1 ended: cancelled"), "{text}");
}
