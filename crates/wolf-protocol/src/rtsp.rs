//! RTSP as Moonlight speaks it: one request per TCP connection, headers sent in small chunks, and a
//! reply parser with quirks (exactly one space after the colon, case-sensitive names, at least one
//! header). Plus the client's ANNOUNCE SDP, parsed into stream parameters, and encrypted RTSP
//! (`rtspenc://`): each message sealed with the launch's rikey.

use std::collections::HashMap;

use crate::gcm::{self, Direction, GcmError, Stream, TAG_LEN};

/// Largest request head and body accepted; real requests are a few hundred bytes and a ~2 KB SDP.
pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtspError {
    #[error("request head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("body over {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("malformed request line")]
    RequestLine,
    #[error("malformed header line")]
    Header,
    #[error("missing or malformed CSeq")]
    CSeq,
    #[error("bad Content-length")]
    ContentLength,
    #[error("SDP attribute {0} is missing or malformed")]
    Sdp(&'static str),
    #[error("malformed encrypted RTSP message")]
    Encrypted,
    #[error("encrypted RTSP: {0}")]
    Crypto(#[from] GcmError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub cseq: u32,
    /// Header names as sent (matching is case-insensitive on our side).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parse a request from what has arrived so far: `Ok(None)` means "need more bytes".
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, RtspError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        // The last 3 bytes may be the start of the blank line that ends a head of MAX_HEAD.
        return if buf.len() > MAX_HEAD + 3 { Err(RtspError::HeadTooLarge) } else { Ok(None) };
    };
    if end > MAX_HEAD {
        return Err(RtspError::HeadTooLarge);
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| RtspError::RequestLine)?;
    let mut lines = head.split("\r\n");
    let first = lines.next().ok_or(RtspError::RequestLine)?;
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RtspError::RequestLine);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || !version.starts_with("RTSP/") {
        return Err(RtspError::RequestLine);
    }
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line.split_once(':').ok_or(RtspError::Header)?;
        if k.is_empty() || k.contains(' ') {
            return Err(RtspError::Header);
        }
        headers.push((k.to_owned(), v.trim().to_owned()));
    }
    let find = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str());
    let cseq = find("CSeq").and_then(|v| v.parse::<u32>().ok()).ok_or(RtspError::CSeq)?;
    let len = match find("Content-length") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| RtspError::ContentLength)?,
    };
    if len > MAX_BODY {
        return Err(RtspError::BodyTooLarge);
    }
    let body_start = end + 4;
    if buf.len() < body_start + len {
        return Ok(None);
    }
    Ok(Some(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        cseq,
        headers,
        body: buf[body_start..body_start + len].to_vec(),
    }))
}

