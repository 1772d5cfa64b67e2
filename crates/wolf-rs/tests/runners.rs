//! App runners across a crash of the host (kill -9 of the real binary): a live app is adopted and
//! resumes, a dead one is cleaned up, an orphan is removed. Process runner on real processes,
//! docker runner on this machine's Docker engine with an image built here (busybox, no registry),
//! including device nodes for pads made while its container runs.

use std::process::Command;
use std::time::Duration;

use wolf_client::GameStreamClient;
use wolf_rs::config::App;
use wolf_rs::runners::RunnerHandle;
use wolf_rs::runners::docker::LABEL;
use wolf_rs::sessions::{SessionRecord, SessionState};
use wolf_testkit::config::{app, docker_runner, process_runner};
use wolf_testkit::docker::{DockerCleanup, build_app_image, docker, labelled, remove_labelled, running};
use wolf_testkit::host_process::{Proc, spawn, spawn_env};
use wolf_testkit::{ConfigBuilder, PIN, RIKEY_HEX, until};

fn sessions(host: &Proc) -> Vec<SessionRecord> {
    let out = host.cli(&["sessions", "list", "--json"]);
    assert!(out.status.success(), "sessions list: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON list")
}

async fn pair(host: &Proc) -> GameStreamClient {
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), wolf_client::PairOutcome::Paired);
    c
}

async fn launch(c: &GameStreamClient, app: &str) -> wolf_client::Reply {
    let q = c.launch_url(app, "1280x720x60", RIKEY_HEX);
    c.https_get(&q).await.expect("launch answers")
}

fn pid_alive(pid: i32) -> bool {
    wolf_rs::runners::process::start_time(pid).is_some()
}

/// Apps 1 (the test pattern) and 2 (a process that sleeps), each stop bounded at 2 s.
fn process_app() -> ConfigBuilder {
    ConfigBuilder::loopback().pin(PIN).with(|c| {
        c.sessions.stop_timeout_ms = 2000;
        c.apps = vec![App::test_pattern(), app(2, "Sleeper", process_runner(&["sh", "-c", "exec sleep 600"]))];
    })
}

