//! The TLS handshake gate: connections that never finish a ClientHello hold no permit and block
//! nobody.

mod common;

use std::time::Duration;

use common::TestHost;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wolf_rs::client::PairOutcome;

/// The first bytes of a ClientHello that announces 512 bytes and sends fewer.
const HALF_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, // handshake record, 512 bytes
    0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, // ClientHello, TLS 1.2
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_connections_do_not_stop_pairing_or_https() {
    let _ = wolf_rs::net::tls::raise_nofile_limit();
    // A long ClientHello timeout keeps the stalled connections open for the whole test.
    let host = TestHost::start("[pairing]\npin = [\"4321\"]\n[tls]\nclient_hello_timeout_ms = 120000\n").await;
    let mut stalled = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(host.https).await.expect("connect");
        if i % 2 == 1 {
            s.write_all(HALF_CLIENT_HELLO).await.expect("half hello");
        }
        stalled.push(s);
    }
    // Wait until the host has accepted them all (they are pending, not yet handshaking).
    let gate = host.running().gate.clone();
    for _ in 0..500 {
        if gate.stats.pending.load(std::sync::atomic::Ordering::Relaxed) >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gate.stats.pending.load(std::sync::atomic::Ordering::Relaxed), 1000);
    assert_eq!(
        gate.stats.in_use.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "stalled clients hold no permit"
    );

    let mut c = host.client();
    assert_eq!(c.pair("4321").await.unwrap(), PairOutcome::Paired);
    for _ in 0..5 {
        let info = c.https_get(&c.url("/serverinfo", &[])).await.unwrap();
        assert_eq!(info.field("PairStatus").as_deref(), Some("1"));
    }
    assert!(gate.stats.count(wolf_rs::net::tls::Outcome::Ok) >= 6);

    // When the stalled clients hang up, the host closes its side too: nothing left in CLOSE_WAIT.
    drop(stalled);
    for _ in 0..1000 {
        if gate.stats.pending.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gate.stats.pending.load(std::sync::atomic::Ordering::Relaxed), 0);
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
    let host = TestHost::start("[pairing]\npin = [\"4321\"]\n[http]\nrequest_timeout_ms = 300\n").await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(host.http).await.unwrap();
        s.write_all(b"GET /serverinfo?uniqueid=0123456789ABCDEF HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let mut c = host.client();
    assert_eq!(c.pair("4321").await.unwrap(), PairOutcome::Paired);
    // Every slow client is closed by the host (EOF or reset, maybe after a 408), none hangs.
    for mut s in slow {
        let mut buf = Vec::new();
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf),
        )
        .await;
        assert!(r.is_ok(), "the host closed the slow connection");
    }
    host.stop().await;
}

#[tokio::test]
async fn over_the_pending_cap_new_connections_are_closed_at_once() {
    let host = TestHost::start(
        "[pairing]\npin = [\"4321\"]\n[tls]\nmax_pending_connections = 4\nclient_hello_timeout_ms = 120000\n",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(host.https).await.unwrap());
    }
    let gate = host.running().gate.clone();
    for _ in 0..500 {
        if gate.stats.pending.load(std::sync::atomic::Ordering::Relaxed) >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The fifth is accepted and closed: reading gives EOF (or a reset), not a hang.
    let mut fifth = TcpStream::connect(host.https).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut fifth, &mut buf),
    )
    .await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    assert!(gate.stats.count(wolf_rs::net::tls::Outcome::Rejected) >= 1);
    // Once the stalled ones go, the port serves again.
    drop(held);
    let mut c = host.client();
    let mut outcome = None;
    for _ in 0..100 {
        match c.pair("4321").await {
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
    let host = TestHost::start("[tls]\nclient_hello_timeout_ms = 200\n").await;
    let mut s = TcpStream::connect(host.https).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(20), tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed by the host: {n:?}");
    let gate = host.running().gate.clone();
    assert!(gate.stats.count(wolf_rs::net::tls::Outcome::Timeout) >= 1);
    host.stop().await;
}
