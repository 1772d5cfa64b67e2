//! The health port of an in-process host: /health, /livez, /readyz in each state, and /metrics
//! parsed with a Prometheus parser after a pairing, a launch and a counted burst of handshakes.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::Method;
use wolf_client::{Reply, plain_request};
use wolf_testkit::{ConfigBuilder, PIN, TestHost, pair_and_launch};

fn health_addr(host: &TestHost) -> SocketAddr {
    ([127, 0, 0, 1], host.running().health_port).into()
}

async fn get(host: &TestHost, path: &str) -> Reply {
    plain_request(health_addr(host), Method::GET, path, None).await.expect("health port answers")
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body).expect("JSON body")
}

/// Poll /health until its status is `want` (bounded).
async fn health_until(host: &TestHost, want: &str) -> (u16, serde_json::Value) {
    let mut last = None;
    for _ in 0..200 {
        let r = get(host, "/health").await;
        let v = json(&r);
        if v["status"] == want {
            return (r.status, v);
        }
        last = Some(v);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("/health never became {want}: last {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_host_answers_every_endpoint() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let (code, v) = health_until(&host, "healthy").await;
    assert_eq!(code, 200);
    assert_eq!(v["sessions"], 0);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(!v["encoder"].as_str().unwrap_or_default().is_empty(), "{v}");
    assert!(v["last_exit"].is_null());
    assert!(v["uptime_s"].is_u64() && v["event_loop_lag_ms"].is_u64(), "{v}");
    assert_eq!(v["checks"]["phase"], "ready");
    assert_eq!(v["checks"]["watchdog"], "running");

    let live = get(&host, "/livez").await;
    assert_eq!(live.status, 200, "{}", live.text());
    assert_eq!(get(&host, "/readyz").await.status, 200);
    assert_eq!(get(&host, "/nope").await.status, 404);
    let post = plain_request(health_addr(&host), Method::POST, "/health", None).await.unwrap();
    assert_eq!(post.status, 405);
    // Fault injection is off by default: the route does not exist.
    let hang = plain_request(health_addr(&host), Method::POST, "/debug/hang?scope=runtime&seconds=1", None).await;
    assert_eq!(hang.unwrap().status, 404);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_rejections_make_the_host_degraded() {
    let host = TestHost::start(ConfigBuilder::loopback().with(|c| c.tls.max_pending_connections = 1)).await;
    health_until(&host, "healthy").await;
    // One silent connection fills the pending cap; the next is turned away by the gate.
    let _silent = tokio::net::TcpStream::connect(host.https).await.unwrap();
    let mut rejected = false;
    for _ in 0..100 {
        let mut extra = tokio::net::TcpStream::connect(host.https).await.unwrap();
        let mut buf = [0u8; 1];
        // A rejected connection is closed at once: the read sees EOF (or a reset).
        let closed =
            tokio::time::timeout(Duration::from_millis(200), tokio::io::AsyncReadExt::read(&mut extra, &mut buf))
                .await
                .is_ok_and(|r| r.map_or(true, |n| n == 0));
        if closed && host.running().gate.stats.count("rejected") > 0 {
            rejected = true;
            break;
        }
    }
    assert!(rejected, "the gate rejected a connection");
    let (code, v) = health_until(&host, "degraded").await;
    assert_eq!(code, 200, "degraded still answers 200");
    assert_eq!(v["checks"]["tls_gate"], "rejecting");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_host_answers_503_until_it_stops() {
    let host = TestHost::start(ConfigBuilder::loopback()).await;
    health_until(&host, "healthy").await;
    // An open HTTP connection keeps the drain waiting for its grace period.
    let _open = tokio::net::TcpStream::connect(host.http).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    host.running().shutdown_token().cancel();
    let (code, v) = health_until(&host, "draining").await;
    assert_eq!(code, 503);
    assert_eq!(v["checks"]["phase"], "draining");
    let ready = get(&host, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(json(&ready)["status"], "draining");
    host.stop().await;
}

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The value of `name` (with `label` = value, if given); histograms give their total count.
fn value(s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    s.samples.iter().find(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v))).map(|x| {
        match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(b) => b.iter().map(|c| c.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_test_did() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    health_until(&host, "healthy").await;
    let (c, _) = pair_and_launch(&host).await;
    let before = scrape(&get(&host, "/metrics").await.text());
    let ok_before = value(&before, "wolf_ssl_handshakes_total", Some(("outcome", "ok"))).expect("handshake counter");
    const BURST: usize = 25;
    for _ in 0..BURST {
        assert_eq!(c.https_get("/serverinfo").await.expect("serverinfo").status, 200);
    }
    let r = get(&host, "/metrics").await;
    assert!(r.content_type.starts_with("text/plain; version=0.0.4"), "{}", r.content_type);
    let text = r.text();
    let s = scrape(&text);
    for name in [
        "wolf_ssl_handshake_duration_seconds",
        "wolf_ssl_handshakes_total",
        "wolf_ssl_handshake_permits_in_use",
        "wolf_ssl_handshake_waiting",
        "wolf_active_sessions",
        "wolf_sessions_created_total",
        "wolf_session_creation_errors_total",
        "wolf_pairing_attempts_total",
        "wolf_cpu_usage_percent",
        "wolf_memory_usage_bytes",
        "wolf_event_loop_lag_seconds",
        "wolf_watchdog_warnings_total",
        "wolf_encoder_frames_total",
        "wolf_pipeline_errors_total",
        "wolf_video_frames_dropped_total",
        "wolf_build_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(value(&s, name, None).is_some(), "{name} missing from /metrics:\n{text}");
    }
    let ok = value(&s, "wolf_ssl_handshakes_total", Some(("outcome", "ok"))).unwrap();
    assert_eq!(ok - ok_before, BURST as f64, "one handshake per request of the burst");
    let all: f64 = ["ok", "timeout", "rejected", "error"]
        .iter()
        .filter_map(|o| value(&s, "wolf_ssl_handshakes_total", Some(("outcome", o))))
        .sum();
    let observed = value(&s, "wolf_ssl_handshake_duration_seconds_count", None).unwrap();
    assert_eq!(observed, all, "every counted handshake has a duration");
    assert!(value(&s, "wolf_ssl_handshake_duration_seconds_sum", None).unwrap() > 0.0);
    assert_eq!(value(&s, "wolf_pairing_attempts_total", Some(("outcome", "paired"))), Some(1.0));
    assert_eq!(value(&s, "wolf_pairing_attempts_total", Some(("outcome", "wrong_pin"))), Some(0.0));
    assert_eq!(value(&s, "wolf_sessions_created_total", None), Some(1.0));
    assert_eq!(value(&s, "wolf_active_sessions", None), Some(1.0));
    assert_eq!(value(&s, "wolf_session_creation_errors_total", Some(("reason", "unknown_app"))), Some(0.0));
    assert_eq!(value(&s, "wolf_ssl_handshake_permits_in_use", None), Some(0.0));
    assert_eq!(value(&s, "wolf_build_info", Some(("version", env!("CARGO_PKG_VERSION")))), Some(1.0));
    assert!(value(&s, "wolf_memory_usage_bytes", None).unwrap() > 1e6, "the process uses some memory");
    // The watchdog records an answered ping at its next check (up to 250 ms later): poll, bounded.
    let mut measured = value(&s, "wolf_event_loop_lag_seconds_count", None).unwrap_or(0.0);
    for _ in 0..100 {
        if measured >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = scrape(&get(&host, "/metrics").await.text());
        measured = value(&again, "wolf_event_loop_lag_seconds_count", None).unwrap_or(0.0);
    }
    assert!(measured >= 1.0, "the watchdog measured the loop");

    // A launch of an unknown app is counted by reason.
    let q = c.url("/launch", &[("appid", "999"), ("mode", "1280x720x60"), ("rikey", "00"), ("rikeyid", "1")]);
    let _ = c.https_get(&q).await.expect("answer");
    let s = scrape(&get(&host, "/metrics").await.text());
    assert_eq!(value(&s, "wolf_session_creation_errors_total", Some(("reason", "unknown_app"))), Some(1.0));

    // promtool, where installed, checks the exposition and its naming conventions too.
    if let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        let _ = child.stdin.take().map(|mut i| i.write_all(text.as_bytes()));
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    host.stop().await;
}

/// Metric names in a PromQL-bearing file: `wolf_*` and `process_*` words, histogram suffixes off.
fn referenced_metrics(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("wolf_") || w.starts_with("process_"))
        .map(|w| {
            let base = ["_bucket", "_count", "_sum"].iter().find_map(|s| w.strip_suffix(s));
            base.unwrap_or(w).to_owned()
        })
        .collect()
}

/// Every metric the Grafana dashboard and the alert rules query is one the host exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_query_only_exported_metrics() {
    let host = TestHost::start(ConfigBuilder::loopback()).await;
    let exported: std::collections::BTreeSet<String> = get(&host, "/metrics")
        .await
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(str::to_owned))
        .collect();
    host.stop().await;
    let root = wolf_testkit::workspace::root().join("docker");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("grafana/wolf-rs.json")).unwrap()).expect("JSON");
    let exprs: String = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap_or_default().to_owned() + "\n")
        .collect();
    let alerts = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    for (file, text) in [("grafana/wolf-rs.json", exprs), ("prometheus/alerts.yml", alerts)] {
        let used = referenced_metrics(&text);
        assert!(used.len() >= 4, "{file} queries {used:?}");
        let missing: Vec<_> = used.difference(&exported).collect();
        assert!(missing.is_empty(), "{file} queries metrics the host does not export: {missing:?}");
    }
}

/// Idle connections to the health port, from the healthcheck's own address and from others, kept
/// renewed (more than the port holds): every healthcheck from loopback is still answered, because
/// idle ones are closed to make room for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_never_keep_the_healthcheck_out() {
    let host = TestHost::start(ConfigBuilder::loopback()).await;
    let addr = health_addr(&host);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut holders = Vec::new();
    for src in 1..=4u8 {
        let stop = stop.clone();
        holders.push(tokio::spawn(async move {
            let mut held = std::collections::VecDeque::new();
            // Bounded: at most 2000 connections per holder, and stops with the test.
            for _ in 0..2000 {
                if stop.is_cancelled() {
                    break;
                }
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.bind(SocketAddr::from(([127, 0, 0, src], 0))).unwrap();
                if let Ok(s) = sock.connect(addr).await {
                    held.push_back(s);
                }
                if held.len() > 40 {
                    held.pop_front();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut answered = 0;
    for _ in 0..15 {
        if let Ok(r) = plain_request(addr, Method::GET, "/health", None).await
            && r.status == 200
        {
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    for h in holders {
        h.await.unwrap();
    }
    assert_eq!(answered, 15, "every healthcheck answered beside 160 idle connections");
    host.stop().await;
}
