//! The GameStream control plane end to end: the project's Moonlight-side client against a real host
//! on loopback.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wolf_client::{ClientIdentity, PairOutcome};
use wolf_rs::host::pairing::Source;
use wolf_testkit::{ConfigBuilder, PIN, TestHost};

/// One request to the host's API socket, as `wolf-rs pair` and `clients` send it: (status, body).
async fn api(host: &TestHost, method: hyper::Method, path: &str, body: Option<&str>) -> (hyper::StatusCode, String) {
    let sock = host.dir.path().join("wolf.sock");
    wolf_rs::cli::client::call(&sock, method, path, body.map(str::to_owned)).await.unwrap().expect("the API answers")
}

fn launch_query(c: &wolf_client::GameStreamClient) -> String {
    c.url(
        "/launch",
        &[
            ("appid", "1"),
            ("mode", "1280x720x60"),
            ("additionalStates", "1"),
            ("sops", "0"),
            ("rikey", "00112233445566778899aabbccddeeff"),
            ("rikeyid", "-1462233085"),
            ("localAudioPlayMode", "0"),
            ("surroundAudioInfo", "196610"),
            ("corever", "1"),
        ],
    )
}

#[tokio::test]
async fn fixed_pin_pairs_then_serverinfo_applist_launch_cancel() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);

    let info = c.https_get(&c.url("/serverinfo", &[])).await.unwrap();
    assert_eq!(info.status, 200);
    assert_eq!(info.field("PairStatus").as_deref(), Some("1"));
    assert_eq!(info.field("mac").as_deref(), Some("02:00:00:aa:bb:cc"));
    assert_eq!(info.field("state").as_deref(), Some("SUNSHINE_SERVER_FREE"));
    assert!(uuid::Uuid::parse_str(&info.field("uniqueid").unwrap()).is_ok());
    assert_eq!(info.field("HttpsPort").unwrap().parse::<u16>().unwrap(), host.https.port());
    assert_eq!(info.field("ExternalPort").unwrap().parse::<u16>().unwrap(), host.http.port());
    assert!(info.field("LocalIP").unwrap().parse::<std::net::Ipv4Addr>().is_ok());
    assert_eq!(info.field("appversion").as_deref(), Some("7.1.431.-1"));
    let codecs: u32 = info.field("ServerCodecModeSupport").unwrap().parse().unwrap();
    assert_eq!(codecs & 1, 1, "H.264 always");
    let ctx = &host.running().gamestream;
    assert_eq!(codecs & 0x100 != 0, ctx.encoder.hevc.is_some(), "HEVC only with an HEVC encoder");
    assert_eq!(info.field("gputype").as_deref(), Some(ctx.encoder.h264.name));

    // Plain HTTP never says paired and never shows the MAC.
    let plain = c.http_get(&c.url("/serverinfo", &[])).await.unwrap();
    assert_eq!(plain.field("PairStatus").as_deref(), Some("0"));
    assert_eq!(plain.field("mac").as_deref(), Some("00:00:00:00:00:00"));

    let apps = c.https_get(&c.url("/applist", &[])).await.unwrap();
    assert_eq!(apps.field("AppTitle").as_deref(), Some("Test pattern"));
    assert_eq!(apps.field("ID").as_deref(), Some("1"));

    let icon =
        c.https_get(&c.url("/appasset", &[("appid", "1"), ("AssetType", "2"), ("AssetIdx", "0")])).await.unwrap();
    assert_eq!(icon.content_type, "image/png");
    assert!(icon.body.starts_with(b"\x89PNG\r\n\x1a\n"));

    let l = c.https_get(&launch_query(&c)).await.unwrap();
    assert_eq!(l.xml_status(), Some(200), "{}", l.text());
    assert_eq!(l.field("gamesession").as_deref(), Some("1"));
    let url = format!("rtspenc://127.0.0.1:{}", host.running().rtsp_port);
    assert_eq!(l.field("sessionUrl0"), Some(url));
    assert_eq!(host.running().host.sessions.len(), 1);

    let busy = c.https_get(&c.url("/serverinfo", &[])).await.unwrap();
    assert_eq!(busy.field("state").as_deref(), Some("SUNSHINE_SERVER_BUSY"));
    assert_eq!(busy.field("currentgame").as_deref(), Some("1"));

    // A second launch is refused; resume works.
    let again = c.https_get(&launch_query(&c)).await.unwrap();
    assert_eq!(again.xml_status(), Some(400));
    let r = c
        .https_get(&c.url("/resume", &[("rikey", "ffeeddccbbaa99887766554433221100"), ("rikeyid", "7")]))
        .await
        .unwrap();
    assert_eq!(r.field("resume").as_deref(), Some("1"), "{}", r.text());

    let cancel = c.https_get(&c.url("/cancel", &[])).await.unwrap();
    assert_eq!(cancel.field("cancel").as_deref(), Some("1"));
    let free = c.https_get(&c.url("/serverinfo", &[])).await.unwrap();
    assert_eq!(free.field("state").as_deref(), Some("SUNSHINE_SERVER_FREE"));
    assert_eq!(free.field("currentgame").as_deref(), Some("0"));
    assert!(host.running().host.sessions.is_empty());
    let gone = c
        .https_get(&c.url("/resume", &[("rikey", "ffeeddccbbaa99887766554433221100"), ("rikeyid", "7")]))
        .await
        .unwrap();
    assert_eq!(gone.xml_status(), Some(503));
    host.stop().await;
}

