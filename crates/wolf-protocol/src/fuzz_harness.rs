//! Fuzz harnesses: one function per parser family, each taking arbitrary bytes. The cargo-fuzz
//! targets in `fuzz/` only call these, and wolf-rs's `tests/fuzz_corpus.rs` replays the committed corpus
//! through them on stable, so what is fuzzed and what `cargo test` checks cannot drift apart.
//!
//! Every function must return normally for any input (errors are fine); the asserts are
//! invariants that must hold too (round trips, what a parser promises about what it accepted).

use crate::gcm::{Direction, StreamKey};
use crate::{annexb, audio, control, input, pairing, rtsp, video, xml};

/// The rikey every harness seals and opens with.
const KEY: [u8; 16] = [0x42; 16];
/// The harnesses that try things in a loop stop here, so one input stays cheap.
const MAX_STEPS: usize = 16;

/// Reads fixed-size parameters off the front of an input; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// Where a complete request's head ends (the offset of its `\r\n\r\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// `rtsp_request`: a plain RTSP request as it arrives on the socket, then its SDP body.
pub fn rtsp_request(data: &[u8]) {
    let Ok(Some(req)) = rtsp::parse_request(data) else {
        return;
    };
    // Whatever parsed is what the client sent: the body is Content-length bytes behind the head,
    // and every shorter prefix of it is "need more bytes", never an error (the host parses after
    // every read, and a request split at any point must still be answered).
    let Some(end) = head_end(data) else { panic!("a request parsed without a complete head") };
    let total = end + 4 + req.body.len();
    assert_eq!(&data[end + 4..total], &req.body[..]);
    assert_eq!(req.header("CSeq").and_then(|v| v.parse::<u32>().ok()), Some(req.cseq));
    for cut in [end, end + 3, total - 1] {
        if cut < total {
            assert_eq!(rtsp::parse_request(&data[..cut]), Ok(None), "prefix of {cut} bytes");
        }
    }
    assert!(!rtsp::is_encrypted(data), "a plain request must not look sealed");
    // The host hands the body to the SDP parser as lossy UTF-8.
    rtsp_announce(&req.body);
}

/// `rtsp_announce`: an ANNOUNCE body. What it accepts must make a stream the host can send.
pub fn rtsp_announce(data: &[u8]) {
    let Ok(cfg) = rtsp::parse_announce(&String::from_utf8_lossy(data)) else {
        return;
    };
    assert!((1..=16384).contains(&cfg.width) && (1..=16384).contains(&cfg.height));
    assert!((1..=1000).contains(&cfg.fps) && cfg.slices_per_frame >= 1);
    // The video sender builds its packetizer from this (with the configured FEC percentage); an
    // accepted ANNOUNCE must never leave it unable to send a frame.
    for fec_percent in [0, 20, 255] {
        let params = video::VideoParams { packet_size: cfg.packet_size, fec_percent, min_parity: cfg.min_fec_packets };
        let mut p = match video::Packetizer::new(params) {
            Ok(p) => p,
            Err(e) => panic!("accepted ANNOUNCE, refused packetizer: {e}"),
        };
        if let Err(e) = p.packetize(&[0, 0, 0, 1, 0x65, 1, 2, 3], video::FrameType::Idr, 0, 0) {
            panic!("accepted ANNOUNCE, frame not packetized: {e}");
        }
    }
}

/// `rtsp_sealed`: an encrypted RTSP message (`rtspenc://`), and sealing arbitrary plaintext.
pub fn rtsp_sealed(data: &[u8]) {
    if let Ok(Some(n)) = rtsp::encrypted_len(data) {
        assert!(n >= rtsp::ENCRYPTED_HEADER_LEN && rtsp::is_encrypted(data));
    }
    for dir in [Direction::ClientToHost, Direction::HostToClient] {
        if let Ok((_, plain)) = rtsp::open(&KEY, dir, data) {
            let _ = rtsp::parse_request(&plain);
        }
    }
    let mut input = Input(data);
    let seq = input.u32();
    let plain = input.rest();
    let sealed = match rtsp::seal(&KEY, seq, Direction::HostToClient, plain) {
        Ok(s) => s,
        Err(e) => panic!("sealing {} bytes: {e}", plain.len()),
    };
    if plain.len() <= rtsp::MAX_HEAD + rtsp::MAX_BODY {
        assert_eq!(rtsp::encrypted_len(&sealed), Ok(Some(sealed.len())));
    }
    let same = rtsp::open(&KEY, Direction::HostToClient, &sealed) == Ok((seq, plain.to_vec()));
    assert!(same, "a sealed RTSP message opens as another ({} bytes)", plain.len());
    assert!(rtsp::open(&KEY, Direction::ClientToHost, &sealed).is_err(), "the direction is part of the IV");
}

