//! Crash consistency of `active_sessions.json`: 100 times, clients launch and cancel in a loop and
//! the host is killed with SIGKILL at a random moment. After every kill the file parses and holds
//! every session whose `/launch` answered 200 and that was not cancelled since; the host then
//! starts again and adopts them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wolf_client::GameStreamClient;
use wolf_rs::sessions::store::{self, FILE_NAME};
use wolf_testkit::host_process::spawn;
use wolf_testkit::{ConfigBuilder, PIN, RIKEY_HEX};

const ROUNDS: usize = 100;
const CLIENTS: usize = 3;

/// What the test knows about a client's session.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Known {
    None,
    /// `/launch` answered 200: it must survive a crash.
    Required,
    /// A request is or was in flight: either way is fine.
    Unknown,
}

/// A small deterministic generator (no extra crate): xorshift.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn fingerprint(c: &GameStreamClient) -> String {
    c.identity.cert.fingerprint_hex()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_file_survives_a_hundred_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = spawn(dir.path(), ConfigBuilder::loopback().pin(PIN));
    host.health_until("healthy").await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = host.client();
        assert_eq!(c.pair(PIN).await.unwrap(), wolf_client::PairOutcome::Paired);
        clients.push(c);
    }
    let fps: Vec<String> = clients.iter().map(fingerprint).collect();
    let mut known = [Known::None; CLIENTS];
    let mut running = [false; CLIENTS];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let started = Instant::now();
    let (mut launches, mut cancels) = (0, 0);
    for round in 0..ROUNDS {
        // Requests until a random moment, then SIGKILL in the middle of whatever runs.
        let kill_at = Instant::now() + Duration::from_millis(20 + rng.next(200));
        while Instant::now() < kill_at {
            let i = rng.next(CLIENTS as u64) as usize;
            let c = &clients[i];
            // What to do next: cancel what probably runs, launch otherwise.
            let cancel = running[i];
            let before = known[i];
            known[i] = Known::Unknown;
            let left = kill_at.saturating_duration_since(Instant::now());
            let q = if cancel { "/cancel".to_owned() } else { c.launch_url("1", "1280x720x60", RIKEY_HEX) };
            match tokio::time::timeout(left, c.https_get(&q)).await {
                Ok(Ok(r)) if cancel && r.field("cancel").as_deref() == Some("1") => {
                    // Cancelled, but the removal may not be on disk yet: stays Unknown.
                    cancels += 1;
                    running[i] = false;
                }
                Ok(Ok(r)) if !cancel && r.field("gamesession").as_deref() == Some("1") => {
                    known[i] = Known::Required;
                    launches += 1;
                    running[i] = true;
                }
                // Refused (already running): nothing changed on the host.
                Ok(Ok(_)) => {
                    known[i] = if before == Known::None { Known::Unknown } else { before };
                    running[i] = !cancel;
                }
                _ => {}
            }
        }
        host.kill9();
        let saved = store::load(&dir.path().join(FILE_NAME))
            .unwrap_or_else(|e| panic!("round {round}: the file does not parse: {e}"));
        assert!(saved.moved_aside.is_none(), "round {round}: the file was corrupt");
        for (i, k) in known.iter().enumerate() {
            let present = saved.records.iter().any(|r| r.client_fingerprint == fps[i]);
            if *k == Known::Required {
                assert!(present, "round {round}: client {i}'s launched session is missing");
            }
        }
        host = spawn(dir.path(), ConfigBuilder::loopback().pin(PIN));
        host.health_until("healthy").await;
        // What the host adopted is now the truth for each client.
        let now = store::load(&dir.path().join(FILE_NAME)).unwrap();
        let adopted: HashMap<&str, ()> = now.records.iter().map(|r| (r.client_fingerprint.as_str(), ())).collect();
        for (i, fp) in fps.iter().enumerate() {
            running[i] = adopted.contains_key(fp.as_str());
            known[i] = if running[i] { Known::Required } else { Known::None };
        }
        for c in &mut clients {
            c.https = ([127, 0, 0, 1], host.https).into();
        }
    }
    println!(
        "{ROUNDS} SIGKILLs in {:?}: {launches} launches and {cancels} cancels answered; the file parsed and held every launched session each time",
        started.elapsed()
    );
    assert!(launches > ROUNDS / 2, "the loop did launch sessions: {launches}");
}
