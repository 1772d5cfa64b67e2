//! Many sessions from one address, as through a web gateway or a NAT: every session is found by
//! its own secrets (the rikey that opens its RTSP, its ping payload, its control connect data),
//! never by the address, so each client gets its own stream (every other one with sealed video).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wolf_client::video::{VideoOpener, announce_sdp};
use wolf_client::{GameStreamClient, PairOutcome};
use wolf_protocol::rtsp::{SS_ENC_CONTROL_V2, SS_ENC_VIDEO};
use wolf_rs::sessions::SessionState;
use wolf_testkit::session::{ControlEvent, EnetClient, receive_audio, receive_video, rtsp_to_play};
use wolf_testkit::{ConfigBuilder, PIN, TestHost};

const SESSIONS: usize = 20;
const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Client `i`'s mode: every session a different width, so a stream tells whose it is.
fn mode(i: usize) -> (u32, u32) {
    (256 + 16 * i as u32, 144)
}

/// What client `i` asks to have encrypted: every other one seals its video too.
fn encryption(i: usize) -> u32 {
    if i % 2 == 1 { SS_ENC_CONTROL_V2 | SS_ENC_VIDEO } else { SS_ENC_CONTROL_V2 }
}

/// `n` identities paired at once from 127.0.0.1, all with Moonlight's one uniqueid.
async fn paired(host: &TestHost, n: usize) -> Vec<GameStreamClient> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut c = host.client();
        tasks.push(tokio::spawn(async move {
            assert_eq!(c.pair(PIN).await.expect("pairing runs"), PairOutcome::Paired);
            c
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("pairing task"));
    }
    out
}

/// Launch at the barrier, then the client's own stream (see `play_own`).
async fn own_stream(c: Arc<GameStreamClient>, i: usize, barrier: Arc<tokio::sync::Barrier>) -> Result<(), String> {
    let (w, h) = mode(i);
    barrier.wait().await;
    let launched = c.launch("1", &format!("{w}x{h}x30")).await.map_err(|e| format!("launch: {e}"))?;
    let rtsp = launched.rtsp().map_err(|e| format!("sessionUrl0: {e}"))?;
    if !rtsp.encrypted() {
        return Err("RTSP not encrypted for a client that sent corever".into());
    }
    play_own(&rtsp, launched.rikey, (w, h), encryption(i)).await.map(drop)
}

/// RTSP to PLAY (with the SS_ENC_* bits `enc`), control, then the client's own video (opened with
/// its rikey when sealed, decoded at its own size `(w, h)`) and audio (decrypted with its rikey).
/// Returns the connected control channel.
async fn play_own(
    rtsp: &wolf_client::RtspSession,
    rikey: [u8; 16],
    (w, h): (u32, u32),
    enc: u32,
) -> Result<EnetClient, String> {
    let played = rtsp_to_play(rtsp, &announce_sdp(w, h, 30, 500, enc)).await?;
    let opener = VideoOpener::new(enc, &rikey).map_err(|e| e.to_string())?;
    let control = EnetClient::connect(played.control, played.connect_data, rikey);
    let connected =
        tokio::task::spawn_blocking(move || (control.events.recv_timeout(Duration::from_secs(30)), control))
            .await
            .map_err(|e| e.to_string())?;
    if !matches!(connected.0, Ok(ControlEvent::Connected)) {
        return Err(format!("control: {:?}", connected.0));
    }
    let frames = receive_video(LOOPBACK, played.video, &played.ping, &opener, 8, Duration::from_secs(90)).await?;
    let from_idr = wolf_testkit::session::from_first_idr(&frames);
    if from_idr.is_empty() {
        return Err("no IDR among the frames received".into());
    }
    let size = tokio::task::spawn_blocking(move || wolf_testkit::media::h264_picture_size(&from_idr))
        .await
        .map_err(|e| e.to_string())??;
    if size != (w as i32, h as i32) {
        return Err(format!("received a {}x{} stream, launched {w}x{h}: another session's", size.0, size.1));
    }
    let audio = receive_audio(LOOPBACK, played.audio, &played.ping, 20, Duration::from_secs(60)).await?;
    let undecryptable = audio
        .iter()
        .filter(|(seq, data)| wolf_testkit::media::decrypt_audio_with(&rikey, data, *seq).is_none())
        .count();
    if undecryptable > 0 {
        return Err(format!("{undecryptable} of {} audio packets do not decrypt with this launch's key", audio.len()));
    }
    Ok(connected.1)
}

