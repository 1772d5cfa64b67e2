//! Replays every committed fuzz input (`fuzz/corpus/<target>/`) through the harness its target
//! runs (the wire-format ones in `wolf_protocol::fuzz_harness`, the host's in
//! `wolf_rs::fuzz_harness`), on stable: a crash found once stays fixed. `scripts/fuzz.sh` finds
//! new inputs with cargo-fuzz.

use std::path::PathBuf;

use wolf_rs::fuzz_harness;

/// Every harness, of both crates.
fn harnesses() -> impl Iterator<Item = &'static (&'static str, fn(&[u8]))> {
    fuzz_harness::TARGETS.iter().chain(wolf_protocol::fuzz_harness::TARGETS)
}

fn replay(target: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no inputs", dir.display());
    let (_, harness) = harnesses().find(|(t, _)| *t == target).expect("a harness for this target");
    for f in files {
        let data = std::fs::read(&f).unwrap();
        if std::panic::catch_unwind(|| harness(&data)).is_err() {
            panic!(
                "{target}: {} fails (run `cargo +nightly fuzz run {target} {}` to see it)",
                f.display(),
                f.display()
            );
        }
    }
}

macro_rules! corpus {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target));
            }
        )*

        #[test]
        fn every_harness_has_a_test() {
            let tested = [$(stringify!($target)),*];
            for (t, _) in harnesses() {
                assert!(tested.contains(t), "{t} is not replayed");
            }
        }
    };
}

corpus!(
    http_query,
    state_sessions,
    state_clients,
    state_identity,
    config,
    rtsp_session,
    rtsp_request,
    rtsp_announce,
    rtsp_sealed,
    control_message,
    input,
    pairing_steps,
    xml,
    video_packetize,
    audio_packetize,
    annexb
);

/// Every corpus directory and every cargo-fuzz target has a harness, in one crate or the other.
#[test]
fn every_target_has_a_harness() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let known: Vec<&str> = harnesses().map(|(t, _)| *t).collect();
    for sub in ["corpus", "fuzz_targets"] {
        for e in std::fs::read_dir(fuzz.join(sub)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let name = name.trim_end_matches(".rs");
            assert!(known.contains(&name), "fuzz/{sub}/{name} has no harness");
        }
    }
    assert_eq!(std::fs::read_dir(fuzz.join("fuzz_targets")).unwrap().count(), known.len(), "a target per harness");
}
