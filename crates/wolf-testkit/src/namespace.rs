//! Run one test of this binary again inside private Linux namespaces (`unshare`, no privileges
//! needed): for multicast that must not leave the machine, or mounts that must not touch it.

use std::process::Command;

/// Re-run `test` (an exact test name in this binary) under `unshare <namespaces>` after the shell
/// commands `setup`, with `env` set so the inner test knows it is inside; assert it passed.
pub fn rerun_inside(namespaces: &[&str], setup: &str, test: &str, env: &str) {
    let exe = std::env::current_exe().expect("test binary path");
    let script = format!("{setup}exec \"$0\" --exact {test} --nocapture --test-threads 1");
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .args(namespaces)
        .args(["sh", "-c", &script])
        .arg(&exe)
        .env(env, "1")
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child ran {test}:\n{stdout}");
}