#[tokio::test]
async fn pin_typed_on_the_pin_page_while_step_one_waits() {
    let host = TestHost::start(ConfigBuilder::loopback()).await;
    let mut c = host.client();
    let pairing = tokio::spawn(async move { (c.pair("5678").await, c) });
    // Find the waiting pairing's secret the way an operator would (the API's pending pairings show
    // the PIN page link's secret).
    let mut secret = None;
    for _ in 0..200 {
        let (_, body) = api(&host, hyper::Method::GET, "/api/v1/pair/pending", None).await;
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(p) = listed["requests"].as_array().and_then(|l| l.first()) {
            secret = p["pair_secret"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secret = secret.expect("a pairing waits for its PIN");
    let helper = host.client();
    let page = helper.http_get("/pin/").await.unwrap();
    assert!(page.content_type.starts_with("text/html") && page.text().contains("PIN"));
    let bad = helper
        .http_request(hyper::Method::POST, "/pin/", Some(r#"{"pin":"5678","secret":"nope"}"#.into()))
        .await
        .unwrap();
    assert_eq!(bad.status, 404);
    let malformed = helper.http_request(hyper::Method::POST, "/pin/", Some("{pin".into())).await.unwrap();
    assert_eq!(malformed.status, 400);
    let body = serde_json::json!({ "pin": "5678", "secret": secret }).to_string();
    let ok = helper.http_request(hyper::Method::POST, "/pin/", Some(body)).await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let (outcome, c) = pairing.await.unwrap();
    assert_eq!(outcome.unwrap(), PairOutcome::Paired);
    let info = c.https_get(&c.url("/serverinfo", &[])).await.unwrap();
    assert_eq!(info.field("PairStatus").as_deref(), Some("1"));
    host.stop().await;
}

#[tokio::test]
async fn wrong_pin_pairs_nothing_and_persists_nothing() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let mut c = host.client();
    assert_eq!(c.pair("1111").await.unwrap(), PairOutcome::NotPaired { step: "clientpairingsecret" });
    assert!(host.running().host.clients.list().is_empty());
    let on_disk = wolf_rs::state::clients::read_file(&host.paths().clients()).unwrap();
    assert!(on_disk.is_empty());
    let info = c.https_get(&c.url("/serverinfo", &[])).await.unwrap();
    assert_eq!(info.xml_status(), Some(401));
    host.stop().await;
}

#[tokio::test]
async fn out_of_order_steps_get_400_and_discard_the_pairing() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let c = host.client();
    let r = c.http_get(&c.url("/pair", &[("clientchallenge", "00112233445566778899aabbccddeeff")])).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.xml_status(), Some(400));
    assert!(r.text().contains("Out of order"), "{}", r.text());

    // Step 1, then step 3 before step 2: refused, and the pairing is gone (step 2 is refused too).
    let cert = hex::encode(c.identity.cert.pem.as_bytes());
    let s1 = c
        .http_get(&c.url(
            "/pair",
            &[("phrase", "getservercert"), ("salt", "00112233445566778899aabbccddeeff"), ("clientcert", &cert)],
        ))
        .await
        .unwrap();
    assert_eq!(s1.xml_status(), Some(200));
    let s3 = c.http_get(&c.url("/pair", &[("serverchallengeresp", &"00".repeat(32))])).await.unwrap();
    assert_eq!(s3.xml_status(), Some(400));
    assert!(s3.text().contains("Out of order"), "{}", s3.text());
    let s2 = c.http_get(&c.url("/pair", &[("clientchallenge", "00112233445566778899aabbccddeeff")])).await.unwrap();
    assert_eq!(s2.xml_status(), Some(400));
    host.stop().await;
}

#[tokio::test]
async fn unpaired_certificates_get_401_xml_on_every_https_endpoint() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let stranger = host.client();
    let endpoints = [
        stranger.url("/serverinfo", &[]),
        stranger.url("/pair", &[("phrase", "pairchallenge")]),
        stranger.url("/applist", &[]),
        launch_query(&stranger),
        stranger.url("/resume", &[("rikey", "00112233445566778899aabbccddeeff"), ("rikeyid", "1")]),
        stranger.url("/cancel", &[]),
        stranger.url("/appasset", &[("appid", "1")]),
        stranger.url("/unpair", &[]),
        stranger.url("/nonexistent", &[]),
    ];
    for e in &endpoints {
        for identity in [Some(&*stranger.identity), None] {
            let r = stranger.https_get_as(e, identity).await.unwrap();
            assert_eq!(r.status, 200, "{e}");
            assert_eq!(r.xml_status(), Some(401), "{e}: {}", r.text());
            assert!(r.text().contains("The client is not authorized. Certificate verification failed."));
        }
    }
    assert!(host.running().host.sessions.is_empty());
    host.stop().await;
}

#[tokio::test]
async fn pairing_survives_restart_and_unpair_removes_it() {
    let mut host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let id = std::sync::Arc::new(ClientIdentity::generate().unwrap());
    let mut c = host.client_with(id.clone());
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let uuid_before = c.https_get(&c.url("/serverinfo", &[])).await.unwrap().field("uniqueid");
    host.restart().await;
    let mut c = host.client_with(id.clone());
    let info = c.https_get(&c.url("/serverinfo", &[])).await.unwrap();
    assert_eq!(info.field("PairStatus").as_deref(), Some("1"), "{}", info.text());
    assert_eq!(info.field("uniqueid"), uuid_before, "the host uuid is stable");

    // HTTPS /unpair removes exactly this client.
    c.server_cert = None;
    let r = c.https_get(&c.url("/unpair", &[])).await.unwrap();
    assert_eq!(r.xml_status(), Some(200));
    assert_eq!(c.https_get(&c.url("/serverinfo", &[])).await.unwrap().xml_status(), Some(401));
    assert!(wolf_rs::state::clients::read_file(&host.paths().clients()).unwrap().is_empty());

    // Plain-HTTP /unpair (what Moonlight sends after any failed pairing, with the uniqueid every
    // client shares) never unpairs anyone: a stranger's failed attempt must not unpair us.
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let mut stranger = host.client();
    assert_eq!(stranger.pair("9999").await.unwrap(), PairOutcome::NotPaired { step: "clientpairingsecret" });
    let r = stranger.http_get(&stranger.url("/unpair", &[])).await.unwrap();
    assert_eq!(r.xml_status(), Some(200));
    assert_eq!(host.running().host.clients.list().len(), 1);
    let info = c.https_get(&c.url("/serverinfo", &[])).await.unwrap();
    assert_eq!(info.field("PairStatus").as_deref(), Some("1"));
    host.stop().await;
}

#[tokio::test]
async fn api_socket_removes_clients_and_submits_pins() {
    let host = TestHost::start(ConfigBuilder::loopback()).await;
    let mut c = host.client();
    let pairing = tokio::spawn(async move { (c.pair("2468").await, c) });
    // `wolf-rs pair 2468`: no secret needed while exactly one pairing waits.
    let mut submitted = false;
    for _ in 0..200 {
        let (status, _) = api(&host, hyper::Method::POST, "/api/v1/pair/client", Some(r#"{"pin":"2468"}"#)).await;
        if status.is_success() {
            submitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(submitted);
    let (outcome, c) = pairing.await.unwrap();
    assert_eq!(outcome.unwrap(), PairOutcome::Paired);
    let fp = c.identity.cert.fingerprint_hex();
    let (status, body) = api(&host, hyper::Method::GET, "/api/v1/clients", None).await;
    assert!(status.is_success() && body.contains(&fp));
    // `wolf-rs clients remove <prefix>` picks the client by its fingerprint's first characters.
    let remove = |selector: String| {
        let dir = host.dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_wolf-rs"))
                .arg("--state-dir")
                .arg(dir)
                .args(["clients", "remove", &selector])
                .output()
                .unwrap()
        })
    };
    let o = remove(fp[..12].to_owned()).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(c.https_get(&c.url("/serverinfo", &[])).await.unwrap().xml_status(), Some(401));
    let o = remove("deadbeefdeadbeef".to_owned()).await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let (status, _) =
        api(&host, hyper::Method::POST, "/api/v1/unpair/client", Some(r#"{"client_id":"deadbeefdeadbeef"}"#)).await;
    assert_eq!(status.as_u16(), 404);
    host.stop().await;
}

#[tokio::test]
async fn pin_wait_is_bounded_and_blocks_no_other_request() {
    let host = TestHost::start(ConfigBuilder::loopback().with(|c| c.pairing.pin_timeout = 1)).await;
    let mut c = host.client();
    let waiting = tokio::spawn(async move { c.pair("1234").await });
    // While step 1 waits, the host answers others.
    let other = host.client();
    for _ in 0..3 {
        let r = other.http_get(&other.url("/serverinfo", &[])).await.unwrap();
        assert_eq!(r.xml_status(), Some(200));
    }
    match waiting.await.unwrap().unwrap() {
        PairOutcome::Refused { step: "getservercert", status: 408, .. } => {}
        other => panic!("expected a PIN timeout, got {other:?}"),
    }
    assert!(host.running().host.pairing.waiting().is_empty());
    host.stop().await;
}

#[tokio::test]
async fn five_failures_from_one_ip_get_it_refused() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let mut c = host.client();
    // Out-of-order steps guess nothing: they are refused but not counted.
    for _ in 0..6 {
        let r = c.http_get(&c.url("/pair", &[("clientchallenge", "00112233445566778899aabbccddeeff")])).await.unwrap();
        assert_eq!(r.xml_status(), Some(400));
    }
    assert_eq!(host.running().host.pairing.banned_for(&Source::addr(c.http.ip())), None);
    // Wrong PINs are.
    for _ in 0..5 {
        assert_eq!(c.pair("1111").await.unwrap(), PairOutcome::NotPaired { step: "clientpairingsecret" });
    }
    let mut fresh = host.client();
    match fresh.pair(PIN).await.unwrap() {
        PairOutcome::Refused { status: 429, message, .. } => assert!(message.contains("Too many"), "{message}"),
        other => panic!("expected a ban, got {other:?}"),
    }
    host.stop().await;
}

/// Behind a trusted proxy (a gateway: everyone's address), one user's wrong PINs get that user's
/// certificate refused, never the address.
#[tokio::test]
async fn behind_a_trusted_proxy_wrong_pins_refuse_the_certificate_not_the_address() {
    let host = TestHost::start(
        ConfigBuilder::loopback().pin(PIN).with(|c| c.pairing.trusted_proxies = vec!["127.0.0.0/8".into()]),
    )
    .await;
    let mut guesser = host.client();
    for _ in 0..5 {
        assert_eq!(guesser.pair("1111").await.unwrap(), PairOutcome::NotPaired { step: "clientpairingsecret" });
    }
    match guesser.pair(PIN).await.unwrap() {
        PairOutcome::Refused { status: 429, message, .. } => assert!(message.contains("certificate"), "{message}"),
        other => panic!("expected the certificate's ban, got {other:?}"),
    }
    let ctx = &host.running().host;
    assert_eq!(ctx.pairing.banned_for(&Source::addr(guesser.http.ip())), None);
    let mut other = host.client();
    assert_eq!(other.pair(PIN).await.unwrap(), PairOutcome::Paired, "another user of the gateway pairs");
    host.stop().await;
}

async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn malformed_input_gets_clean_errors_and_the_host_keeps_serving() {
    // Malformed pairing requests count as failures; lift the ban limit so all cases are seen.
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| c.pairing.max_failures = 1000)).await;
    let mut c = host.client();
    let cert = hex::encode(c.identity.cert.pem.as_bytes());
    let cases = [
        c.url("/pair", &[("phrase", "getservercert"), ("salt", "00112233445566778899aabbccddeeff")])
            .replace("uniqueid=0123456789ABCDEF&", ""),
        c.url(
            "/pair",
            &[("phrase", "getservercert"), ("salt", "zz112233445566778899aabbccddeeff"), ("clientcert", &cert)],
        ),
        c.url("/pair", &[("phrase", "getservercert"), ("salt", "0011223"), ("clientcert", &cert)]),
        c.url("/pair", &[("phrase", "getservercert"), ("salt", "0011"), ("clientcert", &cert)]),
        c.url(
            "/pair",
            &[("phrase", "getservercert"), ("salt", "00112233445566778899aabbccddeeff"), ("clientcert", "abc")],
        ),
        c.url(
            "/pair",
            &[("phrase", "getservercert"), ("salt", "00112233445566778899aabbccddeeff"), ("clientcert", "4142")],
        ),
        c.url("/pair", &[("phrase", "bogus")]),
        "/pair?uniqueid=%ZZ%&salt=%".to_owned(),
    ];
    for q in &cases {
        let r = c.http_get(q).await.unwrap();
        assert_eq!(r.status, 200, "{q}");
        assert_eq!(r.xml_status(), Some(400), "{q}: {}", r.text());
    }
    let r = c.http_get("/nope").await.unwrap();
    assert_eq!(r.status, 404);

    // A 1 MB query line: refused by the parser, connection closed.
    let huge = format!("GET /serverinfo?uniqueid={} HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(1 << 20));
    let reply = raw_exchange(host.http, huge.as_bytes()).await;
    let head = String::from_utf8_lossy(&reply[..reply.len().min(12)]).into_owned();
    assert!(reply.is_empty() || head.starts_with("HTTP/1.1 4"), "{head}");
    // Garbage instead of HTTP, and garbage (or plain HTTP) instead of TLS.
    let reply = raw_exchange(host.http, b"\x00\xff\x13garbage\r\n\r\n").await;
    assert!(reply.is_empty() || reply.starts_with(b"HTTP/1.1 400"));
    let reply = raw_exchange(host.https, b"GET /serverinfo HTTP/1.1\r\n\r\n").await;
    assert!(!reply.starts_with(b"HTTP/1.1 200"));
    let reply = raw_exchange(host.https, &[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00]).await;
    assert!(!reply.starts_with(b"HTTP"));

    // Still serving, on both ports.
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let info = c.https_get(&c.url("/serverinfo", &[])).await.unwrap();
    assert_eq!(info.field("PairStatus").as_deref(), Some("1"));
    // Malformed HTTPS queries of a paired client.
    for q in [
        c.url("/launch", &[("appid", "x")]),
        c.url("/launch", &[("appid", "1"), ("mode", "1280x720")]),
        c.url("/launch", &[("appid", "1"), ("mode", "1280x720x60"), ("rikey", "abc"), ("rikeyid", "1")]),
        c.url(
            "/launch",
            &[("appid", "1"), ("mode", "1280x720x60"), ("rikey", "00112233445566778899aabbccddeeff"), ("rikeyid", "x")],
        ),
    ] {
        assert_eq!(c.https_get(&q).await.unwrap().xml_status(), Some(400), "{q}");
    }
    assert_eq!(
        c.https_get(&c.url("/launch", &[("appid", "99"), ("mode", "1x1x1")])).await.unwrap().xml_status(),
        Some(404)
    );
    assert_eq!(c.https_get(&c.url("/appasset", &[("appid", "99")])).await.unwrap().xml_status(), Some(404));
    host.stop().await;
}

#[tokio::test]
async fn pending_pairings_and_ids_are_bounded() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| c.pairing.max_failures = 1000)).await;
    let mut c = host.client();
    let cert = hex::encode(c.identity.cert.pem.as_bytes());
    let salt = "00112233445566778899aabbccddeeff";
    for n in 0..wolf_rs::host::pairing::MAX_PENDING_PER_IP {
        c.uniqueid = format!("client-{n}");
        let r = c
            .http_get(&c.url("/pair", &[("phrase", "getservercert"), ("salt", salt), ("clientcert", &cert)]))
            .await
            .unwrap();
        assert_eq!(r.xml_status(), Some(200), "{}", r.text());
    }
    c.uniqueid = "one-too-many".into();
    let r = c
        .http_get(&c.url("/pair", &[("phrase", "getservercert"), ("salt", salt), ("clientcert", &cert)]))
        .await
        .unwrap();
    assert_eq!(r.xml_status(), Some(503), "{}", r.text());
    // Restarting a pairing under a known uniqueid is always allowed.
    c.uniqueid = "client-0".into();
    let r = c
        .http_get(&c.url("/pair", &[("phrase", "getservercert"), ("salt", salt), ("clientcert", &cert)]))
        .await
        .unwrap();
    assert_eq!(r.xml_status(), Some(200));
    c.uniqueid = "x".repeat(65);
    let r = c
        .http_get(&c.url("/pair", &[("phrase", "getservercert"), ("salt", salt), ("clientcert", &cert)]))
        .await
        .unwrap();
    assert_eq!(r.xml_status(), Some(400));
    host.stop().await;
}

