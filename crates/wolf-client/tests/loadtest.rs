//! `wolf-load` with tiny bounds: every scenario runs, its report has the expected shape, and
//! nothing failed. No timing is asserted (the numbers belong in BENCHMARKS.md, not in a test).

use std::process::Command;

use serde_json::Value;
use wolf_testkit::{ConfigBuilder, PIN};

const BIN: &str = env!("CARGO_BIN_EXE_wolf-load");

fn loadtest(args: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    // The tool's own host keeps its state under the working directory: on disk, not tmpfs.
    let cwd = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(BIN)
        .args(args)
        .env("WOLF_RS_BIN", wolf_testkit::workspace::host_bin())
        .current_dir(cwd.path())
        .output()
        .expect("run wolf-load");
    (out, cwd)
}

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "exit {:?}\nstderr:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn assert_storm(s: &Value, what: &str) {
    assert!(s["ok"].as_u64().unwrap() > 0, "{what}: {s}");
    assert_eq!(s["failed"].as_object().unwrap().len(), 0, "{what}: {s}");
    assert_eq!(s["success_rate"], 1.0, "{what}");
    for k in ["handshake", "request"] {
        for q in ["p50_ms", "p95_ms", "p99_ms", "max_ms"] {
            assert!(s[k][q].as_f64().unwrap() > 0.0, "{what}.{k}.{q}: {s}");
        }
    }
    assert!(s["tls"].as_str().unwrap().contains("TLS"), "{s}");
}

#[test]
fn every_scenario_runs_against_its_own_host() {
    let args: Vec<&str> = "all --json --clients 2 --seconds 1 --idle 4 --launches 2 --streams 1".split(' ').collect();
    let (out, cwd) = loadtest(&args);
    let r = json(&out);
    assert_storm(&r["handshake"], "handshake");
    let h = &r["health"];
    assert_eq!(h["unanswered"], 0, "{h}");
    assert!(h["idle"]["samples"].as_u64().unwrap() > 0 && h["storm"]["samples"].as_u64().unwrap() > 0, "{h}");

    let s = &r["slowloris"];
    assert_eq!(s["idle_connections"], 4);
    assert!(s["opened"].as_u64().unwrap() >= 4, "{s}");
    assert_storm(&s["real"], "slowloris real clients");

    let l = &r["launch"];
    assert_eq!((l["launches"].as_u64(), l["ok"].as_u64()), (Some(2), Some(2)), "{l}");
    assert_eq!(l["failed"].as_object().unwrap().len(), 0, "{l}");
    assert_eq!(l["cancel_failed"], 0, "{l}");

    let st = &r["stream"];
    assert_eq!(st["streams"], 1);
    assert!(st["frame_send"]["samples"].as_u64().unwrap() > 0, "{st}");
    let clients = st["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1);
    assert!(clients[0]["frames"].as_u64().unwrap() > 0, "{st}");
    assert!(st["cpu_percent_per_stream"].as_f64().unwrap() > 0.0, "{st}");

    // The host was a child of the tool, and the tool cleaned it up with its state directory.
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0, "state directory left behind");
}

#[test]
fn stream_clients_that_seal_video_open_every_frame_they_count() {
    let (out, _cwd) = loadtest(&["stream", "--json", "--seconds", "1", "--streams", "1", "--encrypt-video"]);
    let st = &json(&out)["stream"];
    assert_eq!(st["encrypted_video"], true, "{st}");
    // Frames are counted only from packets that opened with the launch's rikey.
    assert!(st["clients"][0]["frames"].as_u64().unwrap() > 0, "{st}");
}

#[tokio::test]
async fn the_handshake_storm_hits_a_running_host_and_nothing_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let host = wolf_testkit::host_process::spawn(dir.path(), ConfigBuilder::loopback().pin(PIN));
    host.health_until("healthy").await;
    let target = format!("https://127.0.0.1:{}", host.https);
    let line = format!(
        "handshake --json --target {target} --http-port {} --health-port {} --clients 2 --seconds 1",
        host.http, host.health
    );
    let args: Vec<&str> = line.split(' ').collect();
    let (out, _cwd) = loadtest(&args);
    let r = json(&out);
    assert_storm(&r["handshake"], "handshake");
    assert_eq!(r["target"], target.as_str());
    assert!(r["health"]["storm"]["samples"].as_u64().unwrap() > 0);

    let (out, _cwd) = loadtest(&["handshake", "--target", "https://192.0.2.1:443"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