/// A reply in the exact shape the client's parser accepts.
pub fn response(code: u16, reason: &str, cseq: u32, headers: &[(&str, String)], body: &str) -> Vec<u8> {
    let mut out = format!("RTSP/1.0 {code} {reason}\r\nCSeq: {cseq}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// `x-ss-general.encryption*` bits (moonlight-common-c's SS_ENC_*): AES-GCM control messages with
/// the direction-tagged IV, sealed video packets, sealed audio.
pub const SS_ENC_CONTROL_V2: u32 = 0x1;
pub const SS_ENC_VIDEO: u32 = 0x2;
pub const SS_ENC_AUDIO: u32 = 0x4;

/// What the client asked for in its ANNOUNCE.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// NV header + payload per video packet.
    pub packet_size: usize,
    /// 0 H.264, 1 HEVC, 2 AV1.
    pub video_format: u32,
    pub bitrate_kbps: u32,
    pub min_fec_packets: usize,
    pub slices_per_frame: u32,
    /// (colorSpace << 1) | colorRange.
    pub encoder_csc_mode: u32,
    pub dynamic_range: u32,
    pub audio_channels: u32,
    pub audio_channel_mask: u32,
    pub audio_packet_ms: u32,
    pub feature_flags: u32,
    /// `x-ss-general.encryptionEnabled`: the SS_ENC_* bits the client turned on.
    pub encryption: u32,
}

/// `a=name:value` attributes of an SDP body (the client ends each with a space).
pub fn sdp_attributes(sdp: &str) -> HashMap<&str, &str> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a="))
        .filter_map(|a| a.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

pub fn parse_announce(sdp: &str) -> Result<StreamConfig, RtspError> {
    let a = sdp_attributes(sdp);
    let num = |k: &'static str| -> Result<u32, RtspError> {
        let v = a.get(k).ok_or(RtspError::Sdp(k))?;
        // Some values are sent as signed or hex; accept both.
        v.parse::<u32>()
            .or_else(|_| v.parse::<i64>().map(|n| n as u32))
            .or_else(|_| u32::from_str_radix(v.trim_start_matches("0x"), 16))
            .map_err(|_| RtspError::Sdp(k))
    };
    let opt = |k: &'static str, d: u32| if a.contains_key(k) { num(k) } else { Ok(d) };
    let width = num("x-nv-video[0].clientViewportWd")?;
    let height = num("x-nv-video[0].clientViewportHt")?;
    let fps = num("x-nv-video[0].maxFPS")?;
    let packet_size = num("x-nv-video[0].packetSize")? as usize;
    if !(1..=16384).contains(&width) || !(1..=16384).contains(&height) || !(1..=1000).contains(&fps) {
        return Err(RtspError::Sdp("x-nv-video[0].clientViewport*/maxFPS"));
    }
    if !(64..=4096).contains(&packet_size) {
        return Err(RtspError::Sdp("x-nv-video[0].packetSize"));
    }
    let bitrate_kbps = match num("x-ml-video.configuredBitrateKbps") {
        Ok(b) if b > 0 => b,
        _ => opt("x-nv-vqos[0].bw.maximumBitrateKbps", opt("x-nv-video[0].initialBitrateKbps", 10_000)?)?,
    };
    Ok(StreamConfig {
        width,
        height,
        fps,
        packet_size,
        video_format: opt("x-nv-vqos[0].bitStreamFormat", 0)?,
        bitrate_kbps,
        min_fec_packets: opt("x-nv-vqos[0].fec.minRequiredFecPackets", 0)? as usize,
        slices_per_frame: opt("x-nv-video[0].videoEncoderSlicesPerFrame", 1)?.max(1),
        encoder_csc_mode: opt("x-nv-video[0].encoderCscMode", 0)?,
        dynamic_range: opt("x-nv-video[0].dynamicRangeMode", 0)?,
        audio_channels: opt("x-nv-audio.surround.numChannels", 2)?,
        audio_channel_mask: opt("x-nv-audio.surround.channelMask", 3)?,
        audio_packet_ms: opt("x-nv-aqos.packetDuration", 5)?,
        feature_flags: opt("x-nv-general.featureFlags", 0)?,
        encryption: opt("x-ss-general.encryptionEnabled", 0)?,
    })
}

/// Set in the first word of an encrypted message: `BE32 (0x8000_0000 | plaintext length) | BE32 seq
/// | tag[16] | AES-128-GCM(plaintext)`. A plain request starts with an ASCII method, so never has it.
pub const ENCRYPTED_BIT: u32 = 0x8000_0000;
pub const ENCRYPTED_HEADER_LEN: usize = 8 + TAG_LEN;

/// Does what has arrived start an encrypted message?
pub fn is_encrypted(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| b & 0x80 != 0)
}

/// The whole encrypted message's length, once its header is in (`Ok(None)`: need more bytes).
pub fn encrypted_len(buf: &[u8]) -> Result<Option<usize>, RtspError> {
    let Some(word) = buf.get(..4) else {
        return Ok(None);
    };
    let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    if word & ENCRYPTED_BIT == 0 {
        return Err(RtspError::Encrypted);
    }
    let len = (word & !ENCRYPTED_BIT) as usize;
    if len > MAX_HEAD + MAX_BODY {
        return Err(RtspError::BodyTooLarge);
    }
    Ok(Some(ENCRYPTED_HEADER_LEN + len))
}

