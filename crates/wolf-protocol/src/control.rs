//! Control-stream messages (carried over ENet) as appversion 7.1.431 clients send them: AES-128-GCM
//! with the V2 IV (`SS_ENC_CONTROL_V2`), and the message types the host acts on.

use crate::gcm::{self, Stream};

/// Outer type of every encrypted control packet.
pub const ENCRYPTED_HEADER_TYPE: u16 = 0x0001;
pub use crate::gcm::TAG_LEN;

/// Client → host.
pub const MSG_PING: u16 = 0x0200;
/// Loss statistics (older clients; newer ones send the ping and per-frame FEC status instead).
pub const MSG_LOSS_STATS: u16 = 0x0201;
pub const MSG_INPUT: u16 = 0x0206;
pub const MSG_RFI: u16 = 0x0301;
pub const MSG_IDR_REQUEST: u16 = 0x0302;
pub const MSG_START_B: u16 = 0x0307;
pub const MSG_LTR_ACK: u16 = 0x0350;
pub const MSG_FEC_STATUS: u16 = 0x5502;
/// Host → client.
pub const MSG_TERMINATION: u16 = 0x0109;
/// Termination reason: the app or host ended the session on purpose.
pub const TERMINATION_GRACEFUL: u32 = 0x8003_0023;
/// Termination reason: the host could not produce frames (shown by clients as an encoder error).
pub const TERMINATION_ENCODER_ERROR: u32 = 0x800e_9403;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("control packet too short ({0} bytes)")]
    Short(usize),
    #[error("control packet is not encrypted (type {0:#06x})")]
    NotEncrypted(u16),
    #[error("control packet length field {0} does not match")]
    Length(usize),
    #[error("control packet failed authentication")]
    Auth,
    #[error("control crypto: {0}")]
    Crypto(&'static str),
}

pub use crate::gcm::Direction;

/// `LE16 0x0001 | LE16 len | LE32 seq | tag | AES-GCM(LE16 type | LE16 payloadLen | payload)`.
pub fn seal(
    rikey: &[u8; 16],
    seq: u32,
    dir: Direction,
    msg_type: u16,
    payload: &[u8],
) -> Result<Vec<u8>, ControlError> {
    // Both length fields are 16 bits (the outer one counts seq, tag, type and length too): a
    // longer payload cannot be framed, and truncating them would send a packet that never opens.
    let len = u16::try_from(4 + TAG_LEN + 4 + payload.len()).map_err(|_| ControlError::Length(payload.len()))?;
    let mut plain = Vec::with_capacity(4 + payload.len());
    plain.extend_from_slice(&msg_type.to_le_bytes());
    plain.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    plain.extend_from_slice(payload);
    let tag = gcm::seal(rikey, seq, dir, Stream::Control, &mut plain).map_err(|_| ControlError::Crypto("seal"))?;
    let mut out = Vec::with_capacity(8 + TAG_LEN + plain.len());
    out.extend_from_slice(&ENCRYPTED_HEADER_TYPE.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(tag.as_ref());
    out.extend_from_slice(&plain);
    Ok(out)
}

/// A decrypted control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub seq: u32,
    pub msg_type: u16,
    pub payload: Vec<u8>,
}

pub fn open(rikey: &[u8; 16], dir: Direction, packet: &[u8]) -> Result<Message, ControlError> {
    if packet.len() < 8 + TAG_LEN + 4 {
        return Err(ControlError::Short(packet.len()));
    }
    let outer = u16::from_le_bytes([packet[0], packet[1]]);
    if outer != ENCRYPTED_HEADER_TYPE {
        return Err(ControlError::NotEncrypted(outer));
    }
    let len = u16::from_le_bytes([packet[2], packet[3]]) as usize;
    if len + 4 != packet.len() {
        return Err(ControlError::Length(len));
    }
    let seq = u32::from_le_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let tag = &packet[8..8 + TAG_LEN];
    let plain = gcm::open(rikey, seq, dir, Stream::Control, &packet[8 + TAG_LEN..], tag).map_err(|e| match e {
        gcm::GcmError::Auth => ControlError::Auth,
        _ => ControlError::Crypto("key"),
    })?;
    if plain.len() < 4 {
        return Err(ControlError::Short(plain.len()));
    }
    let msg_type = u16::from_le_bytes([plain[0], plain[1]]);
    let inner = u16::from_le_bytes([plain[2], plain[3]]) as usize;
    let payload = plain.get(4..4 + inner).ok_or(ControlError::Length(inner))?.to_vec();
    Ok(Message { seq, msg_type, payload })
}

