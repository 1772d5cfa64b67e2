//! The binary as a user runs it: `serve` with the default config in a fresh state dir, the
//! project's client pairing through `wolf-client`, the PIN given with `wolf-rs pair`, and the
//! `config check`, `clients`, `version` commands.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use wolf_client::host::HostProcess;

const BIN: &str = env!("CARGO_BIN_EXE_wolf-rs");

fn wolf(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("WOLF_MDNS", "false").output().expect("run wolf-rs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_prints_the_crate_version() {
    let o = wolf(&["version"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o).trim(), format!("wolf-rs {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn config_check_prints_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "hostname = \"\"\nuuid = \"not-a-uuid\"\n[ports]\nhttp = 70000\n[tls]\nmax_concurrent_handshakes = 0\nbogus = 1\n\
         [pairing]\npin = [\"12\"]\n",
    )
    .unwrap();
    let o = wolf(&["--config", cfg.to_str().unwrap(), "config", "check"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    for needle in [
        "line 1: `hostname`",
        "line 2: `uuid`",
        "line 4: `ports.http`",
        "line 6: `tls.max_concurrent_handshakes`",
        "line 7: `tls.bogus`",
        "line 9: `pairing.pin`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "").unwrap();
    let o = wolf(&["--config", good.to_str().unwrap(), "config", "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A broken config stops `serve` with the same clear error and exit code, and changes nothing.
    let before = std::fs::read(&cfg).unwrap();
    let o = wolf(&["--state-dir", dir.path().to_str().unwrap(), "--config", cfg.to_str().unwrap(), "serve"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("tls.max_concurrent_handshakes"));
    assert_eq!(std::fs::read(&cfg).unwrap(), before);
}

/// Waits for the host's own log to say both listeners are up; a host that exits (e.g. the default
/// ports are taken) fails the test with its log.
fn wait_until_ready(host: &mut HostProcess) {
    for _ in 0..600 {
        let text = host.log();
        if text.contains("HTTP listener ready") && text.contains("HTTPS listener ready") {
            return;
        }
        if let Some(status) = host.exited() {
            panic!("the host exited ({status}) before it was ready:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the host was not ready in time");
}

/// `wolf-client --client-dir <dir> <args>` against the default ports.
fn client(dir: &Path, args: &[&str]) -> Output {
    Command::new(wolf_testkit::workspace::bin("wolf-client"))
        .arg("--client-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run wolf-client")
}

/// The README's run command with its default config: pairs, launches, cancels, unpairs, stops.
#[test]
fn default_config_host_pairs_with_the_project_client() {
    let state = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let sd = state.path().to_str().unwrap().to_owned();
    // The log goes to a file (<state>/host.log): a pipe nobody reads could fill and stall the host.
    let mut host = HostProcess::spawn(Path::new(BIN), state.path(), &[("WOLF_MDNS", "false")]).expect("start the host");
    wait_until_ready(&mut host);

    // First start wrote the documented template and a 0600 key.
    let written = std::fs::read_to_string(state.path().join("config.toml")).unwrap();
    assert_eq!(written, wolf_rs::config::TEMPLATE);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.path().join("key.pem")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // `wolf-client pair` waits for the PIN; `wolf-rs pair` gives it.
    let cd = client_dir.path().to_owned();
    let pairing = std::thread::spawn(move || client(&cd, &["pair", "--pin", "1234"]));
    let mut accepted = false;
    for _ in 0..300 {
        if wolf(&["--state-dir", &sd, "pair", "1234"]).status.success() {
            accepted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(accepted, "wolf-rs pair delivered the PIN");
    let o = pairing.join().unwrap();
    assert!(o.status.success(), "client pair: {}\n{}", stdout(&o), stderr(&o));

    let o = client(client_dir.path(), &["serverinfo"]);
    assert!(stdout(&o).contains("<PairStatus>1</PairStatus>"), "{}", stdout(&o));
    let o = client(client_dir.path(), &["applist"]);
    assert!(stdout(&o).contains("<AppTitle>Test pattern</AppTitle>"), "{}", stdout(&o));
    let o = client(client_dir.path(), &["launch", "--app", "1"]);
    assert!(o.status.success() && stdout(&o).contains("<gamesession>1</gamesession>"), "{}", stdout(&o));
    let o = client(client_dir.path(), &["serverinfo"]);
    assert!(stdout(&o).contains("SUNSHINE_SERVER_BUSY"));
    let o = client(client_dir.path(), &["cancel"]);
    assert!(o.status.success() && stdout(&o).contains("<cancel>1</cancel>"));

    let o = wolf(&["--state-dir", &sd, "clients", "list", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(list.len(), 1);
    let fp = list[0]["fingerprint"].as_str().unwrap().to_owned();
    let o = wolf(&["--state-dir", &sd, "clients", "remove", &fp[..16]]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = client(client_dir.path(), &["serverinfo"]);
    assert!(stdout(&o).contains("<PairStatus>0</PairStatus>"), "{}", stdout(&o));

    // SIGTERM drains and exits 0; the log told how long start-up took.
    let _ = Command::new("kill").args(["-TERM", &host.pid().to_string()]).status();
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = host.exited() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let log = host.log();
    assert!(log.contains("TLS certificate generated in"), "{log}");
    assert!(log.contains("HTTPS listener ready in"), "{log}");
    assert!(log.contains("pairing waits for its PIN: open http://"), "{log}");

    // Offline, the CLI reads the state file directly.
    let o = wolf(&["--state-dir", &sd, "clients", "list"]);
    assert!(o.status.success() && stdout(&o).contains("no paired clients"), "{}", stdout(&o));
    let o = wolf(&["--state-dir", &sd, "pair", "1234"]);
    assert_eq!(o.status.code(), Some(4));
}