/// All clients launch at once; the failures, by client.
async fn launch_all(clients: &[Arc<GameStreamClient>]) -> Vec<(usize, String)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(clients.len()));
    let tasks: Vec<_> =
        clients.iter().enumerate().map(|(i, c)| tokio::spawn(own_stream(c.clone(), i, barrier.clone()))).collect();
    let mut failed = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push((i, e)),
            Err(e) => failed.push((i, format!("task: {e}"))),
        }
    }
    failed
}

async fn cancel_all(host: &TestHost, clients: &[Arc<GameStreamClient>]) {
    for c in clients {
        let r = c.https_get(&c.url("/cancel", &[])).await.expect("cancel");
        assert_eq!(r.field("cancel").as_deref(), Some("1"), "{}", r.text());
    }
    for _ in 0..500 {
        if host.running().host.sessions.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(host.running().host.sessions.is_empty(), "every /cancel ended its own session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sessions_launched_at_once_from_one_address_each_get_their_own_stream() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let clients: Vec<_> = paired(&host, SESSIONS).await.into_iter().map(Arc::new).collect();
    for round in 1..=2 {
        let failed = launch_all(&clients).await;
        println!("round {round}: {} of {SESSIONS} same-address sessions got their own stream", SESSIONS - failed.len());
        assert!(failed.is_empty(), "round {round}: {failed:?}");
        cancel_all(&host, &clients).await;
    }
    let ended = &host.running().host.metrics.sessions_ended;
    assert_eq!(ended.with_label_values(&["cancelled"]).get(), 2 * SESSIONS as u64, "each ended once, as cancelled");
    host.stop().await;
}

/// As above while 64 more clients from the same address run TLS handshakes and requests without
/// pause, with the default budgets: 84 connections at work from one address exceed its budget of
/// 64, and none may be closed for it (only connections doing nothing are).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sessions_from_one_address_alongside_a_handshake_storm_from_it() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let clients: Vec<_> = paired(&host, SESSIONS).await.into_iter().map(Arc::new).collect();
    let stop = CancellationToken::new();
    let mut storm = Vec::new();
    for _ in 0..64 {
        let (c, stop) = (host.client(), stop.clone());
        storm.push(tokio::spawn(async move {
            let mut served = 0u32;
            // Bounded in count as well as by the test.
            for _ in 0..2000 {
                if stop.is_cancelled() {
                    break;
                }
                if c.https_get_as(&c.url("/serverinfo", &[]), None).await.is_ok() {
                    served += 1;
                }
            }
            served
        }));
    }
    let failed = launch_all(&clients).await;
    stop.cancel();
    let mut served = 0;
    for t in storm {
        served += t.await.expect("storm task");
    }
    println!("{} of {SESSIONS} sessions got their own stream beside {served} storm requests", SESSIONS - failed.len());
    assert!(failed.is_empty(), "{failed:?}");
    assert!(served > 64, "the storm ran: {served} requests served");
    cancel_all(&host, &clients).await;
    host.stop().await;
}

/// The state of `c`'s session, if it has one.
fn state(host: &TestHost, c: &GameStreamClient) -> Option<SessionState> {
    let fp = wolf_rs::gamestream::handlers::fingerprint(&c.identity.cert.der);
    host.running().host.sessions.list().into_iter().find(|s| s.client_fingerprint == fp).map(|s| s.state)
}

async fn wait_paused(host: &TestHost, c: &GameStreamClient) {
    for _ in 0..500 {
        if state(host, c) == Some(SessionState::Paused) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the session did not pause: {:?}", state(host, c));
}

/// Two clients on one address: one paused (left the stream, app still running) while the other
/// streams, then swapped. Each always gets its own session's stream, and `/cancel` of one never
/// touches the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_one_address_paused_and_streaming_then_swapped() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let mut pair = paired(&host, 2).await;
    let (b, a) = (pair.pop().unwrap(), pair.pop().unwrap());
    let (size_a, size_b) = (mode(0), mode(1));
    let state_of = |c: &GameStreamClient| state(&host, c);
    // A streams, then leaves the stream (its app keeps running).
    let la = a.launch("1", "256x144x30").await.expect("launch A");
    let control_a = play_own(&la.rtsp().unwrap(), la.rikey, size_a, SS_ENC_CONTROL_V2).await.expect("A streams");
    assert!(tokio::task::spawn_blocking(move || control_a.leave()).await.unwrap(), "A leaves");
    wait_paused(&host, &a).await;
    // B streams while A is paused.
    let lb = b.launch("1", "272x144x30").await.expect("launch B");
    let control_b = play_own(&lb.rtsp().unwrap(), lb.rikey, size_b, SS_ENC_CONTROL_V2).await.expect("B streams");
    assert_eq!(state_of(&a), Some(SessionState::Paused), "B's stream is not attached to A's session");
    // Swap: B leaves, A resumes and gets its own session back.
    assert!(tokio::task::spawn_blocking(move || control_b.leave()).await.unwrap(), "B leaves");
    wait_paused(&host, &b).await;
    let rikey: [u8; 16] = wolf_protocol::pairing::random16().unwrap();
    let resumed = a
        .https_get(&a.url(
            "/resume",
            &[("rikey", &hex::encode(rikey)), ("rikeyid", "1"), ("corever", "1"), ("mode", "256x144x30")],
        ))
        .await
        .expect("resume");
    let url = resumed.field("sessionUrl0").unwrap_or_else(|| panic!("sessionUrl0 in {}", resumed.text()));
    let rtsp = wolf_client::RtspSession::from_url(&url, rikey).unwrap();
    let control_a = play_own(&rtsp, rikey, size_a, SS_ENC_CONTROL_V2).await.expect("A streams its own again");
    assert_eq!(state_of(&b), Some(SessionState::Paused));
    // /cancel of B ends B's session only.
    let r = b.https_get(&b.url("/cancel", &[])).await.unwrap();
    assert_eq!(r.field("cancel").as_deref(), Some("1"));
    for _ in 0..500 {
        if state_of(&b).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state_of(&b), None, "B's session ended");
    assert!(state_of(&a).is_some_and(|s| s != SessionState::Paused), "A's session goes on: {:?}", state_of(&a));
    drop(control_a);
    cancel_all(&host, &[Arc::new(a)]).await;
    host.stop().await;
}

/// The control channel is bound by the session's connect data alone, from whatever address the
/// client comes (a gateway with several egress addresses); a second peer with the same connect data
/// while the client is connected is refused, as is unknown connect data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_is_bound_by_connect_data_not_by_address() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let c = paired(&host, 1).await.pop().unwrap();
    let launched = c.launch("1", "256x144x30").await.expect("launch");
    let sdp = announce_sdp(256, 144, 30, 500, SS_ENC_CONTROL_V2);
    let played = rtsp_to_play(&launched.rtsp().unwrap(), &sdp).await.unwrap();
    let events = |e: EnetClient| {
        tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            while let Ok(ev) = e.events.recv_timeout(Duration::from_secs(5)) {
                let end = ev == ControlEvent::Disconnected;
                seen.push(ev);
                if end {
                    break;
                }
            }
            (seen, e)
        })
    };
    let from = |last: u8| IpAddr::from([127, 0, 0, last]);
    let client = EnetClient::connect_from(from(2), played.control, played.connect_data, launched.rikey);
    let first = client.events.recv_timeout(Duration::from_secs(20));
    assert_eq!(first, Ok(ControlEvent::Connected), "connected from another address than the launch's");
    let second = EnetClient::connect_from(from(3), played.control, played.connect_data, launched.rikey);
    let (seen, _) = events(second).await.unwrap();
    assert_eq!(seen.last(), Some(&ControlEvent::Disconnected), "a second peer is refused: {seen:?}");
    // Unknown connect data never reaches ENet: no connection, not even a refused one.
    let wrong = EnetClient::connect_from(from(4), played.control, played.connect_data ^ 1, launched.rikey);
    let (seen, _) = events(wrong).await.unwrap();
    assert!(!seen.contains(&ControlEvent::Connected), "unknown connect data gets no connection: {seen:?}");
    let counted = |kind: &str| host.running().host.metrics.control_messages.with_label_values(&[kind]).get();
    assert_eq!(counted("refused"), 1, "only the second peer got as far as a refusal");
    assert!(counted("unknown_connect") >= 1);
    // The client's own channel is still up: it leaves when it chooses.
    assert!(tokio::task::spawn_blocking(move || client.leave()).await.unwrap());
    host.stop().await;
}

