//! Tests that need a kernel this machine's does not give (uinput for virtual gamepads) run again
//! inside a QEMU guest under software emulation: Debian's kernel with uinput and evdev loaded, a
//! small initramfs with busybox, the test binary and the libraries it links (`guest.sh`).

/// Set inside the guest: the test is running where uinput exists.
pub const IN_GUEST: &str = "WOLF_RS_IN_GUEST";

pub fn in_guest() -> bool {
    std::env::var_os(IN_GUEST).is_some()
}

/// Run the test `name` of the running test binary in the guest; panics with its output unless it
/// passed there.
pub fn run(name: &str) {
    let script = std::env::temp_dir().join(format!("wolf-rs-guest-{}.sh", std::process::id()));
    std::fs::write(&script, include_str!("guest.sh")).expect("write guest.sh");
    let exe = std::env::current_exe().expect("the test's own path");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(&exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .output()
        .expect("bash");
    let _ = std::fs::remove_file(&script);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{name} failed in the guest ({}):\n{text}", out.status);
    assert!(text.contains("1 passed"), "{name} did not run in the guest:\n{text}");
}
