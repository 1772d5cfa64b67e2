//! The workspace as tests find it: its root folder (docker/, gst-pipelines/) and its binaries, built
//! by `cargo test --workspace` into `target/<profile>`, beside the test executables' `deps` folder.

use std::path::{Path, PathBuf};

/// The workspace root (where `Cargo.lock` is).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `name` (wolf-rs, wolf-client, wolf-load): `$WOLF_<NAME>_BIN` if set, else from the target folder
/// of the running test. Panics with what to run when it is not built.
pub fn bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|d| d.join(name)).collect();
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!("{name} is not built (looked at {candidates:?}): run `cargo test --workspace` or `cargo build --workspace`, or set {var}")
    })
}

/// The host binary.
pub fn host_bin() -> PathBuf {
    bin("wolf-rs")
}
