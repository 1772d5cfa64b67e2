//! The container image on this machine's Docker engine, with no registry: built by
//! docker/build-local.sh, healthy, paired with through its published ports. A hang injected inside
//! it is healed by the watchdog's exit and the supervisor (PID 1 in the image) starting the control
//! plane again, with no restart of the container (the time to recover is printed,
//! with tight and with default watchdog settings), a docker-runner session launched before the hang
//! is adopted after it, and a real Prometheus (Debian's package) scrapes it and fires the alert.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use wolf_client::{ClientIdentity, GameStreamClient, PairOutcome, Reply, plain_request};
use wolf_testkit::config::docker_runner;
use wolf_testkit::docker::{DockerCleanup, build_app_image, docker, labelled, remove_labelled, running};
use wolf_testkit::host_process::free_port;
use wolf_testkit::{ConfigBuilder, PIN, RIKEY_HEX};

const BIN: &str = env!("CARGO_BIN_EXE_wolf-rs");

/// The base image docker/build-local.sh makes (or finds, when scripts/test.sh prepared it).
const BASE_IMAGE: &str = "wolf-rs-debian:bookworm";

/// `docker/build-local.sh TAG` with this test build's binary.
fn build_host_image(tag: &str) {
    let out = Command::new("bash")
        .arg(wolf_testkit::workspace::root().join("docker/build-local.sh"))
        .arg(tag)
        .env("WOLF_BINARY", BIN)
        .output()
        .expect("run docker/build-local.sh");
    assert!(
        out.status.success(),
        "docker/build-local.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `docker inspect -f FORMAT`, or "" when the engine cannot say.
fn inspect(name: &str, format: &str) -> String {
    Command::new("docker")
        .args(["inspect", "-f", format, name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A host container, by name.
struct Host {
    name: String,
}

/// Runs the image with the state directory `state` as its volume and the container's default ports
/// published on random loopback ports; `extra` goes before the image name.
fn run_host(name: &str, image: &str, state: &Path, extra: &[&str]) -> Host {
    let volume = format!("{}:/etc/wolf/cfg", state.display());
    let pin_env = format!("WOLF_PIN={PIN}");
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--restart",
        "unless-stopped",
        "-e",
        "WOLF_MDNS=false",
        "-e",
        &pin_env,
        "-v",
        &volume,
        "-p",
        "127.0.0.1::47989",
        "-p",
        "127.0.0.1::47984",
        "-p",
        "127.0.0.1::47985",
    ];
    args.extend_from_slice(extra);
    args.push(image);
    docker(&args);
    Host { name: name.to_owned() }
}

impl Host {
    /// The loopback address the container's `port` is published on. Looked up each time: Docker
    /// picks new random host ports when it restarts the container.
    fn published(&self, port: &str) -> SocketAddr {
        let mapped = docker(&["port", &self.name, port]);
        mapped.lines().next().and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("published {port}: {mapped}"))
    }

    fn health_addr(&self) -> SocketAddr {
        self.published("47985/tcp")
    }

    /// (Docker's health status, the restart count).
    fn docker_state(&self) -> (String, u32) {
        let s = inspect(&self.name, "{{.State.Health.Status}} {{.RestartCount}}");
        let (status, count) = s.split_once(' ').unwrap_or((&s, "0"));
        (status.to_owned(), count.parse().unwrap_or(0))
    }

    async fn get(&self, path: &str) -> Option<Reply> {
        let r =
            tokio::time::timeout(Duration::from_secs(2), plain_request(self.health_addr(), Method::GET, path, None));
        r.await.ok().and_then(Result::ok)
    }

    async fn health(&self) -> Option<serde_json::Value> {
        let r = self.get("/health").await?;
        if r.status != 200 {
            return None;
        }
        serde_json::from_slice(&r.body).ok()
    }

    async fn metrics(&self) -> String {
        self.get("/metrics").await.map(|r| r.text()).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let out = Command::new("docker").args(["logs", "--tail", "60", &self.name]).output();
        out.map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default()
    }

    /// Wait (bounded) until Docker reports the container healthy.
    async fn until_healthy(&self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.docker_state().0 == "healthy" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{} never became healthy ({:?}); logs:\n{}", self.name, self.docker_state(), self.logs());
    }

    fn client(&self, id: Arc<ClientIdentity>) -> GameStreamClient {
        GameStreamClient::new(self.published("47989/tcp"), self.published("47984/tcp"), id)
    }
}

/// When a hung container's control plane came back, measured from the injection.
#[derive(Default, Debug)]
struct Recovery {
    serving: Option<Duration>,
    healthy: Option<Duration>,
}

impl Recovery {
    /// One look at the container; true once a new control plane (it reports the watchdog's exit
    /// of the last one) serves and Docker calls the container healthy.
    async fn observe(&mut self, host: &Host, since: Instant) -> bool {
        if self.serving.is_none() {
            let Some(v) = host.health().await else { return false };
            if !v["last_exit"].as_str().unwrap_or_default().contains("code=86") {
                return false;
            }
            self.serving = Some(since.elapsed());
        }
        if host.docker_state().0 == "healthy" {
            self.healthy = Some(since.elapsed());
        }
        self.healthy.is_some()
    }

    fn report(&self, what: &str) {
        let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| d.as_millis().to_string());
        println!(
            "MTTR {what}: hang injected → the supervisor's new control plane answers /health after {} ms → Docker 'healthy' after {} ms (no container restart)",
            ms(self.serving),
            ms(self.healthy)
        );
    }
}

async fn inject_hang(host: &Host) -> Instant {
    let r = plain_request(host.health_addr(), Method::POST, "/debug/hang?scope=runtime&seconds=600", None).await;
    let r = r.expect("the health port answers");
    assert_eq!(r.status, 202, "{}", r.text());
    Instant::now()
}

/// A Prometheus process, killed on every path.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// JSON from Prometheus's HTTP API, or None while it cannot answer.
async fn prom_get(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let r = tokio::time::timeout(Duration::from_secs(2), plain_request(addr, Method::GET, path, None)).await;
    let r = r.ok()?.ok()?;
    serde_json::from_slice(&r.body).ok()
}

/// Poll (bounded) until `f` finds what it wants in the answer to `path`.
async fn prom_until<T>(addr: SocketAddr, path: &str, mut f: impl FnMut(&serde_json::Value) -> Option<T>) -> T {
    let mut last = serde_json::Value::Null;
    for _ in 0..150 {
        if let Some(v) = prom_get(addr, path).await {
            if let Some(t) = f(&v) {
                return t;
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("Prometheus never gave what was wanted at {path}; last answer: {last}");
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(wolf_testkit::workspace::root())
        .output()
        .expect("promtool (scripts/deps.sh)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Prometheus on loopback with the project's alert rules, scraping `target` every second.
fn start_prometheus(dir: &Path, target: SocketAddr) -> (Prometheus, SocketAddr) {
    std::fs::copy(wolf_testkit::workspace::root().join("docker/prometheus/alerts.yml"), dir.join("alerts.yml"))
        .unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n\
             scrape_configs:\n  - job_name: wolf-rs\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    promtool(&["check", "config", cfg.to_str().unwrap()]);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus (scripts/deps.sh installs Debian's package)");
    (Prometheus(child), addr)
}

/// A stream from the image goes on through `docker exec … kill -9` of its control plane: the
/// container stays up (no restart), the client sees no gap and no reconnect, and it is healthy
/// again. Host networking, so the session's own UDP ports are the client's to reach.
async fn stream_through_a_kill_9(image: &str, name: &str, state: &Path) {
    let [http, https, rtsp, health] = wolf_testkit::host_process::free_ports::<4>();
    ConfigBuilder::loopback()
        .pin(PIN)
        .with(|c| {
            (c.ports.http, c.ports.https, c.ports.rtsp, c.health.port) = (http, https, rtsp, health);
        })
        .write(state);
    std::os::unix::fs::chown(state, Some(10001), Some(10001)).unwrap();
    let health_url = format!("WOLF_HEALTH_URL=http://127.0.0.1:{health}/health");
    let volume = format!("{}:/etc/wolf/cfg", state.display());
    docker(&["run", "-d", "--name", name, "--network", "host", "-e", &health_url, "-v", &volume, image]);
    let host = Host { name: name.to_owned() };
    let health_addr = SocketAddr::from(([127, 0, 0, 1], health));
    let healthy = || async {
        let r = plain_request(health_addr, Method::GET, "/health", None).await.ok()?;
        serde_json::from_slice::<serde_json::Value>(&r.body).ok().filter(|v| v["status"] == "healthy")
    };
    let started = Instant::now();
    while healthy().await.is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "never healthy; logs:\n{}", host.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = GameStreamClient::new(
        ([127, 0, 0, 1], http).into(),
        ([127, 0, 0, 1], https).into(),
        Arc::new(ClientIdentity::generate().unwrap()),
    );
    let viewer = wolf_testkit::viewer::Viewer::start(client).await;
    viewer.frames_after(Instant::now() - Duration::from_secs(60), 30).await;
    // PID 1 is the supervisor; its one child the control plane.
    let control_plane = docker(&["exec", name, "cat", "/proc/1/task/1/children"]);
    let control_plane = control_plane.split_whitespace().next().expect("the control plane").to_owned();
    let t = Instant::now();
    docker(&["exec", name, "kill", "-9", &control_plane]);
    // A new control plane serves once /health answers with an uptime from after the kill.
    loop {
        if let Some(v) = healthy().await
            && v["uptime_s"].as_u64().is_some_and(|u| u <= t.elapsed().as_secs())
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no new control plane; logs:\n{}", host.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("kill -9 of the control plane in the container → healthy again after {} ms", t.elapsed().as_millis());
    viewer.frames_after(t, 60).await;
    let events = viewer.control_events();
    assert!(events.is_empty(), "no reconnect, no termination: {events:?}");
    let gap = viewer.received().largest_index_gap();
    assert!(gap <= 3, "{gap} frames missing at once");
    assert_eq!(host.docker_state().1, 0, "the container itself was not restarted");
    let _ = viewer.stop().await;
}

/// The committed Prometheus files are valid and the alert rules pass their unit tests.
#[test]
fn prometheus_config_and_alert_rules_check() {
    promtool(&["check", "config", "docker/prometheus/prometheus.yml"]);
    promtool(&["check", "rules", "docker/prometheus/alerts.yml"]);
    promtool(&["test", "rules", "docker/prometheus/alerts_test.yml"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_heals_a_hang_by_restart_keeps_its_session_and_is_scraped() {
    let dir = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let (image, app) = (format!("wolf-rs-test:{pid}"), format!("wolf-rs-test-app:{pid}"));
    let (tight_name, default_name) = (format!("wolf-rs-test-tight-{pid}"), format!("wolf-rs-test-default-{pid}"));
    let stream_name = format!("wolf-rs-test-stream-{pid}");
    let mut images = vec![image.clone(), app.clone()];
    // A base made by scripts/test.sh's prepare step is that script's to remove; one this test makes
    // is removed with the rest.
    if Command::new("docker").args(["image", "inspect", BASE_IMAGE]).output().is_ok_and(|o| !o.status.success()) {
        images.push(BASE_IMAGE.to_owned());
    }
    let _cleanup =
        DockerCleanup { containers: vec![tight_name.clone(), default_name.clone(), stream_name.clone()], images };
    remove_labelled();
    let t = Instant::now();
    let phase = |what: &str| println!("[{:>6.1} s] {what}", t.elapsed().as_secs_f64());
    build_host_image(&image);
    build_app_image(dir.path(), &app);
    phase("images built");

    // Tight: the docker runner through the mounted socket (hence root), a 1 s healthcheck.
    let tight_state = dir.path().join("tight");
    ConfigBuilder::default()
        .watchdog(500, 1000, 2000)
        .with(|c| {
            c.debug.fault_injection = true;
            c.sessions.stop_timeout_ms = 1000;
            c.apps = vec![wolf_testkit::config::app(1, "Container", docker_runner(&app))];
        })
        .write(&tight_state);
    // Default: the image's own user (non-root) and healthcheck, the default watchdog.
    let default_state: PathBuf = dir.path().join("default");
    ConfigBuilder::default().with(|c| c.debug.fault_injection = true).write(&default_state);
    std::os::unix::fs::chown(&default_state, Some(10001), Some(10001)).unwrap();

    let tight = run_host(
        &tight_name,
        &image,
        &tight_state,
        &[
            "--user",
            "0",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "--health-interval",
            "1s",
            "--health-timeout",
            "2s",
            "--health-retries",
            "3",
        ],
    );
    let default = run_host(&default_name, &image, &default_state, &[]);
    tight.until_healthy(Duration::from_secs(60)).await;
    default.until_healthy(Duration::from_secs(90)).await;
    phase("both containers healthy");
    let v = default.health().await.expect("/health");
    assert!(v["last_exit"].is_null(), "{v}");

    // The project's client pairs through the published ports and launches a docker app.
    let id = Arc::new(ClientIdentity::generate().unwrap());
    let mut c = tight.client(id.clone());
    assert_eq!(c.pair(PIN).await.expect("pairing runs"), PairOutcome::Paired);
    let info = c.https_get("/serverinfo").await.expect("serverinfo over mutual TLS");
    assert_eq!(info.field("PairStatus").as_deref(), Some("1"), "{}", info.text());
    let q = c.launch_url("1", "1280x720x60", RIKEY_HEX);
    let r = c.https_get(&q).await.expect("launch answers");
    assert_eq!(r.field("gamesession").as_deref(), Some("1"), "{}\n{}", r.text(), tight.logs());
    let apps = labelled();
    assert_eq!(apps.len(), 1, "one app container");
    assert!(running(&apps[0]));

    phase("paired and launched");
    // Hang both; the watchdog exits their control planes and the supervisor starts them again.
    let (t_tight, t_default) = (inject_hang(&tight).await, inject_hang(&default).await);
    let (mut r_tight, mut r_default) = (Recovery::default(), Recovery::default());
    let limit = Instant::now();
    let (mut done_tight, mut done_default) = (false, false);
    while !(done_tight && done_default) && limit.elapsed() < Duration::from_secs(150) {
        if !done_tight {
            done_tight = r_tight.observe(&tight, t_tight).await;
        }
        if !done_default {
            done_default = r_default.observe(&default, t_default).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r_tight.report("tight (watchdog interval 500 / warn 1000 / exit 2000 ms; healthcheck every 1 s)");
    r_default
        .report("default (watchdog interval 5000 / warn 10000 / exit 30000 ms; the image's healthcheck, every 10 s)");
    assert!(done_tight, "tight: {r_tight:?}; logs:\n{}", tight.logs());
    assert!(done_default, "default: {r_default:?}; logs:\n{}", default.logs());
    for h in [&tight, &default] {
        let v = h.health().await.expect("/health after the restart");
        let last = v["last_exit"].as_str().unwrap_or_default();
        assert!(last.contains("code=86") && last.contains("hung=event_loop"), "{}: {v}", h.name);
        assert_eq!(h.docker_state().1, 0, "{}: the container itself was not restarted", h.name);
    }

    phase("both recovered");
    // The session and its container survived the control plane's restart and resume.
    assert_eq!(labelled(), apps, "the same app container; logs:\n{}", tight.logs());
    assert!(running(&apps[0]));
    let metrics = tight.metrics().await;
    assert!(metrics.contains("wolf_sessions_reconciled_total{result=\"adopted\"} 1"), "{metrics}");
    assert!(metrics.contains("\nwolf_active_sessions 1\n"), "{metrics}");
    // The same client identity, at the same published ports.
    let c = tight.client(id);
    let r = c.https_get(&c.url("/resume", &[("rikey", "ffeeddccbbaa99887766554433221100"), ("rikeyid", "2")])).await;
    assert_eq!(r.expect("resume answers").field("resume").as_deref(), Some("1"));

    // A real Prometheus scrapes it: the target is up, the metrics are there, the alert fires.
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let (_prom, prom) = start_prometheus(&prom_dir, tight.health_addr());
    let target = prom_until(prom, "/api/v1/targets", |v| {
        let t = v["data"]["activeTargets"].get(0)?;
        (t["health"] == "up").then(|| t["scrapeUrl"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert!(target.ends_with("/metrics"), "{target}");
    phase("Prometheus target up");
    for (query, want) in [
        ("wolf_active_sessions", Some("1")),
        ("wolf_last_exit_by_watchdog", Some("1")),
        ("wolf_sessions_created_total", None),
        ("wolf_ssl_handshake_duration_seconds_count", None),
        ("wolf_ssl_handshakes_total", None),
        ("wolf_session_creation_errors_total", None),
        ("wolf_event_loop_lag_seconds_count", None),
        ("wolf_memory_usage_bytes", None),
        ("process_start_time_seconds", None),
    ] {
        let value = prom_until(prom, &format!("/api/v1/query?query={query}"), |v| {
            v["data"]["result"].get(0).and_then(|r| r["value"][1].as_str()).map(str::to_owned)
        })
        .await;
        if let Some(want) = want {
            assert_eq!(value, want, "{query}; logs:\n{}", tight.logs());
        }
    }
    let alert = prom_until(prom, "/api/v1/alerts", |v| {
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "WolfWatchdogRestarts" && a["state"] == "firing")
            .cloned()
    })
    .await;
    println!("Prometheus scraped {target}; firing: {}", alert["annotations"]["summary"]);
    phase("queries answered, alert firing");

    stream_through_a_kill_9(&image, &stream_name, &dir.path().join("stream")).await;
    phase("a stream went on through a kill -9 of the control plane in the container");

    // Cancel stops the adopted app's container.
    assert_eq!(c.https_get("/cancel").await.unwrap().field("cancel").as_deref(), Some("1"));
    for _ in 0..100 {
        if labelled().is_empty() {
            phase("cancelled");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the app container was not removed by cancel; logs:\n{}", tight.logs());
}
