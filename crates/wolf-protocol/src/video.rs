//! Video RTP packetization as Moonlight's depacketizer expects it: a frame header, shards of the
//! negotiated packet size, and up to four Reed–Solomon FEC blocks per frame (nanors' Cauchy
//! matrix, which `fec-rs` uses). When the client enabled SS_ENC_VIDEO, every finished packet (data
//! and parity alike) is then sealed whole with AES-128-GCM under the rikey, behind a 32-byte header.

use std::collections::HashMap;

use fec_rs::ReedSolomon;

use crate::gcm::{self, GcmError, StreamKey, TAG_LEN};

/// RTP header (12) plus the 4 reserved bytes the client skips.
pub const RTP_LEN: usize = 16;
/// NV_VIDEO_PACKET.
pub const NV_LEN: usize = 16;
/// Frame header for 7.1.415 <= appversion < 7.1.446.
pub const FRAME_HEADER_LEN: usize = 8;
pub const FLAG_PIC_DATA: u8 = 0x1;
pub const FLAG_EOF: u8 = 0x2;
pub const FLAG_SOF: u8 = 0x4;
pub const MULTI_FEC_FLAGS: u8 = 0x10;
pub const MAX_FEC_BLOCKS: usize = 4;
/// nanors: data + parity shards per block.
pub const MAX_SHARDS: usize = 255;

