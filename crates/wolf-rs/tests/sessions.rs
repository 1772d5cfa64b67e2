//! Persisted sessions: `active_sessions.json` follows every launch and end, a restart adopts what
//! still runs, a corrupt file is moved aside, a newer one refused, and a state dir that turns
//! read-only fails `/launch` cleanly while the host keeps serving.

use std::process::Command;
use std::time::Duration;

use wolf_rs::sessions::SessionState;
use wolf_rs::sessions::store::{self, FILE_NAME};
use wolf_testkit::{ConfigBuilder, PIN, RIKEY_HEX, TestHost, pair_and_launch};

fn saved(host: &TestHost) -> Vec<wolf_rs::sessions::SessionRecord> {
    store::load(&host.dir.path().join(FILE_NAME)).expect("the file parses").records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_is_on_disk_before_its_answer_and_a_restart_adopts_it() {
    let mut host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let (c, _) = pair_and_launch(&host).await;
    let on_disk = saved(&host);
    assert_eq!(on_disk.len(), 1, "launch answered 200 only after the write");
    assert_eq!(on_disk[0].app_id, 1);
    assert_eq!(on_disk[0].mode, "1280x720x60");
    assert_eq!(on_disk[0].state, SessionState::Paused);
    let id = on_disk[0].id;

    host.restart().await;
    let sessions = host.running().host.sessions.list();
    assert_eq!(sessions.len(), 1, "adopted after the restart");
    assert_eq!(sessions[0].id, id);
    assert_eq!(sessions[0].state, SessionState::Paused);
    // The client resumes it with fresh keys.
    let mut c = c;
    c.https = host.https;
    let q = c.url("/resume", &[("rikey", "ffeeddccbbaa99887766554433221100"), ("rikeyid", "7")]);
    let r = c.https_get(&q).await.unwrap();
    assert_eq!(r.field("resume").as_deref(), Some("1"), "{}", r.text());
    assert_eq!(host.running().host.sessions.list()[0].rikeyid, 7);
    // A new launch gets a new id (ids are not reused after a restart).
    let r = c.https_get("/cancel").await.unwrap();
    assert_eq!(r.field("cancel").as_deref(), Some("1"));
    for _ in 0..100 {
        if saved(&host).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saved(&host).is_empty(), "a cancelled session leaves the file");
    host.stop().await;
}

/// A session saved while it was still launching (a crash between the two writes of `/launch`) is
/// cleaned up at start, and the file says so before the host serves: read back, it must not
/// claim a session the host does not have (the crash test found this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_dropped_at_start_is_gone_from_the_file_before_the_host_serves() {
    let mut host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let (_c, _) = pair_and_launch(&host).await;
    if let Some(r) = host.running.take() {
        r.stop().await;
    }
    let path = host.dir.path().join(FILE_NAME);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"paused\""), "{text}");
    std::fs::write(&path, text.replace("\"paused\"", "\"launching\"")).unwrap();
    assert_eq!(saved(&host).len(), 1);
    host.restart().await;
    assert!(host.running().host.sessions.is_empty(), "a half-launched session is not adopted");
    assert!(saved(&host).is_empty(), "the file follows the reconcile before the host serves");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_is_moved_aside_and_the_host_starts_healthy() {
    let mut host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    if let Some(r) = host.running.take() {
        r.stop().await;
    }
    std::fs::write(host.dir.path().join(FILE_NAME), "{\"version\": 1, \"sessions\": [").unwrap();
    host.restart().await;
    let names: Vec<String> =
        std::fs::read_dir(host.dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().any(|n| n.starts_with("active_sessions.json.corrupt-")), "{names:?}");
    assert!(host.running().host.sessions.is_empty());
    assert_eq!(host.running().host.metrics.session_store_corrupt.get(), 1);
    let (c, _) = pair_and_launch(&host).await;
    assert_eq!(saved(&host).len(), 1, "a fresh file is written");
    drop(c);
    host.stop().await;
}

