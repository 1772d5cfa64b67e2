//! Per-frame streaming cost: packetizing a 1080p frame at 20 Mbps (60 fps: 41 667 bytes) with 20 %
//! FEC, FEC alone next to a plain copy of the same bytes, and the ciphers the host runs per
//! packet: audio (AES-128-CBC per packet), control messages (AES-128-GCM), and, for clients that
//! enable it (SS_ENC_VIDEO), every video packet (AES-128-GCM).

use criterion::{BatchSize, Criterion, Throughput, black_box, criterion_group, criterion_main};
use fec_rs::ReedSolomon;
use wolf_protocol::audio::{AudioPacketizer, encrypt};
use wolf_protocol::control::{Direction, seal};
use wolf_protocol::video::{
    FRAME_HEADER_LEN, FrameType, NV_LEN, Packetizer, RTP_LEN, VideoParams, VideoSealer, parity_for,
};

/// 20 Mbit/s at 60 fps.
const FRAME_BYTES: usize = 20_000_000 / 8 / 60;
/// Moonlight's default packet size.
const PACKET_SIZE: usize = 1024;

fn frame() -> Vec<u8> {
    (0..FRAME_BYTES).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8).collect()
}

fn bench(c: &mut Criterion) {
    let f = frame();
    let params = VideoParams { packet_size: PACKET_SIZE, fec_percent: 20, min_parity: 2 };

    let mut g = c.benchmark_group("frame_1080p_20mbps");
    g.throughput(Throughput::Bytes(FRAME_BYTES as u64));
    let mut p = Packetizer::new(params).expect("packetizer");
    g.bench_function("packetize_fec20", |b| {
        b.iter(|| p.packetize(black_box(&f), FrameType::P, 0, 0).expect("packetize"))
    });
    let mut p0 = Packetizer::new(VideoParams { fec_percent: 0, min_parity: 0, ..params }).expect("packetizer");
    g.bench_function("packetize_no_fec", |b| {
        b.iter(|| p0.packetize(black_box(&f), FrameType::P, 0, 0).expect("packetize"))
    });

    // The same shards Packetizer::packetize hands to the encoder for this frame (one block).
    let shard_len = PACKET_SIZE + RTP_LEN;
    let data = (FRAME_BYTES + FRAME_HEADER_LEN).div_ceil(PACKET_SIZE - NV_LEN);
    let parity = parity_for(data, 20);
    let rs = ReedSolomon::new(data, parity).expect("codec");
    let per_shard = PACKET_SIZE - NV_LEN;
    let shards: Vec<Vec<u8>> = (0..data + parity)
        .map(|k| {
            let mut s = vec![0u8; shard_len];
            if let Some(c) = f.chunks(per_shard).nth(k).filter(|_| k < data) {
                s[RTP_LEN + NV_LEN..RTP_LEN + NV_LEN + c.len()].copy_from_slice(c);
            }
            s
        })
        .collect();
    let data_bytes = (data * shard_len) as u64;
    g.throughput(Throughput::Bytes(data_bytes));
    g.bench_function(format!("fec_encode_{data}+{parity}_shards"), |b| {
        b.iter_batched_ref(|| shards.clone(), |s| rs.encode(black_box(s)).expect("encode"), BatchSize::LargeInput)
    });
    // Reference: copying the data shards' bytes once, into buffers allocated outside the timing.
    let flat: Vec<u8> = shards[..data].concat();
    let mut dst = vec![0u8; flat.len()];
    g.bench_function("memcpy_same_bytes", |b| b.iter(|| black_box(&mut dst).copy_from_slice(black_box(&flat))));
    g.finish();

    let mut g = c.benchmark_group("cipher");
    let key = [7u8; 16];
    // One 5 ms stereo Opus packet at 96 kbit/s: 60 bytes.
    let opus = vec![0x5au8; 60];
    g.throughput(Throughput::Bytes(opus.len() as u64));
    g.bench_function("audio_aes_cbc_packet_60B", |b| {
        b.iter(|| encrypt(&key, 1, 42, black_box(&opus)).expect("encrypt"))
    });
    let mut ap = AudioPacketizer::new(5, 1, Some((key, 1))).expect("audio packetizer");
    g.bench_function("audio_packetize_encrypted_fec_60B", |b| {
        b.iter(|| ap.packetize(black_box(&opus)).expect("audio"))
    });
    g.bench_function("control_aes_gcm_seal_16B", |b| {
        b.iter(|| seal(&key, 1, Direction::HostToClient, 0x0100, black_box(&[0u8; 16])).expect("seal"))
    });
    // Sealed video: every packet (data and parity) of the frame, as sent to a client that enabled it.
    let packets = Packetizer::new(params).expect("packetizer").packetize(&f, FrameType::P, 0, 0).expect("packetize");
    let mut sealer = VideoSealer::new(&key).expect("sealer");
    g.throughput(Throughput::Bytes(FRAME_BYTES as u64));
    g.bench_function("video_aes_gcm_seal_1080p_frame_fec20", |b| {
        b.iter(|| packets.iter().map(|p| sealer.seal(black_box(p)).expect("seal").len()).sum::<usize>())
    });
    // Scale reference only: the audio cipher over a whole frame.
    g.bench_function("aes_cbc_over_1080p_frame_reference", |b| {
        b.iter(|| encrypt(&key, 1, 42, black_box(&f)).expect("encrypt"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