// Offsets inside a shard.
const OFF_PACKET_INDEX: usize = RTP_LEN;
const OFF_FRAME_INDEX: usize = RTP_LEN + 4;
const OFF_FLAGS: usize = RTP_LEN + 8;
const OFF_MULTI_FEC_FLAGS: usize = RTP_LEN + 10;
const OFF_MULTI_FEC_BLOCKS: usize = RTP_LEN + 11;
const OFF_FEC_INFO: usize = RTP_LEN + 12;
const OFF_PAYLOAD: usize = RTP_LEN + NV_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    P = 1,
    Idr = 2,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoError {
    #[error("packet size {0} is out of range (64 to 4096)")]
    PacketSize(usize),
    #[error("a {0}-byte frame needs more than {MAX_FEC_BLOCKS} FEC blocks at this packet size")]
    FrameTooLarge(usize),
    #[error("FEC: {0}")]
    Fec(String),
    #[error("malformed video packet: {0}")]
    Malformed(&'static str),
    #[error("video encryption: {0}")]
    Crypto(#[from] GcmError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoParams {
    /// `x-nv-video[0].packetSize`: NV header + payload per packet.
    pub packet_size: usize,
    /// Parity shards as a percentage of data shards.
    pub fec_percent: u8,
    /// `x-nv-vqos[0].fec.minRequiredFecPackets`.
    pub min_parity: usize,
}

/// Parity shards for `data` data shards at `pct` percent: ceil(data * pct / 100), as the client
/// computes it.
pub fn parity_for(data: usize, pct: usize) -> usize {
    (data * pct).div_ceil(100)
}

/// The percentage sent for a block: raised so at least `min_parity` shards result, and capped so
/// data + parity fits nanors' limit.
fn block_percent(data: usize, params: &VideoParams) -> usize {
    let mut pct = params.fec_percent as usize;
    if parity_for(data, pct) < params.min_parity {
        pct = (100 * params.min_parity).div_ceil(data);
    }
    pct = pct.min(255);
    while pct > 0 && data + parity_for(data, pct) > MAX_SHARDS {
        pct -= 1;
    }
    pct
}

/// Splits encoded frames into datagrams. Keeps the counters that must run across frames.
pub struct Packetizer {
    params: VideoParams,
    next_frame: u32,
    seq: u16,
    packet_counter: u32,
    codecs: HashMap<(usize, usize), ReedSolomon>,
}

impl Packetizer {
    pub fn new(params: VideoParams) -> Result<Packetizer, VideoError> {
        if !(64..=4096).contains(&params.packet_size) {
            return Err(VideoError::PacketSize(params.packet_size));
        }
        Ok(Packetizer { params, next_frame: 1, seq: 0, packet_counter: 0, codecs: HashMap::new() })
    }

    pub fn shard_len(&self) -> usize {
        self.params.packet_size + RTP_LEN
    }

    /// The frame index the next frame gets (the first frame is 1).
    pub fn next_frame_index(&self) -> u32 {
        self.next_frame
    }

    /// Data shards per block such that every block fits in MAX_SHARDS with its parity.
    fn block_capacity(&self) -> usize {
        (1..=MAX_SHARDS).rev().find(|d| *d + parity_for(*d, block_percent(*d, &self.params)) <= MAX_SHARDS).unwrap_or(1)
    }

    fn codec(&mut self, data: usize, parity: usize) -> Result<&ReedSolomon, VideoError> {
        use std::collections::hash_map::Entry;
        match self.codecs.entry((data, parity)) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(v) => {
                let rs = ReedSolomon::new(data, parity).map_err(|e| VideoError::Fec(format!("{e:?}")))?;
                Ok(v.insert(rs))
            }
        }
    }

    /// One encoded frame (Annex B) → its datagrams, in send order.
    pub fn packetize(
        &mut self,
        bitstream: &[u8],
        frame_type: FrameType,
        timestamp_90k: u32,
        host_latency_100us: u16,
    ) -> Result<Vec<Vec<u8>>, VideoError> {
        let per_shard = self.params.packet_size - NV_LEN;
        let mut payload = Vec::with_capacity(FRAME_HEADER_LEN + bitstream.len());
        let last_len = match (bitstream.len() + FRAME_HEADER_LEN) % per_shard {
            0 => per_shard,
            n => n,
        } as u16;
        payload.push(0x01);
        payload.extend_from_slice(&host_latency_100us.to_le_bytes());
        payload.push(frame_type as u8);
        payload.extend_from_slice(&last_len.to_le_bytes());
        payload.extend_from_slice(&[0, 0]);
        payload.extend_from_slice(bitstream);

        let total_data = payload.len().div_ceil(per_shard);
        let capacity = self.block_capacity();
        let blocks = total_data.div_ceil(capacity);
        if blocks > MAX_FEC_BLOCKS {
            return Err(VideoError::FrameTooLarge(bitstream.len()));
        }
        // Even split, earlier blocks take the remainder.
        let base = total_data / blocks;
        let extra = total_data % blocks;
        let frame = self.next_frame;
        let shard_len = self.shard_len();
        let mut out = Vec::new();
        let mut chunks = payload.chunks(per_shard);
        for b in 0..blocks {
            let data = base + usize::from(b < extra);
            let pct = block_percent(data, &self.params);
            let parity = parity_for(data, pct);
            let multi_blocks = ((b as u8) << 4) | (((blocks - 1) as u8) << 6);
            let mut shards: Vec<Vec<u8>> = Vec::with_capacity(data + parity);
            for k in 0..data {
                let mut s = vec![0u8; shard_len];
                s[OFF_PACKET_INDEX..OFF_PACKET_INDEX + 4].copy_from_slice(&(self.packet_counter << 8).to_le_bytes());
                self.packet_counter = self.packet_counter.wrapping_add(1);
                s[OFF_FRAME_INDEX..OFF_FRAME_INDEX + 4].copy_from_slice(&frame.to_le_bytes());
                let mut flags = FLAG_PIC_DATA;
                if k == 0 {
                    flags |= FLAG_SOF;
                }
                if k == data - 1 {
                    flags |= FLAG_EOF;
                }
                s[OFF_FLAGS] = flags;
                s[OFF_MULTI_FEC_FLAGS] = MULTI_FEC_FLAGS;
                s[OFF_MULTI_FEC_BLOCKS] = multi_blocks;
                if let Some(c) = chunks.next() {
                    s[OFF_PAYLOAD..OFF_PAYLOAD + c.len()].copy_from_slice(c);
                }
                shards.push(s);
            }
            if parity > 0 {
                shards.extend((0..parity).map(|_| vec![0u8; shard_len]));
                self.codec(data, parity)?.encode(&mut shards).map_err(|e| VideoError::Fec(format!("{e:?}")))?;
                self.packet_counter = self.packet_counter.wrapping_add(parity as u32);
            }
            // Set after encoding, in data and parity alike (the client does the same on receipt).
            for (x, s) in shards.iter_mut().enumerate() {
                s[0] = 0x90;
                s[2..4].copy_from_slice(&self.seq.to_be_bytes());
                self.seq = self.seq.wrapping_add(1);
                s[4..8].copy_from_slice(&timestamp_90k.to_be_bytes());
                let fec_info = ((x as u32) << 12) | ((data as u32) << 22) | ((pct as u32) << 4);
                s[OFF_FEC_INFO..OFF_FEC_INFO + 4].copy_from_slice(&fec_info.to_le_bytes());
                if x >= data {
                    s[OFF_FRAME_INDEX..OFF_FRAME_INDEX + 4].copy_from_slice(&frame.to_le_bytes());
                    s[OFF_MULTI_FEC_BLOCKS] = multi_blocks;
                }
            }
            out.extend(shards);
        }
        self.next_frame = self.next_frame.wrapping_add(1);
        Ok(out)
    }
}

/// ENC_VIDEO_HEADER, before each sealed packet: `iv[12] | LE32 frame index | tag[16]`. A multiple of
/// 16 so the shard size stays one (the client takes it off its packetSize).
pub const ENC_HEADER_LEN: usize = 32;
const ENC_OFF_FRAME: usize = 12;
const ENC_OFF_TAG: usize = 16;

/// Seal one finished packet (as [`Packetizer::packetize`] made it, all of it from the RTP header on)
/// with IV number `iv_counter`: `ENC_VIDEO_HEADER ‖ ciphertext`. The header repeats the packet's
/// frame index in the clear so the client can drop stale packets before opening them.
pub fn encrypt_packet(key: &StreamKey, iv_counter: u64, packet: &[u8]) -> Result<Vec<u8>, VideoError> {
    if packet.len() < OFF_PAYLOAD {
        return Err(VideoError::Malformed("shorter than the RTP and NV headers"));
    }
    let iv = gcm::video_iv(iv_counter);
    let mut out = vec![0u8; ENC_HEADER_LEN + packet.len()];
    out[ENC_HEADER_LEN..].copy_from_slice(packet);
    let tag = key.seal_in_place(iv, &mut out[ENC_HEADER_LEN..])?;
    out[..ENC_OFF_FRAME].copy_from_slice(&iv);
    out[ENC_OFF_FRAME..ENC_OFF_TAG].copy_from_slice(&packet[OFF_FRAME_INDEX..OFF_FRAME_INDEX + 4]);
    out[ENC_OFF_TAG..ENC_HEADER_LEN].copy_from_slice(&tag);
    Ok(out)
}

/// Open a sealed datagram (the client side): the plain packet, or an error if it is too short or
/// does not authenticate under `key`.
pub fn decrypt_packet(key: &StreamKey, datagram: &[u8]) -> Result<Vec<u8>, VideoError> {
    // The client's floor: the header and at least an RTP header behind it.
    if datagram.len() < ENC_HEADER_LEN + 12 {
        return Err(VideoError::Malformed("shorter than the encryption header"));
    }
    let mut iv = [0u8; 12];
    iv.copy_from_slice(&datagram[..ENC_OFF_FRAME]);
    let mut plain = datagram[ENC_HEADER_LEN..].to_vec();
    key.open_in_place(iv, &datagram[ENC_OFF_TAG..ENC_OFF_TAG + TAG_LEN], &mut plain)?;
    Ok(plain)
}

/// The frame index a sealed datagram claims in the clear. Not authenticated: only good for
/// dropping stale packets unopened, as the client does.
pub fn sealed_frame_index(datagram: &[u8]) -> Option<u32> {
    let b = datagram.get(ENC_OFF_FRAME..ENC_OFF_TAG)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A session's video sealer: the key and the IV counter, which starts at 0 (as Sunshine's) and
/// gives every packet of the session its own IV. Lives in the sender thread.
#[derive(Debug)]
pub struct VideoSealer {
    key: StreamKey,
    next_iv: u64,
}

impl VideoSealer {
    pub fn new(rikey: &[u8; 16]) -> Result<VideoSealer, VideoError> {
        Ok(VideoSealer { key: StreamKey::new(rikey)?, next_iv: 0 })
    }

    /// Seal the next packet of the session.
    pub fn seal(&mut self, packet: &[u8]) -> Result<Vec<u8>, VideoError> {
        let out = encrypt_packet(&self.key, self.next_iv, packet)?;
        // 2^64 packets never come; a packet that failed to seal used no IV.
        self.next_iv = self.next_iv.wrapping_add(1);
        Ok(out)
    }
}

/// Header fields of a received video datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    pub seq: u16,
    pub frame_index: u32,
    pub block: usize,
    pub last_block: usize,
    pub shard_index: usize,
    pub data_shards: usize,
    pub fec_percent: usize,
}

