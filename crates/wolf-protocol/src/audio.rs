//! Audio RTP for Moonlight: one Opus frame per packet, AES-128-CBC when negotiated, and 2 parity
//! packets for every 4 data packets with the clients' fixed matrix.

use aws_lc_rs::cipher::{AES_128, PaddedBlockEncryptingKey, UnboundCipherKey};
use fec_rs::ReedSolomon;

pub const PT_AUDIO: u8 = 97;
pub const PT_FEC: u8 = 127;
pub const DATA_SHARDS: usize = 4;
pub const PARITY_SHARDS: usize = 2;
/// The parity rows Moonlight clients decode audio FEC with.
pub const PARITY_MATRIX: [u8; 8] = [0x77, 0x40, 0x38, 0x0e, 0xc7, 0xa7, 0x0d, 0x6c];
pub const RTP_LEN: usize = 12;
pub const FEC_HEADER_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    #[error("audio encryption: {0}")]
    Crypto(&'static str),
    #[error("audio FEC: {0}")]
    Fec(String),
}

/// AES-128-CBC with PKCS#7; IV = BE32(rikeyid + seq) followed by 12 zero bytes.
pub fn encrypt(key: &[u8; 16], rikeyid: i32, seq: u16, plain: &[u8]) -> Result<Vec<u8>, AudioError> {
    let mut iv = [0u8; 16];
    iv[..4].copy_from_slice(&(rikeyid as u32).wrapping_add(u32::from(seq)).to_be_bytes());
    let k = UnboundCipherKey::new(&AES_128, key).map_err(|_| AudioError::Crypto("key"))?;
    let k = PaddedBlockEncryptingKey::cbc_pkcs7(k).map_err(|_| AudioError::Crypto("CBC key"))?;
    let mut buf = plain.to_vec();
    k.less_safe_encrypt(&mut buf, aws_lc_rs::cipher::EncryptionContext::Iv128(iv.into()))
        .map_err(|_| AudioError::Crypto("encrypt"))?;
    Ok(buf)
}

/// Surround layouts the host offers: 5.1 and 7.1.
pub const SURROUND_CHANNELS: [u32; 2] = [6, 8];

/// The Opus stream layout for `channels`: (streams, coupled streams, mapping). Stereo is one coupled
/// stream; surround is one mono stream per channel in the clients' channel order (FL FR FC LFE BL BR
/// SL SR), so the mapping is the identity and no encoder's own surround table matters.
pub fn opus_layout(channels: u32) -> (u32, u32, Vec<u8>) {
    let mapping = (0..channels.min(8) as u8).collect();
    if channels == 2 { (1, 1, mapping) } else { (channels, 0, mapping) }
}

/// The DESCRIBE line `a=fmtp:97 surround-params=…` for a surround layout: one digit each for
/// channels, streams, coupled streams, then the mapping. Clients move the last mapping entry to
/// the LFE slot (index 3) of normal-quality layouts, so the LFE entry is sent last.
pub fn surround_params(channels: u32) -> String {
    let (streams, coupled, mut mapping) = opus_layout(channels);
    if mapping.len() > 3 {
        let lfe = mapping.remove(3);
        mapping.push(lfe);
    }
    let digits: String = mapping.iter().map(|m| char::from(b'0' + m)).collect();
    format!("a=fmtp:97 surround-params={channels}{streams}{coupled}{digits}")
}

/// What a client makes of a normal-quality surround-params value (channels, streams, coupled,
/// mapping), after moving the last mapping entry to the LFE slot. `None` if malformed.
pub fn client_surround_layout(params: &str) -> Option<(u32, u32, u32, Vec<u8>)> {
    let d: Vec<u32> = params.chars().map(|c| c.to_digit(10)).collect::<Option<_>>()?;
    let (&c, &s, &k) = (d.first()?, d.get(1)?, d.get(2)?);
    let mut mapping: Vec<u8> = d.get(3..3 + c as usize)?.iter().map(|m| *m as u8).collect();
    if c == 6 || c == 8 {
        let last = mapping.pop()?;
        mapping.insert(3, last);
    }
    Some((c, s, k, mapping))
}

pub struct AudioPacketizer {
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    packet_ms: u32,
    encryption: Option<([u8; 16], i32)>,
    block: Vec<Vec<u8>>,
    base_seq: u16,
    base_ts: u32,
    rs: ReedSolomon,
}

impl AudioPacketizer {
    pub fn new(packet_ms: u32, ssrc: u32, encryption: Option<([u8; 16], i32)>) -> Result<Self, AudioError> {
        let mut rs = ReedSolomon::new(DATA_SHARDS, PARITY_SHARDS).map_err(|e| AudioError::Fec(format!("{e:?}")))?;
        rs.set_parity_matrix(&PARITY_MATRIX).map_err(|e| AudioError::Fec(format!("{e:?}")))?;
        Ok(AudioPacketizer {
            seq: 0,
            timestamp: 0,
            ssrc,
            packet_ms: packet_ms.max(1),
            encryption,
            block: Vec::with_capacity(DATA_SHARDS),
            base_seq: 0,
            base_ts: 0,
            rs,
        })
    }

    fn header(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut h = Vec::with_capacity(RTP_LEN + 1500);
        h.extend_from_slice(&[0x80, pt]);
        h.extend_from_slice(&seq.to_be_bytes());
        h.extend_from_slice(&ts.to_be_bytes());
        h.extend_from_slice(&ssrc.to_be_bytes());
        h
    }