/// `control_message`: an ENet control packet, sealed or not, and the ENet CONNECT gate.
pub fn control_message(data: &[u8]) {
    if control::enet_connect_data(data).is_some() {
        assert!(control::is_enet_connect(data));
    }
    for dir in [Direction::ClientToHost, Direction::HostToClient] {
        if let Ok(m) = control::open(&KEY, dir, data)
            && m.msg_type == control::MSG_INPUT
        {
            let _ = input::decode(&m.payload);
        }
    }
    let _ = input::decode(data);
    // The input as the plaintext of a packet that authenticates: what follows decryption
    // (random bytes never pass the tag, so only this reaches it).
    if let Some(packet) = sealed_control_packet(9, data) {
        if let Ok(m) = control::open(&KEY, Direction::ClientToHost, &packet) {
            let inner = usize::from(u16::from_le_bytes([data[2], data[3]]));
            assert!(m.seq == 9 && m.msg_type == u16::from_le_bytes([data[0], data[1]]));
            assert!(m.payload == data[4..4 + inner], "the payload is the inner length's bytes");
            if m.msg_type == control::MSG_INPUT {
                let _ = input::decode(&m.payload);
            }
        }
    }
    // What the host seals opens again as the same message (or is refused up front).
    let mut input = Input(data);
    let (seq, msg_type) = (input.u32(), input.u16());
    let payload = input.rest();
    if let Ok(p) = control::seal(&KEY, seq, Direction::HostToClient, msg_type, payload) {
        let opened = control::open(&KEY, Direction::HostToClient, &p);
        let same = opened == Ok(control::Message { seq, msg_type, payload: payload.to_vec() });
        assert!(same, "a sealed control message opens as another ({} bytes)", payload.len());
    }
}

/// A control packet from the client whose encrypted part is `plain`, whatever it holds.
fn sealed_control_packet(seq: u32, plain: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(4 + control::TAG_LEN + plain.len()).ok()?;
    let mut body = plain.to_vec();
    let tag = crate::gcm::seal(&KEY, seq, Direction::ClientToHost, crate::gcm::Stream::Control, &mut body).ok()?;
    let mut out = control::ENCRYPTED_HEADER_TYPE.to_le_bytes().to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(tag.as_ref());
    out.extend_from_slice(&body);
    Some(out)
}

/// `input`: the payload of a decrypted input message (`0x0206`), plain and as it arrives sealed.
pub fn input(data: &[u8]) {
    let parsed = input::decode(data);
    if let Ok(event) = &parsed {
        // What an event encodes to decodes to the same event (compared as bytes: NaN floats).
        let wire = input::encode(event);
        let again = input::decode(&wire).map(|e| input::encode(&e));
        assert!(again.as_ref() == Ok(&wire), "{event:?} does not read back as written");
    }
    if let Ok(p) = control::seal(&KEY, 1, Direction::ClientToHost, control::MSG_INPUT, data) {
        let m = control::open(&KEY, Direction::ClientToHost, &p);
        // Compared, not printed: the payload may be 64 KiB.
        let same = m.as_ref().map(|m| input::decode(&m.payload).map(|e| input::encode(&e)))
            == Ok(parsed.map(|e| input::encode(&e)));
        assert!(same, "a sealed input message opens as another ({} bytes)", data.len());
    }
}

/// The Wolf fixture identity (public test data): the host side of pairing needs one.
fn server_identity() -> Option<&'static pairing::ServerIdentity> {
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use rustls_pki_types::pem::PemObject;
    static SERVER: std::sync::OnceLock<Option<pairing::ServerIdentity>> = std::sync::OnceLock::new();
    SERVER
        .get_or_init(|| {
            let key_pem = include_str!("../tests/fixtures/pairing/wolf/server_key.pem");
            let cert_pem = include_str!("../tests/fixtures/pairing/wolf/server_cert.pem");
            let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).ok()?;
            Some(pairing::ServerIdentity {
                cert: pairing::CertInfo::from_pem(cert_pem).ok()?,
                key: aws_lc_rs::signature::RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()).ok()?,
            })
        })
        .as_ref()
}

