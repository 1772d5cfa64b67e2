//! Replays every committed fuzz input (`fuzz/corpus/<target>/`) of this crate's targets through
//! the harness the target runs, on stable: a crash found once stays fixed. `scripts/fuzz.sh`
//! finds new inputs with cargo-fuzz; the host's own targets are replayed in wolf-rs.

use std::path::PathBuf;

use wolf_protocol::fuzz_harness;

fn replay(target: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no inputs", dir.display());
    let (_, harness) = fuzz_harness::TARGETS.iter().find(|(t, _)| *t == target).expect("a harness of this crate");
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
            for (t, _) in fuzz_harness::TARGETS {
                assert!(tested.contains(t), "{t} is not replayed");
            }
        }
    };
}

corpus!(
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