#[tokio::test]
async fn pairings_abandoned_after_the_challenge_count_as_failures() {
    // moonlight-qt checks the host's hash after step 3 and, on a wrong PIN, calls /unpair instead of
    // sending step 4: those attempts must count towards the ban too.
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let c = host.client();
    let cert = hex::encode(c.identity.cert.pem.as_bytes());
    for _ in 0..5 {
        let r = c
            .http_get(&c.url(
                "/pair",
                &[("phrase", "getservercert"), ("salt", "00112233445566778899aabbccddeeff"), ("clientcert", &cert)],
            ))
            .await
            .unwrap();
        assert_eq!(r.xml_status(), Some(200));
        let r = c.http_get(&c.url("/pair", &[("clientchallenge", "00112233445566778899aabbccddeeff")])).await.unwrap();
        assert_eq!(r.xml_status(), Some(200));
        let r = c.http_get(&c.url("/unpair", &[])).await.unwrap();
        assert_eq!(r.xml_status(), Some(200));
    }
    let mut fresh = host.client();
    match fresh.pair(PIN).await.unwrap() {
        PairOutcome::Refused { status: 429, .. } => {}
        other => panic!("expected a ban after 5 abandoned pairings, got {other:?}"),
    }
    host.stop().await;
}

#[tokio::test]
async fn a_slow_request_body_is_cut_off() {
    let host = TestHost::start(ConfigBuilder::loopback().with(|c| c.http.request_timeout_ms = 300)).await;
    let mut s = TcpStream::connect(host.http).await.unwrap();
    s.write_all(
        b"POST /pin/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pin\"",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the host ends the request");
    assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&out));
    let c = host.client();
    assert_eq!(c.http_get(&c.url("/serverinfo", &[])).await.unwrap().xml_status(), Some(200));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_client_activity_is_stopped_after_the_idle_timeout() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| c.sessions.idle_timeout_ms = 1000)).await;
    let (c, _) = wolf_testkit::pair_and_launch(&host).await;
    let sessions = host.running().host.sessions.clone();
    let id = sessions.list()[0].id;
    // Activity (what control messages and UDP pings record) keeps it: 15 touches over 3 s.
    for _ in 0..15 {
        sessions.touch(id);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sessions.list().len(), 1, "an active session stays");
    // Silence ends it (bounded wait).
    let mut gone = false;
    for _ in 0..100 {
        if sessions.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the idle session was stopped");
    let info = c.https_get("/serverinfo").await.unwrap();
    assert_eq!(info.field("state").as_deref(), Some("SUNSHINE_SERVER_FREE"));
    host.stop().await;
}