/// Two clients on one address that speak plain RTSP (no `corever`, as Moonlight before encrypted
/// RTSP): each session gets an RTSP port of its own in `sessionUrl0`, and each client, negotiating
/// there in interleaved steps, gets its own stream; once used, the shared port no longer finds them
/// by address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_rtsp_clients_on_one_address_negotiate_on_their_own_ports() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let clients = paired(&host, 2).await;
    let shared = host.running().host.ports.rtsp;
    let mut launched = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let (w, h) = mode(i);
        let rikey: [u8; 16] = wolf_protocol::pairing::random16().unwrap();
        let url = c.launch_url("1", &format!("{w}x{h}x30"), &hex::encode(rikey)).replace("&corever=1", "");
        let reply = c.https_get(&url).await.expect("launch");
        let session_url = reply.field("sessionUrl0").unwrap_or_else(|| panic!("sessionUrl0 in {}", reply.text()));
        let rtsp = wolf_client::RtspSession::from_url(&session_url, rikey).unwrap();
        assert!(!rtsp.encrypted(), "{session_url}");
        assert_ne!(rtsp.addr.port(), shared, "a port of its own: {session_url}");
        launched.push((rtsp, rikey, (w, h)));
    }
    assert_ne!(launched[0].0.addr.port(), launched[1].0.addr.port());
    // Interleaved: both negotiate and stream at once, each on its own port.
    let (b, a) = (launched.pop().unwrap(), launched.pop().unwrap());
    let (ra, rb) = tokio::join!(
        play_own(&a.0, a.1, a.2, SS_ENC_CONTROL_V2),
        play_own(&b.0, b.1, b.2, SS_ENC_CONTROL_V2 | SS_ENC_VIDEO)
    );
    let (ca, cb) = (ra.expect("A streams its own"), rb.expect("B streams its own"));
    // The shared port no longer finds either by address.
    let shared_rtsp = wolf_client::RtspSession::from_url(&format!("rtsp://127.0.0.1:{shared}"), [0; 16]).unwrap();
    let r = shared_rtsp.request("SETUP", "streamid=audio/0/0", 1, &[], "").await.unwrap();
    assert_eq!(r.code, 454, "no session by address once its own port was used");
    drop((ca, cb));
    let clients: Vec<_> = clients.into_iter().map(Arc::new).collect();
    cancel_all(&host, &clients).await;
    // Their ports close with their sessions.
    let mut closed = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(a.0.addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the session's own port closed after /cancel");
    host.stop().await;
}

