//! `wolf-rs serve` as the supervisor of its control plane, in real processes: the control plane is
//! started again after `kill -9` and after a watchdog exit, restarted in place by `wolf-rs restart`
//! (its session kept and adopted each time), paused after a crash loop, and stopped with the
//! supervisor by SIGTERM. The lifecycle log tells each step.

use std::time::Duration;

use wolf_rs::lifecycle::{Entry, Record};
use wolf_rs::sessions::SessionRecord;
use wolf_testkit::config::{app, process_runner};
use wolf_testkit::host_process::{Proc, kill9, spawn_supervised};
use wolf_testkit::{ConfigBuilder, PIN, RIKEY_HEX};

/// A quick policy: a crash loop is 4 exits within a minute, its pause 3 s.
fn config() -> ConfigBuilder {
    ConfigBuilder::loopback().pin(PIN).watchdog(500, 1000, 2000).with(|c| {
        c.debug.fault_injection = true;
        c.sessions.stop_apps_on_shutdown = true;
        c.supervisor.restart_backoff_ms = 100;
        c.supervisor.max_backoff_ms = 400;
        c.supervisor.crash_loop_exits = 4;
        c.supervisor.crash_loop_window_s = 60;
        c.supervisor.crash_loop_pause_s = 3;
        c.supervisor.stop_grace_ms = 20_000;
        c.apps = vec![app(2, "Sleeper", process_runner(&["sh", "-c", "exec sleep 600"]))];
    })
}

fn log(host: &Proc) -> Vec<Record> {
    host.events()
}

fn sessions(host: &Proc) -> Vec<SessionRecord> {
    host.sessions()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_restarts_its_control_plane_in_place_and_keeps_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = spawn_supervised(dir.path(), config());
    let supervisor = host.process.pid();
    host.health_until("healthy").await;
    let first = host.control_plane().expect("the control plane said it is ready");
    assert_ne!(first, supervisor, "the control plane is the supervisor's child");
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), wolf_client::PairOutcome::Paired);
    let r = c.https_get(&c.launch_url("2", "1280x720x60", RIKEY_HEX)).await.unwrap();
    assert_eq!(r.field("gamesession").as_deref(), Some("1"), "{}", r.text());
    let session = sessions(&host).pop().expect("one session");

    // A crash: the supervisor starts the control plane again, which adopts the session.
    kill9(first);
    let second = host.next_control_plane(first).await;
    assert!(sessions(&host).iter().any(|s| s.id == session.id), "adopted after kill -9");

    // A hang: the watchdog exits it with 86 and the supervisor starts it again.
    assert_eq!(host.post("/debug/hang?scope=runtime&seconds=120").await.status, 202);
    let third = host.next_control_plane(second).await;
    assert!(sessions(&host).iter().any(|s| s.id == session.id), "adopted after the watchdog's exit");

    // An upgrade: `wolf-rs restart` restarts it in place; stop_apps_on_shutdown does not apply.
    let out = host.cli(&["restart"]);
    assert!(out.status.success(), "wolf-rs restart: {}", String::from_utf8_lossy(&out.stderr));
    let fourth = host.next_control_plane(third).await;
    assert!(sessions(&host).iter().any(|s| s.id == session.id), "kept across a restart in place");

    // A crash loop: the fourth quick exit within the window (with the two above) is followed by the
    // longer pause; then it goes on, the count started over.
    let mut pid = fourth;
    for _ in 0..3 {
        kill9(pid);
        pid = host.next_control_plane(pid).await;
    }
    assert!(host.process.exited().is_none(), "the supervisor never gives up");
    let entries: Vec<Entry> = log(&host).into_iter().map(|r| r.entry).collect();
    let restarts: Vec<&Entry> = entries.iter().filter(|e| matches!(e, Entry::ControlPlaneRestart { .. })).collect();
    assert_eq!(restarts.len(), 6, "{entries:#?}");
    let [kill, hang, asked, b1, paused, b2] = restarts[..] else { unreachable!() };
    assert_eq!(*kill, Entry::ControlPlaneRestart { after_ms: 100, crash_loop: false, requested: false });
    assert_eq!(*hang, Entry::ControlPlaneRestart { after_ms: 200, crash_loop: false, requested: false });
    assert_eq!(*asked, Entry::ControlPlaneRestart { after_ms: 0, crash_loop: false, requested: true });
    assert_eq!(*b1, Entry::ControlPlaneRestart { after_ms: 400, crash_loop: false, requested: false });
    assert_eq!(*b2, Entry::ControlPlaneRestart { after_ms: 400, crash_loop: false, requested: false });
    assert_eq!(*paused, Entry::ControlPlaneRestart { after_ms: 3000, crash_loop: true, requested: false });
    let exits: Vec<&Entry> = entries.iter().filter(|e| matches!(e, Entry::ControlPlaneExit { .. })).collect();
    let code = |c: Option<i32>| Entry::ControlPlaneExit { code: c, hung: None, found_at_start: false };
    // SIGKILL shows as no code; the watchdog's exit as 86 with what hung; the restart in place as 0.
    let hung = Entry::ControlPlaneExit { code: Some(86), hung: Some("event_loop".into()), found_at_start: false };
    assert_eq!(exits[..3], [&code(None), &hung, &code(Some(0))], "{entries:#?}");
    assert!(sessions(&host).iter().any(|s| s.id == session.id));
    let metrics = host.get("/metrics").await.unwrap().text();
    assert!(metrics.contains("\nwolf_control_plane_restarts 6\n"), "{metrics}");
    assert!(metrics.contains("\nwolf_control_plane_crash_loop_pauses 1\n"), "{metrics}");

    // SIGTERM to the supervisor: the control plane drains (its session's app stopped, as
    // configured) and both exit 0.
    host.process.terminate(Duration::from_secs(30));
    let status = host.process.exited().expect("the supervisor exited");
    assert_eq!(status.code(), Some(0), "log:\n{}", host.process.log_tail(30));
    assert!(!dir.path().join("supervisor.pid").exists(), "its pid file goes with it");
    let last = log(&host);
    assert_eq!(last.last().map(|r| &r.entry), Some(&code(Some(0))));
    let saved = wolf_rs::sessions::store::load(&dir.path().join(wolf_rs::sessions::store::FILE_NAME)).unwrap();
    assert!(saved.records.is_empty(), "the session ended with the host: {:?}", saved.records);
}