pub fn parse_packet(p: &[u8]) -> Result<PacketInfo, VideoError> {
    if p.len() < OFF_PAYLOAD {
        return Err(VideoError::Malformed("shorter than the RTP and NV headers"));
    }
    if p[0] & 0xC0 != 0x80 {
        return Err(VideoError::Malformed("not RTP version 2"));
    }
    let u32_at = |o: usize| u32::from_le_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]]);
    let fec = u32_at(OFF_FEC_INFO);
    let blocks = p[OFF_MULTI_FEC_BLOCKS];
    Ok(PacketInfo {
        seq: u16::from_be_bytes([p[2], p[3]]),
        frame_index: u32_at(OFF_FRAME_INDEX),
        block: ((blocks >> 4) & 3) as usize,
        last_block: ((blocks >> 6) & 3) as usize,
        shard_index: ((fec >> 12) & 0x3ff) as usize,
        data_shards: ((fec >> 22) & 0x3ff) as usize,
        fec_percent: ((fec >> 4) & 0xff) as usize,
    })
}

/// Reassembles one frame from whatever datagrams arrived (the client's job; used by the tests and
/// the test client). Returns the frame type and the bitstream, zero padding included.
pub fn reassemble(packets: &[Vec<u8>]) -> Result<(u8, Vec<u8>), VideoError> {
    let first = packets.first().ok_or(VideoError::Malformed("no packets"))?;
    let info0 = parse_packet(first)?;
    let shard_len = first.len();
    let blocks = info0.last_block + 1;
    let mut payload = Vec::new();
    for b in 0..blocks {
        let in_block: Vec<(PacketInfo, &Vec<u8>)> = packets
            .iter()
            .filter_map(|p| parse_packet(p).ok().map(|i| (i, p)))
            .filter(|(i, p)| i.block == b && i.frame_index == info0.frame_index && p.len() == shard_len)
            .collect();
        let (info, _) = *in_block.first().ok_or(VideoError::Malformed("a whole FEC block is missing"))?;
        let data = info.data_shards;
        let parity = parity_for(data, info.fec_percent);
        if data == 0 || data + parity > MAX_SHARDS {
            return Err(VideoError::Malformed("bad fecInfo"));
        }
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; data + parity];
        for (i, p) in in_block {
            if let Some(slot) = shards.get_mut(i.shard_index) {
                let mut s = p.clone();
                // Columns written after encoding were zero when parity was computed.
                s[..RTP_LEN].fill(0);
                s[OFF_FEC_INFO..OFF_FEC_INFO + 4].fill(0);
                *slot = Some(s);
            }
        }
        if shards[..data].iter().any(Option::is_none) {
            if parity == 0 {
                return Err(VideoError::Malformed("data shards lost and no parity"));
            }
            let rs = ReedSolomon::new(data, parity).map_err(|e| VideoError::Fec(format!("{e:?}")))?;
            rs.reconstruct_data(&mut shards).map_err(|e| VideoError::Fec(format!("{e:?}")))?;
        }
        for s in shards.into_iter().take(data) {
            let s = s.ok_or(VideoError::Malformed("unrecovered shard"))?;
            payload.extend_from_slice(&s[OFF_PAYLOAD..]);
        }
    }
    if payload.len() < FRAME_HEADER_LEN || payload[0] != 0x01 {
        return Err(VideoError::Malformed("bad frame header"));
    }
    Ok((payload[3], payload.split_off(FRAME_HEADER_LEN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(fec: u8) -> VideoParams {
        VideoParams { packet_size: 1024, fec_percent: fec, min_parity: 2 }
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn check(out: &[Vec<u8>], original: &[u8], ft: FrameType) {
        let (t, bits) = reassemble(out).unwrap();
        assert_eq!(t, ft as u8);
        assert_eq!(&bits[..original.len()], original);
        assert!(bits[original.len()..].iter().all(|b| *b == 0));
    }

    #[test]
    fn frames_of_many_sizes_split_and_reassemble() {
        let mut p = Packetizer::new(params(20)).unwrap();
        for (n, len) in [1usize, 999, 1000, 1001, 1008, 5000, 65_536, 200_000, 500_000].into_iter().enumerate() {
            let f = frame(len, n as u8);
            let out = p.packetize(&f, FrameType::Idr, 90_000, 5).unwrap();
            assert!(out.iter().all(|d| d.len() == 1024 + RTP_LEN));
            check(&out, &f, FrameType::Idr);
            // Frame indices count from 1, one per frame.
            assert_eq!(parse_packet(&out[0]).unwrap().frame_index, n as u32 + 1);
        }
    }

    #[test]
    fn header_fields_follow_the_client_rules() {
        let mut p = Packetizer::new(params(20)).unwrap();
        let out = p.packetize(&frame(300_000, 1), FrameType::P, 7, 0).unwrap();
        let infos: Vec<PacketInfo> = out.iter().map(|d| parse_packet(d).unwrap()).collect();
        assert!(infos[0].last_block >= 1, "a big frame uses several blocks");
        for w in infos.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "contiguous sequence numbers");
            assert!(w[1].block >= w[0].block, "blocks in order");
        }
        for (i, d) in out.iter().enumerate() {
            let info = infos[i];
            assert_eq!(d[0], 0x90, "RTP v2 with the extension bit");
            if info.shard_index < info.data_shards {
                let flags = d[OFF_FLAGS];
                assert_eq!(flags & !(FLAG_PIC_DATA | FLAG_SOF | FLAG_EOF), 0);
                assert_eq!(flags & FLAG_SOF != 0, info.shard_index == 0);
                assert_eq!(flags & FLAG_EOF != 0, info.shard_index == info.data_shards - 1);
                assert_eq!(d[OFF_MULTI_FEC_FLAGS], MULTI_FEC_FLAGS);
            }
            assert!(parity_for(info.data_shards, info.fec_percent) >= 2);
        }
    }

    #[test]
    fn every_loss_pattern_up_to_the_parity_count_is_recovered() {
        // 6 data shards at 50 %: 3 parity; every subset of up to 3 lost shards (any of 9).
        let mut p = Packetizer::new(VideoParams { packet_size: 128, fec_percent: 50, min_parity: 0 }).unwrap();
        let f = frame(6 * 112 - FRAME_HEADER_LEN, 9);
        let out = p.packetize(&f, FrameType::Idr, 0, 0).unwrap();
        assert_eq!(out.len(), 9);
        let mut patterns = 0;
        for mask in 0u32..(1 << 9) {
            if mask.count_ones() > 3 {
                continue;
            }
            let kept: Vec<Vec<u8>> =
                out.iter().enumerate().filter(|(i, _)| mask & (1 << i) == 0).map(|(_, d)| d.clone()).collect();
            check(&kept, &f, FrameType::Idr);
            patterns += 1;
        }
        assert_eq!(patterns, 1 + 9 + 36 + 84);
        // One more loss than parity cannot be recovered, and says so.
        let kept: Vec<Vec<u8>> = out[4..].to_vec();
        assert!(reassemble(&kept).is_err());
    }

    #[test]
    fn parity_matches_the_cauchy_reference() {
        // Reference: parity[j] = XOR_i inv((ps + i) ^ j) * data[i] over GF(2^8)/0x11D.
        fn mul(mut a: u8, mut b: u8) -> u8 {
            let mut r = 0u8;
            while b != 0 {
                if b & 1 != 0 {
                    r ^= a;
                }
                let hi = a & 0x80;
                a <<= 1;
                if hi != 0 {
                    a ^= 0x1d;
                }
                b >>= 1;
            }
            r
        }
        fn inv(a: u8) -> u8 {
            (1..=255u8).find(|x| mul(a, *x) == 1).unwrap_or(0)
        }
        let (ds, ps) = (5usize, 3usize);
        let data: Vec<Vec<u8>> = (0..ds).map(|i| frame(64, i as u8 * 17)).collect();
        let mut shards: Vec<Vec<u8>> = data.clone();
        shards.extend((0..ps).map(|_| vec![0u8; 64]));
        ReedSolomon::new(ds, ps).unwrap().encode(&mut shards).unwrap();
        for j in 0..ps {
            for b in 0..64 {
                let want = (0..ds).fold(0u8, |acc, i| acc ^ mul(inv(((ps + i) ^ j) as u8), data[i][b]));
                assert_eq!(shards[ds + j][b], want, "parity {j} byte {b}");
            }
        }
    }

    const KEY: [u8; 16] = [7; 16];

    #[test]
    fn sealed_packets_open_back_and_reassemble() {
        let mut p = Packetizer::new(VideoParams { packet_size: 128, fec_percent: 50, min_parity: 2 }).unwrap();
        let mut sealer = VideoSealer::new(&KEY).unwrap();
        let key = StreamKey::new(&KEY).unwrap();
        let mut ivs = std::collections::HashSet::new();
        for (n, len) in [500usize, 3000].into_iter().enumerate() {
            let f = frame(len, n as u8);
            let plain = p.packetize(&f, FrameType::Idr, 0, 0).unwrap();
            let sealed: Vec<Vec<u8>> = plain.iter().map(|d| sealer.seal(d).unwrap()).collect();
            for (d, s) in plain.iter().zip(&sealed) {
                assert_eq!(s.len(), ENC_HEADER_LEN + d.len());
                assert_ne!(&s[ENC_HEADER_LEN..], &d[..], "the packet is not sent in the clear");
                assert_eq!(&s[8..12], b"\0\0\0V");
                assert!(ivs.insert(s[..12].to_vec()), "every packet has its own IV");
                assert_eq!(sealed_frame_index(s), Some(n as u32 + 1));
                assert_eq!(&decrypt_packet(&key, s).unwrap(), d);
            }
            // Parity was sealed too: drop two data shards, open the rest, FEC recovers them.
            let opened: Vec<Vec<u8>> = sealed[2..].iter().map(|s| decrypt_packet(&key, s).unwrap()).collect();
            check(&opened, &f, FrameType::Idr);
        }
        // The counter runs across frames: IV numbers 0, 1, 2, ... in send order.
        let counters: Vec<u64> = ivs.iter().map(|iv| u64::from_le_bytes(iv[..8].try_into().unwrap())).collect();
        assert_eq!(counters.iter().max(), Some(&(counters.len() as u64 - 1)));
    }

    #[test]
    fn a_tampered_or_foreign_sealed_packet_is_refused() {
        let mut p = Packetizer::new(VideoParams { packet_size: 128, fec_percent: 0, min_parity: 0 }).unwrap();
        let plain = p.packetize(&frame(100, 3), FrameType::P, 0, 0).unwrap().remove(0);
        let key = StreamKey::new(&KEY).unwrap();
        let sealed = encrypt_packet(&key, 9, &plain).unwrap();
        let auth = Err(VideoError::Crypto(GcmError::Auth));
        // A bit flipped in the IV, the tag, the first and the last ciphertext byte.
        for at in [0, 11, ENC_OFF_TAG, ENC_HEADER_LEN - 1, ENC_HEADER_LEN, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[at] ^= 0x01;
            assert_eq!(decrypt_packet(&key, &t), auth, "byte {at} flipped");
        }
        assert_eq!(decrypt_packet(&StreamKey::new(&[8; 16]).unwrap(), &sealed), auth, "another key");
        assert_eq!(decrypt_packet(&key, &sealed[..sealed.len() - 1]), auth, "truncated");
        assert_eq!(decrypt_packet(&key, &plain), auth, "a plain packet");
        assert!(matches!(decrypt_packet(&key, &sealed[..ENC_HEADER_LEN + 11]), Err(VideoError::Malformed(_))));
        assert!(matches!(decrypt_packet(&key, &[]), Err(VideoError::Malformed(_))));
        assert!(matches!(encrypt_packet(&key, 0, &plain[..OFF_PAYLOAD - 1]), Err(VideoError::Malformed(_))));
        assert_eq!(sealed_frame_index(&sealed[..15]), None);
        // The clear frame index is a hint the client checks before opening, outside the tag, as in
        // moonlight-common-c: changing it does not stop the packet opening.
        let mut hint = sealed.clone();
        hint[ENC_OFF_FRAME] ^= 0x80;
        assert_eq!(decrypt_packet(&key, &hint).unwrap(), plain);
    }

    #[test]
    fn bad_params_and_garbage_packets_are_errors() {
        assert!(Packetizer::new(VideoParams { packet_size: 10, fec_percent: 0, min_parity: 0 }).is_err());
        let mut p = Packetizer::new(VideoParams { packet_size: 64, fec_percent: 0, min_parity: 0 }).unwrap();
        assert!(matches!(p.packetize(&vec![0u8; 1 << 20], FrameType::P, 0, 0), Err(VideoError::FrameTooLarge(_))));
        for junk in [vec![], vec![0x90; 5], vec![0u8; 40], vec![0xffu8; 2000]] {
            let _ = parse_packet(&junk);
            let _ = reassemble(&[junk]);
        }
    }
}