/// `pairing_steps`: the host's side of pairing fed what clients send, in any order. Lines: the
/// salt, the client certificate (hex of a PEM, as `getservercert` carries them), then one step
/// per line: `p<PIN>`, `c<clientchallenge>`, `s<serverchallengeresp>`, `f<clientpairingsecret>`,
/// or `r<secret ‖ challenge>` (fixes the server's randoms, so a recorded transcript can pair).
pub fn pairing_steps(data: &[u8]) {
    let Some(server) = server_identity() else { panic!("the fixture identity does not load") };
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let (salt, cert) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let Ok(mut session) = pairing::PairingSession::start(salt, cert) else {
        return;
    };
    for line in lines.take(MAX_STEPS) {
        let (op, arg) = line.split_at(line.char_indices().nth(1).map_or(line.len(), |(i, _)| i));
        let before = session.step();
        let failed = match op {
            "p" => session.set_pin(arg).is_err(),
            "c" => session.client_challenge(server, arg).is_err(),
            "s" => session.server_challenge_resp(server, arg).is_err(),
            "f" => match session.client_pairing_secret(arg) {
                Ok(_) => {
                    assert_eq!(session.step(), pairing::Step::Finished);
                    false
                }
                Err(_) => true,
            },
            "r" => {
                let Some((secret, challenge)) = hex::decode(arg).ok().and_then(|b| {
                    let secret: [u8; 16] = b.get(..16)?.try_into().ok()?;
                    Some((secret, b.get(16..32)?.try_into().ok()?))
                }) else {
                    continue;
                };
                session = session.with_server_randoms(secret, challenge);
                false
            }
            _ => continue,
        };
        // A refused step changes nothing: the client may retry or the pairing times out.
        if failed {
            assert_eq!(session.step(), before, "a refused step moved the pairing on");
        }
    }
}

/// `xml`: the host's XML replies as a client reads them, and text the host puts in them.
pub fn xml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for tag in ["hostname", "PairStatus", "challengeresponse", "root", "App"] {
        let _ = xml::find_text(&text, tag);
    }
    let _ = xml::root_attr(&text, "status_code");
    let _ = xml::root_attr(&text, "status_message");
    // A host name, app title or error message comes back to the client as it was written.
    let Ok(value) = std::str::from_utf8(data) else { return };
    if value.contains('\r') {
        // XML parsers normalize line ends; quick-xml does not, and clients do not care.
        return;
    }
    let reply = xml::ok(&[("hostname", value)]);
    assert_eq!(xml::find_text(&reply, "hostname").as_deref(), Some(value), "{reply}");
    assert_eq!(xml::root_attr(&reply, "status_code").as_deref(), Some("200"));
    let err = xml::error(400, "/pair", value);
    assert_eq!(xml::root_attr(&err, "status_message").as_deref(), Some(value), "{err}");
    let list = xml::applist([(value, 7)]);
    assert_eq!(xml::find_text(&list, "AppTitle").as_deref(), Some(value), "{list}");
}

/// `video_packetize`: the first byte picks what is fuzzed. 0: a frame packetized with arbitrary
/// parameters must reassemble (also with as many packets lost as each block has parity) and seal
/// and open. 1: such a frame's packets, then corrupted, into the reassembler. Otherwise: arbitrary
/// bytes as received packets and sealed datagrams.
pub fn video_packetize(data: &[u8]) {
    let mut input = Input(data);
    match input.u8() % 3 {
        0 => video_round_trip(input, false),
        1 => video_round_trip(input, true),
        _ => video_raw(input.rest()),
    }
}

/// Data shards of a frame above which the harness sends it without parity: building the
/// Reed–Solomon codec of a large block takes tens of milliseconds under coverage instrumentation,
/// which would starve everything else. Large frames still exercise the split into blocks; the
/// unit tests cover parity for full-size blocks.
const MAX_FUZZED_FEC_SHARDS: usize = 32;

