//! `wolf-xevents`, the X client the input tests run as their app, writes down what an X server
//! delivers to it: checked here against xdotool on an Xvfb of its own. (Being an integration test
//! of this crate also makes `cargo test --workspace` build the binary the other tests run.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Ends the child when dropped, also when the test fails: SIGTERM, so an X server removes its
/// socket and lock file.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; no memory is involved.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn it_records_keys_buttons_and_motion_in_order() {
    // A display number no other test uses.
    let display = ":339";
    let _x = Child(
        Command::new("Xvfb")
            .args([display, "-screen", "0", "640x360x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (scripts/deps.sh installs it)"),
    );
    // Accepting, not merely there: a socket an earlier server left behind does not count.
    wait_for("Xvfb", || std::os::unix::net::UnixStream::connect("/tmp/.X11-unix/X339").is_ok());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events");
    let _rec =
        Child(Command::new(env!("CARGO_BIN_EXE_wolf-xevents")).arg(&out).env("DISPLAY", display).spawn().unwrap());
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    wait_for("the recorder", || read().starts_with("ready"));
    let xdotool = |args: &[&str]| {
        let ok = Command::new("xdotool").args(args).env("DISPLAY", display).status().expect("xdotool");
        assert!(ok.success());
    };
    xdotool(&["key", "a"]);
    xdotool(&["mousemove", "100", "50"]);
    xdotool(&["click", "3"]);
    wait_for("the events", || read().lines().count() >= 6);
    let lines: Vec<String> = read().lines().skip(1).map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            "key_press 0x61 state=0x0",
            "key_release 0x61 state=0x0",
            "motion 100 50",
            "button_press 3",
            "button_release 3"
        ]
    );
}
