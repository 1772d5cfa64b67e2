//! Fuzz harnesses for what the host parses itself (the wire formats are in
//! `wolf_protocol::fuzz_harness`): one function per cargo-fuzz target in `fuzz/`, which only calls
//! it, and `tests/fuzz_corpus.rs` replays the committed corpus through the same functions on
//! stable. Each must return normally for any input; the asserts are invariants (round trips).

use std::net::{IpAddr, Ipv4Addr};

use crate::config::{Config, Env};
use crate::gamestream::handlers;
use crate::net::limit::TrustedProxies;
use crate::rtsp::{Addressed, HostInfo, answer};
use crate::sessions::store::{self, SessionPorts, SessionsFile};
use crate::sessions::{Mode, RtspProgress, Session, Sessions};
use crate::state::clients::{self, ClientsFile};
use crate::state::identity::Identity;
use crate::state::versioned::{self, Parsed};
use wolf_protocol::fuzz_harness::Harness;

/// Requests one `rtsp_session` input may carry.
const MAX_REQUESTS: usize = 16;

/// `http_query`: the query string of a GameStream request, and what the handlers read from it.
pub fn http_query(data: &[u8]) {
    // hyper hands the handlers a `&str` query.
    let query = String::from_utf8_lossy(data);
    let q = handlers::parse_query(&query);
    // Parameters written back as a query read the same (the test client builds queries so).
    let mut again = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &q {
        again.append_pair(k, v);
    }
    assert_eq!(handlers::parse_query(&again.finish()), q);
    let _ = handlers::waits_for_pin("/pair", &q);
    let _ = crate::host::launch::ResumeParams::from_query(&q);
    if let Ok(p) = crate::host::launch::StreamParams::from_query(&q) {
        let key = p.rikey;
        assert!(q.get("rikey").is_some_and(|k| k.eq_ignore_ascii_case(&hex::encode(key))));
    }
    if let Some(mode) = q.get("mode").and_then(|m| Mode::parse(m)) {
        assert_eq!(Mode::parse(&mode.to_string()), Some(mode), "a mode reads back as written");
    }
    // Pairing step 1 parses the client's certificate straight from the query.
    if let (Some(salt), Some(cert)) = (q.get("salt"), q.get("clientcert")) {
        let _ = wolf_protocol::pairing::PairingSession::start(salt, cert);
    }
}

/// `state_sessions`: `active_sessions.json` as start-up reads it, and the sessions restored from it.
pub fn state_sessions(data: &[u8]) {
    let file = match versioned::parse::<SessionsFile>(data, store::VERSION) {
        Parsed::Read(f) => f,
        Parsed::OtherVersion(v) => return assert_ne!(v, u64::from(store::VERSION)),
        Parsed::Corrupt(_) => return,
    };
    // What is written (as `store::write` encodes it) reads back the same.
    let json = match serde_json::to_vec_pretty(&file) {
        Ok(j) => j,
        Err(e) => panic!("encoding sessions that were read: {e}"),
    };
    match versioned::parse::<SessionsFile>(&json, store::VERSION) {
        Parsed::Read(again) => assert_eq!(again.sessions, file.sessions),
        other => panic!("written sessions do not read back: {other:?}"),
    }
    for r in &file.sessions {
        let Some(s) = Session::from_record(r) else { continue };
        let back = s.record(None);
        assert_eq!((back.id, back.client_ip, back.app_id, back.ports), (r.id, r.client_ip, r.app_id, r.ports));
        assert_eq!((&back.runner, back.state, back.surround_audio_info), (&r.runner, r.state, r.surround_audio_info));
        assert_eq!((back.created_unix_ms, back.updated_unix_ms), (r.created_unix_ms, r.updated_unix_ms));
    }
}

/// `state_clients`: `paired_clients.json` as start-up reads it.
pub fn state_clients(data: &[u8]) {
    let file = match versioned::parse::<ClientsFile>(data, clients::VERSION) {
        Parsed::Read(f) => f,
        Parsed::OtherVersion(v) => return assert_ne!(v, u64::from(clients::VERSION)),
        Parsed::Corrupt(_) => return,
    };
    let json = match serde_json::to_vec_pretty(&file) {
        Ok(j) => j,
        Err(e) => panic!("encoding clients that were read: {e}"),
    };
    match versioned::parse::<ClientsFile>(&json, clients::VERSION) {
        Parsed::Read(again) => assert_eq!(again.clients, file.clients),
        other => panic!("written clients do not read back: {other:?}"),
    }
    for c in &file.clients {
        let _ = clients::matches_selector(c, &c.name);
    }
}