fn video_round_trip(mut input: Input<'_>, corrupt: bool) {
    let mut params = video::VideoParams {
        packet_size: usize::from(input.u16()),
        fec_percent: input.u8(),
        min_parity: input.u32() as usize,
    };
    let frame_type = if input.u8() & 1 == 0 { video::FrameType::P } else { video::FrameType::Idr };
    let (ts, latency, loss) = (input.u32(), input.u16(), input.u32());
    if !(64..=4096).contains(&params.packet_size) {
        // Refused up front; nothing to packetize.
        assert!(video::Packetizer::new(params).is_err());
        return;
    }
    let rest = input.rest();
    // With `corrupt`, the input's tail says where to flip bits; the frame is its head.
    let (frame, flips) = if corrupt { rest.split_at(rest.len() / 2) } else { (rest, &[][..]) };
    if (frame.len() + video::FRAME_HEADER_LEN).div_ceil(params.packet_size - video::NV_LEN) > MAX_FUZZED_FEC_SHARDS {
        params.fec_percent = 0;
        params.min_parity = 0;
    }
    let Ok(mut p) = video::Packetizer::new(params) else { panic!("packet size {} refused", params.packet_size) };
    let frame_index = p.next_frame_index();
    let packets = match p.packetize(frame, frame_type, ts, latency) {
        Ok(packets) => packets,
        Err(video::VideoError::FrameTooLarge(_)) => return,
        Err(e) => panic!("packetize: {e}"),
    };
    assert!(packets.iter().all(|x| x.len() == p.shard_len()));
    assert_eq!(p.next_frame_index(), frame_index.wrapping_add(1));
    if corrupt {
        let mut packets = packets;
        let count = packets.len();
        for pair in flips.chunks(3) {
            let (n, at, bits) =
                (pair[0] as usize, pair.get(1).copied().unwrap_or(0), pair.get(2).copied().unwrap_or(1));
            let Some(x) = packets.get_mut(n % count) else { break };
            let len = x.len();
            x[usize::from(at) * 7 % len] ^= bits;
        }
        let _ = video::reassemble(&packets);
        return;
    }
    let check = |got: Result<(u8, Vec<u8>), video::VideoError>, what: &str| {
        let (ty, bytes) = match got {
            Ok(x) => x,
            Err(e) => panic!("{what}: {e}"),
        };
        assert_eq!(ty, frame_type as u8, "{what}");
        assert_eq!(&bytes[..frame.len()], frame, "{what}");
        assert!(bytes[frame.len()..].iter().all(|b| *b == 0), "{what}: padding");
    };
    check(video::reassemble(&packets), "all packets");
    // Lose packets (the loss word picks which), never more in a block than it has parity.
    let mut lost_in_block = [0usize; video::MAX_FEC_BLOCKS];
    let mut kept = Vec::with_capacity(packets.len());
    for (i, x) in packets.iter().enumerate() {
        let info = match video::parse_packet(x) {
            Ok(info) => info,
            Err(e) => panic!("our own packet: {e}"),
        };
        let parity = video::parity_for(info.data_shards, info.fec_percent);
        if loss >> (i % 32) & 1 == 1 && lost_in_block[info.block] < parity {
            lost_in_block[info.block] += 1;
        } else {
            kept.push(x.clone());
        }
    }
    check(video::reassemble(&kept), "with losses");
    // Sealed (SS_ENC_VIDEO) and opened again, one IV per packet.
    let Ok(key) = StreamKey::new(&KEY) else { panic!("key") };
    for (iv, x) in packets.iter().enumerate().take(MAX_STEPS) {
        let sealed = match video::encrypt_packet(&key, iv as u64, x) {
            Ok(s) => s,
            Err(e) => panic!("seal: {e}"),
        };
        assert_eq!(video::sealed_frame_index(&sealed), Some(frame_index));
        assert_eq!(video::decrypt_packet(&key, &sealed).as_ref(), Ok(x));
    }
}

fn video_raw(data: &[u8]) {
    let _ = video::parse_packet(data);
    let _ = video::sealed_frame_index(data);
    if let Ok(key) = StreamKey::new(&KEY) {
        let _ = video::decrypt_packet(&key, data);
    }
    // The packets of one frame: the first byte is the shard length (in 8-byte units).
    let Some((len, rest)) = data.split_first() else { return };
    let len = (usize::from(*len) * 8).max(video::RTP_LEN + video::NV_LEN);
    let packets: Vec<Vec<u8>> = rest.chunks(len).map(<[u8]>::to_vec).collect();
    let _ = video::reassemble(&packets);
}