/// Valid JSON of our version that does not fit (wrong types, a missing list) is as corrupt as any:
/// moved aside, and the host starts; temp files a crash left behind are removed at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misshapen_file_is_moved_aside_and_stale_temps_are_removed() {
    for (n, text) in
        [r#"{"version":1,"sessions":null}"#, r#"{"version":1,"sessions":[{"id":"x"}]}"#, r#"{"version":1}"#]
            .into_iter()
            .enumerate()
    {
        let mut host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
        if let Some(r) = host.running.take() {
            r.stop().await;
        }
        std::fs::write(host.dir.path().join(FILE_NAME), text).unwrap();
        std::fs::write(host.dir.path().join(format!(".tmp-left{n}")), b"half a write").unwrap();
        host.restart().await;
        let names: Vec<String> = std::fs::read_dir(host.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().any(|n| n.starts_with("active_sessions.json.corrupt-")), "{text}: {names:?}");
        assert!(!names.iter().any(|n| n.starts_with(".tmp-")), "{names:?}");
        assert_eq!(host.running().host.metrics.session_store_corrupt.get(), 1);
        host.stop().await;
    }
}

#[tokio::test]
async fn a_file_from_a_newer_wolf_rs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    ConfigBuilder::loopback().with(|c| c.watchdog.exit_after_ms = 0).write(dir.path());
    std::fs::write(dir.path().join(FILE_NAME), "{\"version\": 2, \"sessions\": []}").unwrap();
    let paths = wolf_rs::app::Paths::new(dir.path().to_owned(), None);
    let err = match wolf_rs::app::start(paths, wolf_rs::config::Env::default()).await {
        Ok(_) => panic!("a newer sessions file must stop the start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("version 2"), "{err}");
    assert!(dir.path().join(FILE_NAME).exists(), "the file is left as it was");
}

const CHILD_ENV: &str = "WOLF_RO_TEST_IN_NAMESPACE";

/// The state dir becomes read-only under a running host (a bind mount remounted read-only inside a
/// private user + mount namespace, because root ignores file modes).
#[test]
fn a_read_only_state_dir_fails_launch_cleanly() {
    wolf_testkit::namespace::rerun_inside(&["--mount"], "", "read_only_inside_namespace", CHILD_ENV);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_inside_namespace() {
    if std::env::var_os(CHILD_ENV).is_none() {
        eprintln!("runs inside the namespace made by a_read_only_state_dir_fails_launch_cleanly");
        return;
    }
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), wolf_client::PairOutcome::Paired);
    let dir = host.dir.path().to_str().unwrap().to_owned();
    let mount = |args: &[&str]| {
        let o = Command::new("mount").args(args).output().expect("mount");
        assert!(o.status.success(), "mount {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    mount(&["--bind", &dir, &dir]);
    mount(&["-o", "remount,bind,ro", &dir]);
    assert!(std::fs::write(host.dir.path().join("probe"), b"x").is_err(), "the state dir is read-only");

    let q = c.launch_url("1", "1280x720x60", RIKEY_HEX);
    let r = c.https_get(&q).await.expect("an answer, not a reset");
    assert_eq!(r.xml_status(), Some(500), "{}", r.text());
    assert!(r.text().contains("could not save the session"), "{}", r.text());
    assert!(host.running().host.sessions.is_empty(), "no half-made session is left");
    let m = &host.running().host.metrics;
    assert_eq!(m.session_creation_errors.with_label_values(&["store"]).get(), 1);
    assert!(m.session_store_errors.get() >= 1);
    // Still serving, and saying why launches fail.
    let info = c.https_get("/serverinfo").await.unwrap();
    assert_eq!(info.field("state").as_deref(), Some("SUNSHINE_SERVER_FREE"));
    let health = |host: &TestHost| {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], host.running().health_port));
        async move {
            let r = wolf_client::plain_request(addr, hyper::Method::GET, "/health", None).await.unwrap();
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()
        }
    };
    let h = health(&host).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["checks"]["session_store"].as_str().unwrap_or_default().starts_with("cannot write"), "{h}");
    // Writable again: the next launch is saved and the host is healthy again.
    mount(&["-o", "remount,bind,rw", &dir]);
    let r = c.https_get(&c.launch_url("1", "1280x720x60", RIKEY_HEX)).await.unwrap();
    assert_eq!(r.xml_status(), Some(200), "{}", r.text());
    assert_eq!(health(&host).await["checks"]["session_store"], "ok");
    host.stop().await;
}
