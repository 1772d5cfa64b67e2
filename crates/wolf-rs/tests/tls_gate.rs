//! The TLS handshake gate: connections that never finish a ClientHello hold no permit and block
//! nobody.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wolf_client::PairOutcome;
use wolf_testkit::{ConfigBuilder, PIN, TestHost};

/// A TCP connection from a chosen loopback source address (the host limits connections per IP).
async fn connect_from(src: u8, dst: std::net::SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(std::net::SocketAddr::from(([127, 0, 0, src], 0))).expect("bind a loopback source");
    sock.connect(dst).await.expect("connect")
}

/// A complete ClientHello, as a real client's first flight.
fn full_client_hello() -> Vec<u8> {
    let cfg = wolf_client::tls::tls_config(None, None).expect("tls config");
    let name = rustls_pki_types::ServerName::try_from("wolf-rs").expect("name");
    let mut conn = rustls::ClientConnection::new(cfg, name).expect("client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write hello");
    }
    out
}

/// The first bytes of a ClientHello that announces 512 bytes and sends fewer.
const HALF_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, // handshake record, 512 bytes
    0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, // ClientHello, TLS 1.2
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_connections_do_not_stop_pairing_or_https() {
    let _ = wolf_rs::net::limit::raise_nofile_limit();
    // A long ClientHello timeout keeps the stalled connections open for the whole test.
    let host =
        TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| c.tls.client_hello_timeout_ms = 120000)).await;
    let mut stalled = Vec::new();
    for i in 0..1000 {
        // 50 from each of 20 addresses: under the per-IP cap, so all of them reach the gate.
        let mut s = connect_from(2 + (i % 20) as u8, host.https).await;
        if i % 2 == 1 {
            s.write_all(HALF_CLIENT_HELLO).await.expect("half hello");
        }
        stalled.push(s);
    }
    // Wait until the host has accepted them all (they are pending, not yet handshaking).
    let gate = host.running().gate.clone();
    for _ in 0..500 {
        if gate.stats.pending.get() >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gate.stats.pending.get(), 1000);
    assert_eq!(gate.stats.in_use.get(), 0, "stalled clients hold no permit");

    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    for _ in 0..5 {
        let info = c.https_get(&c.url("/serverinfo", &[])).await.unwrap();
        assert_eq!(info.field("PairStatus").as_deref(), Some("1"));
    }
    assert!(gate.stats.count("ok") >= 6);

    // When the stalled clients hang up, the host closes its side too: nothing left in CLOSE_WAIT.
    drop(stalled);
    for _ in 0..1000 {
        if gate.stats.pending.get() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gate.stats.pending.get(), 0);
    assert_eq!(close_wait_on(host.https.port()), 0);
    host.stop().await;
}

/// Sockets in CLOSE_WAIT whose local port is `port` (the host's side of closed connections).
fn close_wait_on(port: u16) -> usize {
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&local) && cols[3] == "08"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_headers_are_cut_off_and_block_nobody() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| c.http.request_timeout_ms = 300)).await;
    let mut slow = Vec::new();
    for i in 0..200 {
        let mut s = connect_from(2 + (i % 20) as u8, host.http).await;
        s.write_all(b"GET /serverinfo?uniqueid=0123456789ABCDEF HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(s);
    }
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    // Every slow client is closed by the host (EOF or reset, maybe after a 408), none hangs.
    for mut s in slow {
        let mut buf = Vec::new();
        let r =
            tokio::time::timeout(Duration::from_secs(20), tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf)).await;
        assert!(r.is_ok(), "the host closed the slow connection");
    }
    host.stop().await;
}