/// `state_identity`: the host's key and certificate files (PEM), split at the first NUL byte.
pub fn state_identity(data: &[u8]) {
    let at = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let key = String::from_utf8_lossy(&data[..at]);
    let cert = String::from_utf8_lossy(data.get(at + 1..).unwrap_or_default());
    let _ = Identity::from_pem(&key, &cert);
}

/// `config`: `config.toml` (and, from comment lines `#!NAME=value`, the environment overrides).
/// A config that is accepted serializes (the test kit writes configs so) and reads back the same.
pub fn config(data: &[u8]) {
    // `Config::load` refuses text that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut env = Env::default();
    for line in text.lines() {
        if let Some((k, v)) = line.strip_prefix("#!").and_then(|l| l.split_once('='))
            && Env::NAMES.contains(&k)
        {
            env.vars.insert(k.to_owned(), v.to_owned());
        }
    }
    let Ok(cfg) = Config::parse(text, &env) else { return };
    let again = match toml::to_string(&cfg) {
        Ok(t) => t,
        Err(e) => panic!("an accepted config does not serialize: {e}"),
    };
    // Without the environment: its overrides are in `cfg` already.
    match Config::parse(&again, &Env::default()) {
        Ok(back) => assert_eq!(back, cfg, "{again}"),
        Err(issues) => panic!("an accepted config, written out, is refused: {issues:?}\n{again}"),
    }
}

/// `rtsp_session`: a client's RTSP requests, one after another, against a launched session (the
/// negotiation state machine). The first byte picks how requests find the session (its key, its
/// own port, the client's address); every reply is one the client can read, with its CSeq, and
/// only the first PLAY after an accepted ANNOUNCE starts the stream.
pub fn rtsp_session(data: &[u8]) {
    let Some((how, mut rest)) = data.split_first() else { return };
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (to, encrypted) = match how % 3 {
        0 => (Addressed::Key(7), true),
        1 => (Addressed::Port(7), false),
        _ => (Addressed::Address(ip), false),
    };
    let session = Session {
        client_fingerprint: "fuzz".into(),
        client_ip: ip,
        app_id: 1,
        mode: Mode { width: 1280, height: 720, fps: 60 },
        rikey: [0x42; 16],
        surround_audio_info: 196_610,
        ports: SessionPorts { rtsp: 48010, video: 47998, audio: 48000, control: 47999 },
        rtsp: RtspProgress { encrypted, ..RtspProgress::default() },
        ..Session::placeholder(7)
    };
    let sessions = Sessions::default();
    sessions.restore(vec![session]);
    let host = HostInfo {
        hevc: how & 4 != 0,
        encryption_supported: 3,
        trusted: TrustedProxies::new(Vec::new()),
        shared_fallback: true,
    };
    let mut started = 0;
    for _ in 0..MAX_REQUESTS {
        let Ok(Some(mut req)) = wolf_protocol::rtsp::parse_request(rest) else { break };
        // The RTSP session id is random: inputs name it `FUZZ` and get the real one, so the
        // fuzzer can walk past the first SETUP.
        let ours = sessions.by_id(7).and_then(|s| s.rtsp.rtsp_session);
        for (k, v) in &mut req.headers {
            if k.eq_ignore_ascii_case("Session") && v.starts_with("FUZZ") {
                *v = v.replacen("FUZZ", ours.as_deref().unwrap_or("FUZZ"), 1);
            }
        }
        let announced = sessions.by_id(7).and_then(|s| s.rtsp.stream).is_some();
        let (reply, command) = answer(&req, to, &sessions, &host);
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("RTSP/1.0 ") && reply.contains(&format!("\r\nCSeq: {}\r\n", req.cseq)), "{reply}");
        if command.is_some() {
            started += 1;
            assert!(req.method == "PLAY" && announced && reply.starts_with("RTSP/1.0 200 "), "{reply}");
        }
        // The next request follows this one's body.
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else { break };
        rest = &rest[end + 4 + req.body.len()..];
    }
    assert!(started <= 1, "the stream was started {started} times");
}

/// Every harness of this crate by target name (the corpus directories' names).
pub const TARGETS: &[(&str, Harness)] = &[
    ("http_query", http_query),
    ("state_sessions", state_sessions),
    ("state_clients", state_clients),
    ("state_identity", state_identity),
    ("config", config),
    ("rtsp_session", rtsp_session),
];