/// `audio_packetize`: Opus frames of arbitrary sizes through the audio packetizer with arbitrary
/// parameters: one data packet per frame, and for each block of 4 equal-sized frames 2 parity
/// packets that rebuild any 2 lost payloads with the clients' matrix.
pub fn audio_packetize(data: &[u8]) {
    let mut input = Input(data);
    let (packet_ms, ssrc, flags, rikeyid) = (input.u32(), input.u32(), input.u8(), input.u32() as i32);
    let encryption = (flags & 1 == 1).then_some((KEY, rikeyid));
    let lose = [usize::from(flags >> 1 & 3), usize::from(flags >> 3 & 3)];
    let mut p = match audio::AudioPacketizer::new(packet_ms, ssrc, encryption) {
        Ok(p) => p,
        Err(e) => panic!("audio packetizer: {e}"),
    };
    let mut rest = input.rest();
    let mut block: Vec<Vec<u8>> = Vec::new();
    for seq in 0..MAX_STEPS as u16 * 2 {
        let Some((&len, tail)) = rest.split_first() else { break };
        let (frame, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        let out = match p.packetize(frame) {
            Ok(out) => out,
            Err(e) => panic!("audio packetize: {e}"),
        };
        let data_packet = &out[0];
        assert_eq!((data_packet[0], data_packet[1]), (0x80, audio::PT_AUDIO));
        assert_eq!(u16::from_be_bytes([data_packet[2], data_packet[3]]), seq);
        assert_eq!(data_packet[8..12], ssrc.to_be_bytes());
        let payload = data_packet[audio::RTP_LEN..].to_vec();
        if encryption.is_none() {
            assert_eq!(payload, frame);
        }
        if usize::from(seq) % audio::DATA_SHARDS == 0 {
            block.clear();
        }
        block.push(payload);
        let full = block.len() == audio::DATA_SHARDS;
        let equal = block.iter().all(|b| b.len() == block[0].len()) && !block[0].is_empty();
        assert_eq!(out.len(), if full && equal { 3 } else { 1 }, "parity after each 4th equal-sized packet");
        if out.len() == 3 {
            let mut shards: Vec<Option<Vec<u8>>> = block.iter().cloned().map(Some).collect();
            for (i, parity) in out[1..].iter().enumerate() {
                assert_eq!(
                    (parity[1], parity[audio::RTP_LEN], parity[audio::RTP_LEN + 1]),
                    (audio::PT_FEC, i as u8, 97)
                );
                shards.push(Some(parity[audio::RTP_LEN + audio::FEC_HEADER_LEN..].to_vec()));
            }
            shards[lose[0]] = None;
            shards[lose[1]] = None;
            let Ok(mut rs) = fec_rs::ReedSolomon::new(audio::DATA_SHARDS, audio::PARITY_SHARDS) else { panic!("rs") };
            let rebuilt = rs.set_parity_matrix(&audio::PARITY_MATRIX).and_then(|()| rs.reconstruct_data(&mut shards));
            assert!(rebuilt.is_ok(), "{rebuilt:?}");
            for (k, want) in block.iter().enumerate() {
                assert_eq!(shards[k].as_ref(), Some(want), "payload {k} rebuilt from parity");
            }
        }
    }
    let _ = audio::client_surround_layout(&String::from_utf8_lossy(rest));
    let _ = audio::surround_params(packet_ms);
}

/// The types of the units in `units` (as the scanner reports them) that hold a byte other than
/// zero before the next start code: a run of zeros between two start codes is no unit.
fn real_units(data: &[u8], units: &[(usize, u8)]) -> Vec<u8> {
    let next = units.iter().skip(1).map(|(at, _)| at - 3).chain([usize::MAX]);
    units
        .iter()
        .zip(next)
        .filter(|((at, _), end)| *end == usize::MAX || data[*at..*end].iter().any(|b| *b != 0))
        .map(|((_, t), _)| *t)
        .collect()
}

/// `annexb`: encoder output through the NAL scanner and the AUD/SEI stripper. Stripping keeps
/// every other unit, in order, and stripping again changes nothing.
pub fn annexb(data: &[u8]) {
    for (hevc, dropped) in [
        (false, &[annexb::NAL_AUD, annexb::NAL_SEI][..]),
        (true, &[annexb::HEVC_AUD, annexb::HEVC_SEI_PREFIX, annexb::HEVC_SEI_SUFFIX][..]),
    ] {
        let scan = if hevc { annexb::hevc_nal_types } else { annexb::h264_nal_types };
        let stripped = annexb::strip_aud_sei(data, hevc);
        let kept: Vec<u8> = real_units(data, &scan(data)).into_iter().filter(|t| !dropped.contains(t)).collect();
        assert_eq!(real_units(&stripped, &scan(&stripped)), kept, "units kept (HEVC: {hevc})");
        assert_eq!(scan(&stripped).len(), kept.len(), "no empty units (HEVC: {hevc})");
        assert_eq!(annexb::strip_aud_sei(&stripped, hevc), stripped, "strip twice (HEVC: {hevc})");
    }
}

/// A harness: takes any bytes, returns normally.
pub type Harness = fn(&[u8]);

/// Every harness of this crate by target name (the corpus directories' names).
pub const TARGETS: &[(&str, Harness)] = &[
    ("rtsp_request", rtsp_request),
    ("rtsp_announce", rtsp_announce),
    ("rtsp_sealed", rtsp_sealed),
    ("control_message", control_message),
    ("input", input),
    ("pairing_steps", pairing_steps),
    ("xml", xml),
    ("video_packetize", video_packetize),
    ("audio_packetize", audio_packetize),
    ("annexb", annexb),
];