#[tokio::test]
async fn over_the_pending_cap_new_connections_are_closed_at_once() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| {
        c.tls.max_pending_connections = 4;
        c.tls.client_hello_timeout_ms = 120000;
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(host.https).await.unwrap());
    }
    let gate = host.running().gate.clone();
    for _ in 0..500 {
        if gate.stats.pending.get() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The fifth is accepted and closed: reading gives EOF (or a reset), not a hang.
    let mut fifth = TcpStream::connect(host.https).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(20), tokio::io::AsyncReadExt::read(&mut fifth, &mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    assert!(gate.stats.count("rejected") >= 1);
    // Once the stalled ones go, the port serves again.
    drop(held);
    let mut c = host.client();
    let mut outcome = None;
    for _ in 0..100 {
        match c.pair(PIN).await {
            Ok(o) => {
                outcome = Some(o);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(outcome, Some(PairOutcome::Paired));
    host.stop().await;
}

#[tokio::test]
async fn a_silent_connection_times_out_and_is_closed() {
    let host = TestHost::start(ConfigBuilder::loopback().with(|c| c.tls.client_hello_timeout_ms = 200)).await;
    let mut s = TcpStream::connect(host.https).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(20), tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed by the host: {n:?}");
    let gate = host.running().gate.clone();
    assert!(gate.stats.count("timeout") >= 1);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stall_after_a_full_client_hello_hold_no_permit() {
    // Long handshake timeout: with permits held through the client's flight, these would block
    // every real client for that long.
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| c.tls.handshake_timeout_ms = 120000)).await;
    let hello = full_client_hello();
    let mut stalled = Vec::new();
    for i in 0..60 {
        let mut s = connect_from(2 + (i % 6) as u8, host.https).await;
        s.write_all(&hello).await.expect("hello");
        stalled.push(s);
    }
    let gate = host.running().gate.clone();
    let load = |g: &prometheus::IntGauge| g.get();
    for _ in 0..2000 {
        if load(&gate.stats.pending) >= 60 && load(&gate.stats.waiting) == 0 && load(&gate.stats.in_use) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(load(&gate.stats.pending), 60, "the stalled handshakes are still open");
    assert_eq!(load(&gate.stats.in_use), 0, "none of them holds a permit");
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let info = c.https_get(&c.url("/serverinfo", &[])).await.unwrap();
    assert_eq!(info.field("PairStatus").as_deref(), Some("1"));
    drop(stalled);
    host.stop().await;
}

/// Idle connections filling an address's budget (a NAT neighbour, or a stranger) make room for a
/// real client from that address: the oldest idle ones are closed, not the newcomer.
#[tokio::test]
async fn idle_connections_at_an_addresss_cap_make_room_for_a_real_client() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| {
        c.http.max_connections_per_ip = 8;
        c.tls.client_hello_timeout_ms = 120000;
        c.http.request_timeout_ms = 120000;
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect_from(1, host.https).await);
        held.push(connect_from(1, host.http).await);
    }
    // Older than a real client ever leaves a connection silent.
    tokio::time::sleep(wolf_rs::net::limit::IDLE_GRACE + Duration::from_millis(200)).await;
    let mut c = host.client();
    assert_eq!(c.http.ip(), std::net::IpAddr::from([127, 0, 0, 1]), "the client shares their address");
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    assert_eq!(c.https_get(&c.url("/serverinfo", &[])).await.unwrap().field("PairStatus").as_deref(), Some("1"));
    // The room was made by closing held ones (EOF or reset), on both ports.
    let mut closed = 0;
    for mut s in held {
        let mut buf = [0u8; 1];
        if let Ok(r) =
            tokio::time::timeout(Duration::from_millis(200), tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await
        {
            assert!(matches!(r, Ok(0) | Err(_)), "an idle connection gets nothing but a close: {r:?}");
            closed += 1;
        }
    }
    assert!(closed >= 2, "at least one held connection per port was closed, {closed} were");
    host.stop().await;
}

/// 1000 idle connections from the address of 8 real clients, opened while those clients pair and
/// query: every request of the real clients succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_from_their_address_fail_no_real_client() {
    let _ = wolf_rs::net::limit::raise_nofile_limit();
    let host =
        TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| c.tls.client_hello_timeout_ms = 120000)).await;
    let https = host.https;
    let idle = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..1000 {
            held.push(connect_from(1, https).await);
            tokio::task::yield_now().await;
        }
        held
    });
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut c = host.client();
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            match c.pair(PIN).await {
                Ok(PairOutcome::Paired) => {}
                other => failures.push(format!("pair: {other:?}")),
            }
            for _ in 0..10 {
                match c.https_get(&c.url("/serverinfo", &[])).await {
                    Ok(r) if r.field("PairStatus").as_deref() == Some("1") => {}
                    other => failures.push(format!("serverinfo: {:?}", other.map(|r| r.field("PairStatus")))),
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    let held = idle.await.unwrap();
    assert_eq!(held.len(), 1000);
    assert!(failures.is_empty(), "real-client failures: {failures:?}");
    // And once all 1000 are open, a real client is still served.
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    drop(held);
    host.stop().await;
}

#[tokio::test]
async fn a_handshake_that_stalls_after_the_hello_times_out_and_is_closed() {
    let host = TestHost::start(ConfigBuilder::loopback().with(|c| c.tls.handshake_timeout_ms = 300)).await;
    let mut s = connect_from(3, host.https).await;
    s.write_all(&full_client_hello()).await.unwrap();
    // The host sends its flight, then gives up on ours and closes.
    let mut sink = Vec::new();
    let r =
        tokio::time::timeout(Duration::from_secs(20), tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink)).await;
    assert!(r.is_ok(), "the host closed the connection");
    assert!(!sink.is_empty(), "the server flight was sent");
    let gate = host.running().gate.clone();
    assert!(gate.stats.count("timeout") >= 1);
    assert_eq!(gate.stats.in_use.get(), 0);
    host.stop().await;
}

/// Connections from 16 addresses that finish their TLS handshake and then send nothing, as many as
/// the port holds: every real request is still served, the idle ones making room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshaken_idle_connections_from_many_addresses_fail_no_real_request() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| {
        c.http.max_connections = 128;
        c.http.request_timeout_ms = 120000;
    }))
    .await;
    let cfg = wolf_client::tls::tls_config(None, None).expect("tls config");
    let mut idle = Vec::new();
    for src in 2..18u8 {
        for _ in 0..8 {
            let tcp = connect_from(src, host.https).await;
            let name = rustls_pki_types::ServerName::try_from("wolf-rs").unwrap();
            let tls = tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp).await.expect("handshake");
            idle.push(tls);
        }
    }
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let mut served = 0;
    for _ in 0..40 {
        if c.https_get(&c.url("/serverinfo", &[])).await.is_ok_and(|r| r.field("PairStatus").as_deref() == Some("1")) {
            served += 1;
        }
    }
    assert_eq!(served, 40, "every real request is served beside {} handshaken idle connections", idle.len());
    host.stop().await;
}
