//! A session-store write as launches do it: the whole list as JSON, temp file, fsync, rename,
//! fsync of the directory. On the disk the target directory is on (not tmpfs).

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use wolf_rs::runners::RunnerHandle;
use wolf_rs::sessions::store::{FILE_NAME, SessionPorts, SessionRecord, SessionState, write};

fn record(id: u32) -> SessionRecord {
    SessionRecord {
        id,
        client_fingerprint: format!("{id:064x}"),
        client_ip: "192.168.1.20".parse().expect("ip"),
        app_id: 1,
        mode: "1920x1080x60".into(),
        codec: Some("h264".into()),
        ports: SessionPorts { rtsp: 48010, video: 47998, audio: 48000, control: 47999 },
        runner: RunnerHandle::Process { pid: 4242, start_time: 123_456 },
        display: None,
        sink: None,
        lobby: None,
        process: None,
        client_unique_id: "0123456789ABCDEF".into(),
        state: SessionState::Paused,
        surround_audio_info: 196_610,
        created_unix_ms: 1_700_000_000_000,
        updated_unix_ms: 1_700_000_000_000,
        last_activity_unix_ms: Some(1_700_000_000_000),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let path = dir.path().join(FILE_NAME);
    let mut g = c.benchmark_group("session_store");
    for n in [1u32, 16] {
        let records: Vec<SessionRecord> = (1..=n).map(record).collect();
        g.bench_function(format!("write_fsync_{n}_sessions"), |b| {
            b.iter(|| write(&path, black_box(&records)).expect("write"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
