//! AES-128-GCM under the launch's `rikey`, as Moonlight's encrypted streams use it: a 12-byte IV of
//! the message's sequence number (little-endian), then zeros, then who sent it ('C' client, 'H' host)
//! and which stream it belongs to ('C' control, 'R' RTSP), so no two messages share an IV.

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

fn key(rikey: &[u8; 16]) -> Result<LessSafeKey, GcmError> {
    UnboundKey::new(&AES_128_GCM, rikey).map(LessSafeKey::new).map_err(|_| GcmError::Key)
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