/// The termination message's payload: the reason as a big-endian HRESULT.
/// ENet's protocol header flag: a 16-bit sent time follows the peer id.
const ENET_HEADER_SENT_TIME: u16 = 0x8000;
/// ENet's header flag for a compressed datagram (Moonlight never compresses).
const ENET_HEADER_COMPRESSED: u16 = 0x4000;
const ENET_COMMAND_CONNECT: u8 = 2;
/// Where a CONNECT command's `data` sits in it: command header (4), peer id (2), session ids (2),
/// eight 32-bit parameters (MTU to throttle deceleration) and the connect id (4).
const ENET_CONNECT_DATA_AT: usize = 4 + 2 + 2 + 8 * 4 + 4;

/// The `data` of an ENet datagram whose first command is CONNECT (the connect data Moonlight was
/// given in RTSP SETUP); `None` for any other datagram. Lets the host drop a connect that names no
/// session before ENet spends a peer slot on it.
pub fn enet_connect_data(datagram: &[u8]) -> Option<u32> {
    let flags = u16::from_be_bytes([*datagram.first()?, *datagram.get(1)?]);
    if flags & ENET_HEADER_COMPRESSED != 0 {
        return None;
    }
    let header = if flags & ENET_HEADER_SENT_TIME != 0 { 4 } else { 2 };
    let command = datagram.get(header..)?;
    if command.first()? & 0x0F != ENET_COMMAND_CONNECT {
        return None;
    }
    let d = command.get(ENET_CONNECT_DATA_AT..ENET_CONNECT_DATA_AT + 4)?;
    Some(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
}

/// Is this datagram an ENet CONNECT at all (whatever its data)?
pub fn is_enet_connect(datagram: &[u8]) -> bool {
    let Some(flags) = datagram.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return false };
    let header = if flags & ENET_HEADER_SENT_TIME != 0 { 4 } else { 2 };
    flags & ENET_HEADER_COMPRESSED == 0 && datagram.get(header).is_some_and(|c| c & 0x0F == ENET_COMMAND_CONNECT)
}

pub fn termination_payload(reason: u32) -> [u8; 4] {
    reason.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = [0x42; 16];

    #[test]
    fn seal_open_round_trip_both_directions() {
        let p = seal(&KEY, 7, Direction::ClientToHost, MSG_IDR_REQUEST, &[0, 0]).unwrap();
        assert_eq!(&p[..2], &[0x01, 0x00]);
        assert_eq!(u16::from_le_bytes([p[2], p[3]]) as usize, p.len() - 4);
        let m = open(&KEY, Direction::ClientToHost, &p).unwrap();
        assert_eq!(m, Message { seq: 7, msg_type: MSG_IDR_REQUEST, payload: vec![0, 0] });
        // The direction is part of the IV: a host packet does not open as a client one.
        assert_eq!(open(&KEY, Direction::HostToClient, &p), Err(ControlError::Auth));
        let t = seal(&KEY, 0, Direction::HostToClient, MSG_TERMINATION, &termination_payload(TERMINATION_GRACEFUL))
            .unwrap();
        let m = open(&KEY, Direction::HostToClient, &t).unwrap();
        assert_eq!(m.payload, vec![0x80, 0x03, 0x00, 0x23]);
    }

    #[test]
    fn tampered_truncated_and_garbage_packets_are_errors() {
        let p = seal(&KEY, 1, Direction::ClientToHost, MSG_PING, &[4, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        let mut bad = p.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(open(&KEY, Direction::ClientToHost, &bad), Err(ControlError::Auth));
        for cut in 0..p.len() {
            assert!(open(&KEY, Direction::ClientToHost, &p[..cut]).is_err());
        }
        assert!(matches!(open(&[0u8; 16], Direction::ClientToHost, &p), Err(ControlError::Auth)));
        let mut x: u32 = 99;
        for _ in 0..2000 {
            let junk: Vec<u8> = (0..40)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (x >> 24) as u8
                })
                .collect();
            let _ = open(&KEY, Direction::ClientToHost, &junk);
        }
    }
}