/// A stranger's flood of ENet connects naming no session (far more than the host's 64 peer slots)
/// costs no slot: they are dropped at the socket, and the session's own client connects at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connects_naming_no_session_holds_no_peer_slot() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let c = paired(&host, 1).await.pop().unwrap();
    let launched = c.launch("1", "256x144x30").await.expect("launch");
    let sdp = announce_sdp(256, 144, 30, 500, SS_ENC_CONTROL_V2);
    let played = rtsp_to_play(&launched.rtsp().unwrap(), &sdp).await.unwrap();
    let (to, real) = (played.control, played.connect_data);
    // 200 half-open connects from one stranger address, kept retrying while the client connects.
    let flood = std::thread::spawn(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.5:0").unwrap();
        let settings = rusty_enet::HostSettings { peer_limit: 256, channel_limit: 0x30, ..Default::default() };
        let mut host = rusty_enet::Host::new(socket, settings).unwrap();
        for i in 0..200u32 {
            let _ = host.connect(to, 0x30, real.wrapping_add(1 + i));
        }
        let started = std::time::Instant::now();
        let mut connected = 0;
        while started.elapsed() < Duration::from_secs(6) {
            while let Ok(Some(e)) = host.service() {
                if matches!(e.no_ref(), rusty_enet::EventNoRef::Connect { .. }) {
                    connected += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        connected
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = EnetClient::connect(to, real, launched.rikey);
    let first = tokio::task::spawn_blocking(move || (client.events.recv_timeout(Duration::from_secs(20)), client));
    let (first, client) = first.await.unwrap();
    assert_eq!(first, Ok(ControlEvent::Connected), "the session's client connects beside the flood");
    assert_eq!(flood.join().unwrap(), 0, "no stranger's connect got through");
    let dropped = host.running().host.metrics.control_messages.with_label_values(&["unknown_connect"]).get();
    assert!(dropped >= 200, "every stranger's connect was dropped at the socket: {dropped}");
    assert!(tokio::task::spawn_blocking(move || client.leave()).await.unwrap());
    host.stop().await;
}
