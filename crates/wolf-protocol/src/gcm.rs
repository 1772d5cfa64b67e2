//! AES-128-GCM under the launch's `rikey`, as Moonlight's encrypted streams use it: a 12-byte IV of
//! the message's sequence number (little-endian), then zeros, then who sent it ('C' client, 'H' host)
//! and which stream it belongs to ('C' control, 'R' RTSP), so no two messages share an IV. Video
//! (host to client only) uses a 64-bit packet counter instead, then zeros, then 'V' ([`video_iv`]).

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

pub const TAG_LEN: usize = 16;

/// Who sent a message: the IV differs by direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToHost,
    HostToClient,
}

/// Which stream a message belongs to: the IV's last byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Control,
    Rtsp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GcmError {
    #[error("the key was refused")]
    Key,
    #[error("sealing failed")]
    Seal,
    #[error("the message does not open with this key")]
    Auth,
}

fn iv(seq: u32, dir: Direction, stream: Stream) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..4].copy_from_slice(&seq.to_le_bytes());
    iv[10] = match dir {
        Direction::ClientToHost => b'C',
        Direction::HostToClient => b'H',
    };
    iv[11] = match stream {
        Stream::Control => b'C',
        Stream::Rtsp => b'R',
    };
    iv
}

/// The IV of video packet number `counter` (host to client): the counter little-endian in bytes
/// 0..8, zeros, and 'V' last, as Sunshine lays it out (the host chooses; the client reads it from
/// the packet).
pub fn video_iv(counter: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&counter.to_le_bytes());
    iv[11] = b'V';
    iv
}

fn key(rikey: &[u8; 16]) -> Result<LessSafeKey, GcmError> {
    UnboundKey::new(&AES_128_GCM, rikey).map(LessSafeKey::new).map_err(|_| GcmError::Key)
}

/// The rikey expanded once, for a stream that seals or opens many messages (video).
#[derive(Debug)]
pub struct StreamKey(LessSafeKey);

impl StreamKey {
    pub fn new(rikey: &[u8; 16]) -> Result<StreamKey, GcmError> {
        key(rikey).map(StreamKey)
    }

    /// Encrypt `data` in place under `iv`; returns the tag.
    pub fn seal_in_place(&self, iv: [u8; 12], data: &mut [u8]) -> Result<[u8; TAG_LEN], GcmError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), data)
            .map_err(|_| GcmError::Seal)?;
        tag.as_ref().try_into().map_err(|_| GcmError::Seal)
    }

    /// Decrypt `data` in place under `iv` if `tag` authenticates it; on failure `data` is garbage.
    pub fn open_in_place(&self, iv: [u8; 12], tag: &[u8], data: &mut [u8]) -> Result<(), GcmError> {
        self.0
            .open_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), tag, data)
            .map(|_| ())
            .map_err(|_| GcmError::Auth)
    }
}

/// Encrypt `data` in place; returns the tag.
pub fn seal(rikey: &[u8; 16], seq: u32, dir: Direction, stream: Stream, data: &mut [u8]) -> Result<Tag, GcmError> {
    key(rikey)?
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv(seq, dir, stream)), Aad::empty(), data)
        .map_err(|_| GcmError::Seal)
}

/// Decrypt `ciphertext` with its `tag`; the plaintext.
pub fn open(
    rikey: &[u8; 16],
    seq: u32,
    dir: Direction,
    stream: Stream,
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, GcmError> {
    let mut buf = Vec::with_capacity(ciphertext.len() + tag.len());
    buf.extend_from_slice(ciphertext);
    buf.extend_from_slice(tag);
    let len = key(rikey)?
        .open_in_place(Nonce::assume_unique_for_key(iv(seq, dir, stream)), Aad::empty(), &mut buf)
        .map_err(|_| GcmError::Auth)?
        .len();
    buf.truncate(len);
    Ok(buf)
}