/// Seal one whole RTSP message (`plain`) as `dir` sends it with sequence number `seq`.
pub fn seal(rikey: &[u8; 16], seq: u32, dir: Direction, plain: &[u8]) -> Result<Vec<u8>, RtspError> {
    let len = u32::try_from(plain.len()).ok().filter(|l| l & ENCRYPTED_BIT == 0).ok_or(RtspError::BodyTooLarge)?;
    let mut data = plain.to_vec();
    let tag = gcm::seal(rikey, seq, dir, Stream::Rtsp, &mut data)?;
    let mut out = Vec::with_capacity(ENCRYPTED_HEADER_LEN + data.len());
    out.extend_from_slice(&(ENCRYPTED_BIT | len).to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(tag.as_ref());
    out.extend_from_slice(&data);
    Ok(out)
}

/// Open exactly one encrypted message sent by `dir`: its sequence number and plaintext. A message
/// that is short, has excess bytes, or does not open with `rikey` is refused.
pub fn open(rikey: &[u8; 16], dir: Direction, msg: &[u8]) -> Result<(u32, Vec<u8>), RtspError> {
    if msg.len() < ENCRYPTED_HEADER_LEN || encrypted_len(msg)? != Some(msg.len()) {
        return Err(RtspError::Encrypted);
    }
    let seq = u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]);
    let plain = gcm::open(rikey, seq, dir, Stream::Rtsp, &msg[ENCRYPTED_HEADER_LEN..], &msg[8..ENCRYPTED_HEADER_LEN])?;
    Ok((seq, plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] =
        [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
    const OPTIONS: &[u8] =
        b"OPTIONS rtsp://127.0.0.1:48010 RTSP/1.0\r\nCSeq: 1\r\nX-GS-ClientVersion: 14\r\nHost: 127.0.0.1\r\n\r\n";
    /// The OPTIONS above as moonlight-common-c's sealRtspMessage lays it out (first message, seq 1),
    /// computed with Python's `cryptography` AES-GCM, not with this crate.
    const OPTIONS_SEALED: &str = "8000005d0000000158d5fa34c3d26484e23bb2673903234569150e6c843a3ad6efcf8b8b577834a2b9209ece\
        185d77182074a056371dbe06b96cbd60099e6eec2dcf416c4ad6c4a12ab55b7fdc3ca1492013537c92064626755f40aa2301031\
        24f3497d221f0d7391ed868d811fea2680b6c9427cc";

    #[test]
    fn encrypted_rtsp_matches_the_clients_layout() {
        let sealed = hex::decode(OPTIONS_SEALED.replace(' ', "")).unwrap();
        assert_eq!(seal(&KEY, 1, Direction::ClientToHost, OPTIONS).unwrap(), sealed);
        assert!(is_encrypted(&sealed) && !is_encrypted(OPTIONS));
        assert_eq!(encrypted_len(&sealed[..3]), Ok(None));
        assert_eq!(encrypted_len(&sealed[..4]), Ok(Some(sealed.len())));
        assert_eq!(open(&KEY, Direction::ClientToHost, &sealed).unwrap(), (1, OPTIONS.to_vec()));
        let req = parse_request(&open(&KEY, Direction::ClientToHost, &sealed).unwrap().1).unwrap().unwrap();
        assert_eq!((req.method.as_str(), req.cseq), ("OPTIONS", 1));
    }

    #[test]
    fn encrypted_rtsp_refuses_what_it_cannot_trust() {
        let sealed = seal(&KEY, 7, Direction::HostToClient, OPTIONS).unwrap();
        let other = [9u8; 16];
        assert_eq!(open(&other, Direction::HostToClient, &sealed), Err(RtspError::Crypto(GcmError::Auth)));
        assert_eq!(
            open(&KEY, Direction::ClientToHost, &sealed),
            Err(RtspError::Crypto(GcmError::Auth)),
            "IV by direction"
        );
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(open(&KEY, Direction::HostToClient, &flipped), Err(RtspError::Crypto(GcmError::Auth)));
        assert_eq!(open(&KEY, Direction::HostToClient, &sealed[..sealed.len() - 1]), Err(RtspError::Encrypted));
        let mut longer = sealed.clone();
        longer.push(0);
        assert_eq!(open(&KEY, Direction::HostToClient, &longer), Err(RtspError::Encrypted));
        assert_eq!(open(&KEY, Direction::HostToClient, OPTIONS), Err(RtspError::Encrypted), "plain text");
        assert_eq!(encrypted_len(&[0xff, 0xff, 0xff, 0xff]), Err(RtspError::BodyTooLarge));
        assert_eq!(open(&KEY, Direction::HostToClient, &sealed).unwrap().0, 7);
    }

    const ANNOUNCE_SDP: &str = "v=0\r\no=android 0 14 IN IPv4 127.0.0.1\r\ns=NVIDIA Streaming Client\r\n\
        a=x-nv-video[0].clientViewportWd:1280 \r\na=x-nv-video[0].clientViewportHt:720 \r\n\
        a=x-nv-video[0].maxFPS:60 \r\na=x-nv-video[0].packetSize:1024 \r\n\
        a=x-nv-vqos[0].bitStreamFormat:0 \r\na=x-ml-video.configuredBitrateKbps:10000 \r\n\
        a=x-nv-vqos[0].fec.minRequiredFecPackets:2 \r\na=x-nv-general.featureFlags:167 \r\n\
        a=x-ss-general.encryptionEnabled:5 \r\na=x-nv-aqos.packetDuration:5 \r\nt=0 0\r\nm=video 47998  \r\n";

    fn announce() -> Vec<u8> {
        format!(
            "ANNOUNCE streamid=control/13/0 RTSP/1.0\r\nCSeq: 6\r\nX-GS-ClientVersion: 14\r\nHost: 127.0.0.1\r\n\
             Session: DEADBEEFCAFE\r\nContent-type: application/sdp\r\nContent-length: {}\r\n\r\n{ANNOUNCE_SDP}",
            ANNOUNCE_SDP.len()
        )
        .into_bytes()
    }

    #[test]
    fn requests_arriving_in_536_byte_chunks_parse_once_complete() {
        let all = announce();
        let mut buf = Vec::new();
        let mut parsed = None;
        for chunk in all.chunks(536) {
            assert!(parsed.is_none(), "complete only with the whole body");
            buf.extend_from_slice(chunk);
            parsed = parse_request(&buf).unwrap();
        }
        let r = parsed.expect("complete");
        assert_eq!((r.method.as_str(), r.target.as_str(), r.cseq), ("ANNOUNCE", "streamid=control/13/0", 6));
        assert_eq!(r.header("session"), Some("DEADBEEFCAFE"));
        let cfg = parse_announce(std::str::from_utf8(&r.body).unwrap()).unwrap();
        assert_eq!((cfg.width, cfg.height, cfg.fps, cfg.packet_size), (1280, 720, 60, 1024));
        assert_eq!((cfg.min_fec_packets, cfg.encryption, cfg.feature_flags, cfg.audio_packet_ms), (2, 5, 167, 5));
        assert_eq!(cfg.bitrate_kbps, 10_000);
    }

    #[test]
    fn responses_have_the_shape_the_client_parser_needs() {
        let r = response(200, "OK", 3, &[("Session", "ABC;timeout = 90".into())], "");
        assert_eq!(r, b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: ABC;timeout = 90\r\n\r\n");
        let r = String::from_utf8(response(200, "OK", 2, &[], "v=0\r\n")).unwrap();
        assert!(r.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"));
    }

    #[test]
    fn malformed_and_truncated_input_is_an_error_or_incomplete_never_a_panic() {
        for bad in [
            &b"\r\n\r\n"[..],
            b"OPTIONS\r\n\r\n",
            b"options rtsp://x RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            b"OPTIONS rtsp://x HTTP/1.1\r\nCSeq: 1\r\n\r\n",
            b"OPTIONS rtsp://x RTSP/1.0\r\nCSeq: x\r\n\r\n",
            b"OPTIONS rtsp://x RTSP/1.0\r\nno colon\r\n\r\n",
            b"OPTIONS rtsp://x RTSP/1.0\r\nCSeq: 1\r\nContent-length: -1\r\n\r\n",
            b"OPTIONS rtsp://x RTSP/1.0\r\nCSeq: 1\r\nContent-length: 99999999\r\n\r\n",
            b"\xff\xfe RTSP/1.0\r\n\r\n",
        ] {
            assert!(parse_request(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let whole = announce();
        for cut in 0..whole.len() {
            assert!(matches!(parse_request(&whole[..cut]), Ok(None)), "cut at {cut}");
        }
        assert_eq!(parse_request(&vec![b'a'; MAX_HEAD + 4]), Err(RtspError::HeadTooLarge));
        // Pseudo-random garbage, bounded.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = parse_request(&bytes);
            let _ = parse_announce(&String::from_utf8_lossy(&bytes));
        }
        assert_eq!(parse_announce("v=0\r\n"), Err(RtspError::Sdp("x-nv-video[0].clientViewportWd")));
        assert!(parse_announce(&ANNOUNCE_SDP.replace("packetSize:1024", "packetSize:9")).is_err());
    }
}