fn process_pid(s: &SessionRecord) -> i32 {
    match s.runner {
        RunnerHandle::Process { pid, .. } => pid,
        ref other => panic!("expected a process handle, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_app_is_adopted_after_a_crash_and_stopped_by_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let _apps = wolf_testkit::KillOwned::new(dir.path());
    let mut host = spawn(dir.path(), process_app());
    host.health_until("healthy").await;
    let c = pair(&host).await;
    assert_eq!(launch(&c, "2").await.field("gamesession").as_deref(), Some("1"));
    let before = sessions(&host);
    let pid = process_pid(&before[0]);
    assert!(pid_alive(pid));
    assert!(dir.path().join("logs").join(format!("session-{}.log", before[0].id)).exists());

    host.kill9();
    assert!(pid_alive(pid), "the app outlives the host");
    let host = spawn(dir.path(), process_app());
    host.health_until("healthy").await;
    let after = sessions(&host);
    assert_eq!(after.len(), 1, "adopted");
    assert_eq!((after[0].id, process_pid(&after[0]), after[0].state), (before[0].id, pid, SessionState::Paused));
    let r = c.https_get(&c.url("/resume", &[("rikey", "ffeeddccbbaa99887766554433221100"), ("rikeyid", "2")])).await;
    assert_eq!(r.unwrap().field("resume").as_deref(), Some("1"));

    assert_eq!(c.https_get("/cancel").await.unwrap().field("cancel").as_deref(), Some("1"));
    until("the app is stopped", || !pid_alive(pid)).await;
    until("the session is gone", || sessions(&host).is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_process_app_is_cleaned_up_and_an_orphan_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let _apps = wolf_testkit::KillOwned::new(dir.path());
    let mut host = spawn(dir.path(), process_app());
    host.health_until("healthy").await;
    let c = pair(&host).await;
    launch(&c, "2").await;
    let pid = process_pid(&sessions(&host)[0]);
    host.kill9();
    // The app dies while the host is down.
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    until("the app is dead", || !pid_alive(pid)).await;
    let mut host = spawn(dir.path(), process_app());
    host.health_until("healthy").await;
    assert!(sessions(&host).is_empty(), "the dead app's session is dropped");
    let metrics = host.get("/metrics").await.unwrap().text();
    assert!(metrics.contains("wolf_sessions_reconciled_total{result=\"cleaned\"} 1"), "{metrics}");

    // An app whose session record is lost (the file removed while the host was down) is an orphan.
    launch(&c, "2").await;
    let pid = process_pid(&sessions(&host)[0]);
    host.kill9();
    std::fs::remove_file(dir.path().join(wolf_rs::sessions::store::FILE_NAME)).unwrap();
    let host = spawn(dir.path(), process_app());
    host.health_until("healthy").await;
    until("the orphan is stopped", || !pid_alive(pid)).await;
    let metrics = host.get("/metrics").await.unwrap().text();
    // The app and the session's own process.
    assert!(metrics.contains("wolf_sessions_reconciled_total{result=\"orphan_removed\"} 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_exits_ends_its_session_and_a_bad_command_fails_launch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ConfigBuilder::loopback().pin(PIN).with(|c| {
        c.apps = vec![
            app(1, "Short", process_runner(&["sleep", "1"])),
            app(2, "Broken", process_runner(&["/nonexistent/game"])),
        ]
    });
    let host = spawn(dir.path(), cfg);
    host.health_until("healthy").await;
    let c = pair(&host).await;
    let r = launch(&c, "2").await;
    assert_eq!(r.xml_status(), Some(500), "{}", r.text());
    assert!(r.text().contains("/nonexistent/game"), "the error names the command: {}", r.text());
    assert!(sessions(&host).is_empty());
    assert_eq!(launch(&c, "1").await.field("gamesession").as_deref(), Some("1"));
    until("the session ends with its app", || sessions(&host).is_empty()).await;
    let metrics = host.get("/metrics").await.unwrap().text();
    assert!(metrics.contains("wolf_session_creation_errors_total{reason=\"runner\"} 1"), "{metrics}");
}

/// The three docker cases run one after another: the orphan sweep at start removes every labelled
/// container, so two docker hosts at once would remove each other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_app_adopted_cleaned_and_orphans_removed() {
    let dir = tempfile::tempdir().unwrap();
    let image = format!("wolf-rs-test-app:{}", std::process::id());
    let _cleanup = DockerCleanup { containers: Vec::new(), images: vec![image.clone()] };
    remove_labelled();
    build_app_image(dir.path(), &image);
    let cfg = ConfigBuilder::loopback().pin(PIN).with(|c| {
        c.sessions.stop_timeout_ms = 1000;
        let mut runner = docker_runner(&image);
        runner.env.insert("GAME".into(), "1".into());
        c.apps = vec![app(1, "Container", runner)];
    });
    let state = dir.path().join("state");

    // 1. Launch, crash, restart: the same container is adopted and resumes; cancel removes it.
    let mut host = spawn(&state, cfg.clone());
    host.health_until("healthy").await;
    let c = pair(&host).await;
    let r = launch(&c, "1").await;
    assert_eq!(r.field("gamesession").as_deref(), Some("1"), "{}", r.text());
    let RunnerHandle::Docker { container_id } = sessions(&host)[0].runner.clone() else { panic!("docker handle") };
    assert!(running(&container_id));
    assert!(docker(&["inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", &container_id]).contains("GAME=1"));
    a_pad_node_reaches_the_container_and_only_the_host_makes_one(&state, &sessions(&host)[0]);
    host.kill9();
    let mut host = spawn(&state, cfg.clone());
    host.health_until("healthy").await;
    let after = sessions(&host);
    assert_eq!(after.len(), 1, "adopted");
    assert_eq!(after[0].runner, RunnerHandle::Docker { container_id: container_id.clone() }, "the same container");
    let r = c.https_get(&c.url("/resume", &[("rikey", "ffeeddccbbaa99887766554433221100"), ("rikeyid", "2")])).await;
    assert_eq!(r.unwrap().field("resume").as_deref(), Some("1"));
    assert_eq!(c.https_get("/cancel").await.unwrap().field("cancel").as_deref(), Some("1"));
    until("the container is removed", || labelled().is_empty()).await;
    until("the session is gone", || sessions(&host).is_empty()).await;

    // 2. Launch, crash, the container removed by hand: the session is cleaned up.
    launch(&c, "1").await;
    let RunnerHandle::Docker { container_id } = sessions(&host)[0].runner.clone() else { panic!("docker handle") };
    host.kill9();
    docker(&["rm", "-f", &container_id]);
    let mut host = spawn(&state, cfg.clone());
    host.health_until("healthy").await;
    assert!(sessions(&host).is_empty(), "no session for a removed container");
    assert!(labelled().is_empty(), "nothing leaked");
    host.kill9();

    // 3. A labelled container no session knows: removed at start.
    let orphan = docker(&["run", "-d", "--label", &format!("{LABEL}=999"), &image]);
    assert!(running(&orphan));
    let host = spawn(&state, cfg.clone());
    host.health_until("healthy").await;
    assert!(labelled().is_empty(), "the orphan was removed");
    let metrics = host.get("/metrics").await.unwrap().text();
    assert!(metrics.contains("wolf_sessions_reconciled_total{result=\"orphan_removed\"} 1"), "{metrics}");
}

/// `docker exec` in `container`: (succeeded, stderr).
fn exec(container: &str, cmd: &[&str]) -> (bool, String) {
    let out = Command::new("docker").arg("exec").arg(container).args(cmd).output().expect("docker CLI");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A pad made while the app runs (this kernel has no uinput, so a node number no device has): the
/// host makes its node in the folder the container sees as `/dev/input`; the app may open input
/// devices (the open gets as far as the kernel finding no such device, not a refusal) but cannot
/// make a node itself, so it never reaches the host's keyboard or another session's pad; the node
/// goes with the pad.
fn a_pad_node_reaches_the_container_and_only_the_host_makes_one(state: &std::path::Path, session: &SessionRecord) {
    use wolf_rs::runners::docker::INPUT_MAJOR;
    use wolf_rs::runners::{DeviceNode, Runners};
    let RunnerHandle::Docker { container_id: container } = &session.runner else { panic!("docker handle") };
    let runners = Runners::new(state, String::new(), &Default::default(), Duration::from_secs(1));
    let pad = [DeviceNode { path: "/dev/input/event77".into(), major: INPUT_MAJOR, minor: 77 }];
    runners.device_nodes(session.id, &session.runner, &pad, true).expect("the node is made");
    let (opened, why) = exec(container, &["cat", "/dev/input/event77"]);
    assert!(!opened && why.contains("No such device"), "the device cgroup lets the app open it: {why}");
    let (made, why) = exec(container, &["mknod", "/dev/input/event78", "c", "13", "78"]);
    assert!(!made && why.contains("Operation not permitted"), "the app cannot make a node: {why}");
    let (made, why) = exec(container, &["mknod", "/kbd", "c", "13", "64"]);
    assert!(!made && why.contains("Operation not permitted"), "{why}");
    runners.device_nodes(session.id, &session.runner, &pad, false).expect("the node is removed");
    assert!(!exec(container, &["ls", "/dev/input/event77"]).0, "gone with the pad");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_apps_for_the_next_start_unless_told_to_stop_them() {
    for stop_apps in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let _apps = wolf_testkit::KillOwned::new(dir.path());
        let cfg = process_app().with(|c| c.sessions.stop_apps_on_shutdown = stop_apps);
        let mut host = spawn(dir.path(), cfg.clone());
        host.health_until("healthy").await;
        let c = pair(&host).await;
        launch(&c, "2").await;
        let pid = process_pid(&sessions(&host)[0]);
        let _ = Command::new("kill").args(["-TERM", &host.child.id().to_string()]).status();
        let status = host.exit_status(Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(0), "a clean drain; log:\n{}", host.log());
        let saved = wolf_rs::sessions::store::load(&dir.path().join(wolf_rs::sessions::store::FILE_NAME)).unwrap();
        if stop_apps {
            assert!(!pid_alive(pid), "stop_apps_on_shutdown stops the app");
            assert!(saved.records.is_empty(), "and forgets its session");
        } else {
            assert!(pid_alive(pid), "the app is left running");
            assert_eq!(saved.records.len(), 1, "its session is in the file");
            let host = spawn(dir.path(), cfg);
            host.health_until("healthy").await;
            assert_eq!(process_pid(&sessions(&host)[0]), pid, "adopted at the next start");
            assert_eq!(c.https_get("/cancel").await.unwrap().field("cancel").as_deref(), Some("1"));
            until("the app is stopped", || !pid_alive(pid)).await;
        }
    }
}

/// A Docker engine that accepts and never answers: reconcile is cut off by `reconcile_timeout_ms`,
/// and meanwhile the host is visibly starting (health 503, ready 503, live 200); then it is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_docker_engine_delays_the_start_only_as_long_as_the_reconcile_bound() {
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("silent-docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&engine).unwrap();
    // Holds every connection open without a byte; ends with the test process.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let record = serde_json::json!({"version": 1, "sessions": [{
        "id": 5, "client_fingerprint": "ab", "client_ip": "127.0.0.1", "app_id": 1, "mode": "1280x720x60",
        "codec": null, "ports": {"rtsp": 0, "video": 0, "audio": 0, "control": 0},
        "runner": {"type": "docker", "container_id": "feedface"}, "state": "paused", "surround_audio_info": 196610,
        "created_unix_ms": 1, "updated_unix_ms": 1, "last_activity_unix_ms": null}]});
    // The helper's first spawn writes the config (no docker session yet, so it never touches the real
    // engine, whose containers another test may own); stop it and start for real with DOCKER_HOST.
    let mut first = spawn(&state, ConfigBuilder::loopback().pin(PIN).with(|c| c.sessions.reconcile_timeout_ms = 3000));
    first.health_until("healthy").await;
    first.kill9();
    std::fs::write(state.join(wolf_rs::sessions::store::FILE_NAME), record.to_string()).unwrap();
    // The config is on disk now: this start reuses it.
    let engine_url = format!("unix://{}", engine.display());
    let host = spawn_env(&state, ConfigBuilder::loopback(), &[("DOCKER_HOST", &engine_url)]);
    let starting = host.health_until("unhealthy").await;
    assert_eq!(starting["checks"]["phase"], "starting", "{starting}");
    assert_eq!(host.get("/readyz").await.unwrap().status, 503);
    assert_eq!(host.get("/livez").await.unwrap().status, 200, "the event loop is alive while it starts");
    let v = host.health_until("healthy").await;
    assert_eq!(v["sessions"], 0, "the unverifiable session was not adopted");
    assert_eq!(host.get("/readyz").await.unwrap().status, 200);
    assert!(host.log().contains("reconcile did not finish within 3000 ms"), "{}", host.log());
}
