//! Both cores saturated with TLS handshakes for 30 s: the watchdog sees a live event loop, and
//! `/health` and the management API (as a platform's health check calls it: `GET /api/v1/apps`
//! within 3 s) keep answering. Its own test binary, so the storm never shares the machine with the
//! watchdog tests that check when a hung host exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wolf_client::{ClientIdentity, GameStreamClient};
use wolf_testkit::host_process::spawn;
use wolf_testkit::{ConfigBuilder, PIN};

/// Both cores busy with TLS handshakes for 30 s: the watchdog sees a live loop, /health and the API answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_storm_does_not_trip_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = spawn(dir.path(), ConfigBuilder::loopback().pin(PIN).watchdog(500, 1500, 3000));
    host.health_until("healthy").await;
    let https: SocketAddr = ([127, 0, 0, 1], host.https).into();
    let identity = Arc::new(ClientIdentity::generate().unwrap());
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    const STORM: Duration = Duration::from_secs(30);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (identity, done, failed) = (identity.clone(), done.clone(), failed.clone());
        let c = GameStreamClient::new(([127, 0, 0, 1], host.http).into(), https, identity);
        workers.push(tokio::spawn(async move {
            while started.elapsed() < STORM {
                match c.https_get("/serverinfo").await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let (mut answered, mut unanswered, mut statuses) = (0u32, 0u32, std::collections::BTreeMap::new());
    let (mut api_answered, mut api_unanswered) = (0u32, 0u32);
    let sock = dir.path().join("wolf.sock");
    while started.elapsed() < STORM {
        let api = async {
            let stream = tokio::net::UnixStream::connect(&sock).await.ok()?;
            let kind = wolf_rs::error::ErrorKind::Admin;
            wolf_rs::net::http1::request(stream, hyper::Method::GET, "/api/v1/apps", None, kind, "api").await.ok()
        };
        match tokio::time::timeout(Duration::from_secs(3), api).await {
            Ok(Some((s, _))) if s.is_success() => api_answered += 1,
            _ => api_unanswered += 1,
        }
        match host.get("/health").await {
            Some(r) => {
                answered += 1;
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                *statuses.entry(v["status"].as_str().unwrap_or("?").to_owned()).or_insert(0u32) += 1;
            }
            None => unanswered += 1,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for w in workers {
        let _ = w.await;
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "storm: {n} handshakes + /serverinfo in {:?} ({:.0}/s), {} failed; /health answered {answered}, unanswered {unanswered}, {statuses:?}; the API answered {api_answered}, unanswered {api_unanswered}",
        started.elapsed(),
        n as f64 / started.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );
    assert!(n > 100, "the storm ran");
    assert!(host.child.try_wait().unwrap().is_none(), "the host is still running; log:\n{}", host.log());
    assert_eq!(unanswered, 0, "/health answered every time");
    assert_eq!(api_unanswered, 0, "the API answered every time within 3 s");
    assert!(!statuses.contains_key("unhealthy"), "{statuses:?}");
    let v = host.health_until("healthy").await;
    assert!(v["last_exit"].is_null());
}