/// A gateway pairs a fresh identity per user, several at once, all from its one address and all
/// with Moonlight's one `uniqueid`: the pairings take turns instead of overwriting each other, all
/// succeed, and none counts against the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pairings_with_one_uniqueid_from_one_address_all_pair() {
    const N: usize = 10;
    // A fixed PIN.
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let mut tasks = Vec::new();
    for _ in 0..N {
        let mut c = host.client();
        assert_eq!(c.uniqueid, wolf_client::MOONLIGHT_UNIQUEID);
        tasks.push(tokio::spawn(async move { c.pair(PIN).await.map_err(|e| e.to_string()) }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(PairOutcome::Paired));
    }
    assert_eq!(host.running().host.clients.list().len(), N);
    assert_eq!(host.running().host.pairing.banned_for(&Source::addr(host.http.ip())), None);
    host.stop().await;

    // PIN entry: one pairing waits for its PIN at a time, so `wolf-rs pair <PIN>` needs no secret.
    let host = TestHost::start(ConfigBuilder::loopback()).await;
    let mut tasks = Vec::new();
    for _ in 0..N {
        let mut c = host.client();
        tasks.push(tokio::spawn(async move { c.pair("2468").await.map_err(|e| e.to_string()) }));
    }
    let mut given = 0;
    for _ in 0..2000 {
        if given == N {
            break;
        }
        let (status, text) = api(&host, hyper::Method::POST, "/api/v1/pair/client", Some(r#"{"pin":"2468"}"#)).await;
        if status.is_success() {
            given += 1;
        } else {
            assert!(!text.contains("several"), "never more than one waits: {text}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(given, N, "every pairing waited for its PIN in turn");
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(PairOutcome::Paired));
    }
    assert_eq!(host.running().host.clients.list().len(), N);
    assert_eq!(host.running().host.pairing.banned_for(&Source::addr(host.http.ip())), None);
    host.stop().await;
}

/// First pairing steps from 16 addresses, 4 each, fill every pending-pairing slot and never go on:
/// a real client still pairs (the busiest source's oldest pairing makes room), and none of that
/// counts as a failure against anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_first_steps_from_many_addresses_does_not_block_pairing() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let mut flood = host.client();
    let cert = hex::encode(flood.identity.cert.pem.as_bytes());
    let salt = "00112233445566778899aabbccddeeff";
    for src in 2..18u8 {
        flood.local_ip = Some(std::net::IpAddr::from([127, 0, 0, src]));
        for n in 0..wolf_rs::host::pairing::MAX_PENDING_PER_IP {
            flood.uniqueid = format!("flood-{n}");
            let q = flood.url("/pair", &[("phrase", "getservercert"), ("salt", salt), ("clientcert", &cert)]);
            assert_eq!(flood.http_get(&q).await.unwrap().xml_status(), Some(200));
        }
    }
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired, "a real client pairs beside the flood");
    assert_eq!(host.running().host.pairing.banned_for(&Source::addr(c.http.ip())), None);
    host.stop().await;
}

/// On IPv6 failures are recorded and looked up under the same key (the address's /64): wrong PINs
/// from ::1 get it refused, the correct PIN after them too.
#[tokio::test]
async fn wrong_pins_over_ipv6_get_the_address_refused() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| c.bind_address = "::".into())).await;
    let v6 = |p: std::net::SocketAddr| std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p.port()));
    let client = || wolf_client::GameStreamClient::new(v6(host.http), v6(host.https), host.client().identity);
    for _ in 0..5 {
        assert_eq!(client().pair("1111").await.unwrap(), PairOutcome::NotPaired { step: "clientpairingsecret" });
    }
    match client().pair(PIN).await.unwrap() {
        PairOutcome::Refused { status: 429, .. } => {}
        other => panic!("expected ::1 to be refused, got {other:?}"),
    }
    host.stop().await;
}