    /// One Opus frame → its data packet, plus the block's 2 parity packets after every 4th.
    pub fn packetize(&mut self, opus: &[u8]) -> Result<Vec<Vec<u8>>, AudioError> {
        let (seq, ts) = (self.seq, self.timestamp);
        let payload = match &self.encryption {
            Some((key, id)) => encrypt(key, *id, seq, opus)?,
            None => opus.to_vec(),
        };
        let mut out = Vec::with_capacity(3);
        let mut data = Self::header(PT_AUDIO, seq, ts, self.ssrc);
        data.extend_from_slice(&payload);
        out.push(data);
        if seq as usize % DATA_SHARDS == 0 {
            self.block.clear();
            self.base_seq = seq;
            self.base_ts = ts;
        }
        self.block.push(payload);
        if self.block.len() == DATA_SHARDS {
            let len = self.block[0].len();
            // Parity needs equal lengths (CBR) and something to protect (the FEC refuses empty
            // shards); otherwise this block goes without.
            if len > 0 && self.block.iter().all(|p| p.len() == len) {
                let mut shards: Vec<Vec<u8>> = self.block.clone();
                shards.extend((0..PARITY_SHARDS).map(|_| vec![0u8; len]));
                self.rs.encode(&mut shards).map_err(|e| AudioError::Fec(format!("{e:?}")))?;
                for (i, parity) in shards[DATA_SHARDS..].iter().enumerate() {
                    let mut p = Self::header(
                        PT_FEC,
                        self.base_seq.wrapping_add((DATA_SHARDS + i) as u16),
                        self.base_ts,
                        self.ssrc,
                    );
                    p.push(i as u8);
                    p.push(PT_AUDIO);
                    p.extend_from_slice(&self.base_seq.to_be_bytes());
                    p.extend_from_slice(&self.base_ts.to_be_bytes());
                    p.extend_from_slice(&self.ssrc.to_be_bytes());
                    p.extend_from_slice(parity);
                    out.push(p);
                }
            }
            self.block.clear();
        }
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(self.packet_ms);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn surround_params_match_what_clients_decode() {
        assert_eq!(surround_params(6), "a=fmtp:97 surround-params=660012453");
        assert_eq!(surround_params(8), "a=fmtp:97 surround-params=88001245673");
        for c in SURROUND_CHANNELS {
            let line = surround_params(c);
            let value = line.trim_start_matches("a=fmtp:97 surround-params=");
            let (channels, streams, coupled, mapping) = client_surround_layout(value).unwrap();
            let (s, k, m) = opus_layout(c);
            assert_eq!((channels, streams, coupled, mapping), (c, s, k, m), "the client decodes what we encode");
        }
        // Wolf's 5.1 line ends up as the opusenc Vorbis layout (0 1 4 5 2 3).
        assert_eq!(client_surround_layout("642014235").unwrap().3, vec![0, 1, 4, 5, 2, 3]);
        assert_eq!(client_surround_layout("6x"), None);
        assert_eq!(client_surround_layout("66001"), None);
    }

    use super::*;
    use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey};

    fn decrypt(key: &[u8; 16], rikeyid: i32, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; 16];
        iv[..4].copy_from_slice(&(rikeyid as u32).wrapping_add(u32::from(seq)).to_be_bytes());
        let k = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_128, key).unwrap()).unwrap();
        let mut buf = data.to_vec();
        k.decrypt(&mut buf, DecryptionContext::Iv128(iv.into())).unwrap().to_vec()
    }

    #[test]
    fn packets_blocks_and_recovery() {
        let key = [9u8; 16];
        let mut p = AudioPacketizer::new(5, 0x1234, Some((key, -7))).unwrap();
        let mut all = Vec::new();
        for i in 0..8u8 {
            all.extend(p.packetize(&[i; 40]).unwrap());
        }
        // 8 data + 2 blocks × 2 parity.
        assert_eq!(all.len(), 12);
        let data: Vec<&Vec<u8>> = all.iter().filter(|x| x[1] == PT_AUDIO).collect();
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d[0], 0x80);
            assert_eq!(u16::from_be_bytes([d[2], d[3]]), i as u16);
            assert_eq!(u32::from_be_bytes([d[4], d[5], d[6], d[7]]), 5 * i as u32, "timestamps in ms");
            assert_eq!(decrypt(&key, -7, i as u16, &d[RTP_LEN..]), vec![i as u8; 40]);
        }
        // Lose two data packets of block 0; rebuild them from the parity with the fixed matrix.
        let fec: Vec<&Vec<u8>> = all.iter().filter(|x| x[1] == PT_FEC).take(2).collect();
        assert_eq!(fec[0][RTP_LEN], 0);
        assert_eq!(fec[0][RTP_LEN + 1], PT_AUDIO);
        assert_eq!(u16::from_be_bytes([fec[1][RTP_LEN + 2], fec[1][RTP_LEN + 3]]), 0, "base sequence");
        let mut shards: Vec<Option<Vec<u8>>> = data[..4].iter().map(|d| Some(d[RTP_LEN..].to_vec())).collect();
        shards.extend(fec.iter().map(|f| Some(f[RTP_LEN + FEC_HEADER_LEN..].to_vec())));
        let want = shards.clone();
        shards[1] = None;
        shards[3] = None;
        let mut rs = ReedSolomon::new(4, 2).unwrap();
        rs.set_parity_matrix(&PARITY_MATRIX).unwrap();
        rs.reconstruct_data(&mut shards).unwrap();
        assert_eq!(shards[..4], want[..4]);
    }

    #[test]
    fn unequal_lengths_send_no_parity() {
        let mut p = AudioPacketizer::new(5, 1, None).unwrap();
        let mut n = 0;
        for len in [10, 10, 10, 11] {
            n += p.packetize(&vec![1u8; len]).unwrap().len();
        }
        assert_eq!(n, 4);
    }
}
