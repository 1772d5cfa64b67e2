//! Wolf's `/api/v1` over the host's real unix socket, with bodies shaped as Wolf's clients send
//! them: a pairing completed through the API, the paired client listed under Wolf's client id, its
//! launch listed and stopped, each seen in order on the event stream; error cases answer JSON with
//! Wolf's status codes; the OpenAPI document lists every route and each response has what its
//! schema requires.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use wolf_client::PairOutcome;
use wolf_rs::events::wolf_client_id;
use wolf_testkit::{ConfigBuilder, PIN, RIKEY_HEX, TestHost, until};

fn socket(host: &TestHost) -> PathBuf {
    host.dir.path().join("wolf.sock")
}

/// One request; (status, JSON body).
async fn call(sock: &Path, method: Method, path: &str, body: Option<String>) -> (StatusCode, Value) {
    let stream = UnixStream::connect(sock).await.expect("the API socket accepts");
    let (status, text) =
        wolf_rs::net::http1::request(stream, method, path, body, wolf_rs::error::ErrorKind::Admin, "api")
            .await
            .expect("the API answers");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
}

async fn get(sock: &Path, path: &str) -> (StatusCode, Value) {
    call(sock, Method::GET, path, None).await
}

async fn post(sock: &Path, path: &str, body: Value) -> (StatusCode, Value) {
    call(sock, Method::POST, path, Some(body.to_string())).await
}

/// A subscriber of `GET /api/v1/events`: (event name, data) as they arrive, keep-alives skipped.
async fn subscribe(sock: &Path) -> tokio::sync::mpsc::UnboundedReceiver<(String, Value)> {
    let mut stream = UnixStream::connect(sock).await.unwrap();
    stream.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let status = lines.next_line().await.unwrap().unwrap();
    assert!(status.contains("200"), "{status}");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut name = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let _ = tx.send((std::mem::take(&mut name), serde_json::from_str(d).unwrap()));
            }
        }
    });
    rx
}

async fn next(events: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Value)>) -> (String, Value) {
    tokio::time::timeout(Duration::from_secs(20), events.recv()).await.expect("an event in time").expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pairing_a_launch_and_a_stop_through_wolfs_routes_and_events() {
    // No fixed PIN: the pairing waits for one, which comes through the API.
    let host = TestHost::start(ConfigBuilder::loopback()).await;
    let sock = socket(&host);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only this user");
    let mut events = subscribe(&sock).await;

    let mut c = host.client();
    let pairing = tokio::spawn(async move {
        let outcome = c.pair(PIN).await;
        (c, outcome)
    });
    let mut pending = Value::Null;
    for _ in 0..400 {
        pending = get(&sock, "/api/v1/pair/pending").await.1;
        if pending["requests"].as_array().is_some_and(|r| r.len() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending["success"], true);
    let request = &pending["requests"][0];
    assert_eq!(request["client_ip"], "127.0.0.1");
    let secret = request["pair_secret"].as_str().unwrap().to_owned();
    let (name, signal) = next(&mut events).await;
    assert_eq!(name, "wolf::core::events::PairSignal");
    assert_eq!(signal["client_ip"], "127.0.0.1");

    // Wrong shapes first: Wolf answers them 500 with an error, and the pairing still waits.
    let (s, e) = post(&sock, "/api/v1/pair/client", json!({ "pair_secret": secret, "pin": "12a4" })).await;
    assert_eq!((s, &e["success"]), (StatusCode::INTERNAL_SERVER_ERROR, &json!(false)), "{e}");
    let (s, e) = post(&sock, "/api/v1/pair/client", json!({ "pair_secret": "0000", "pin": PIN })).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{e}");
    let (s, e) = call(&sock, Method::POST, "/api/v1/pair/client", Some("{\"pair_secret\":".into())).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(e["error"].as_str().unwrap().starts_with("Invalid request format"), "{e}");
    let (s, e) = post(&sock, "/api/v1/pair/client", json!({ "pair_secret": secret, "pin": PIN })).await;
    assert_eq!((s, e), (StatusCode::OK, json!({ "success": true })));
    let (c, outcome) = pairing.await.unwrap();
    assert_eq!(outcome.unwrap(), PairOutcome::Paired);
    let client_id = wolf_client_id(&c.identity.cert.pem);
    let (name, paired) = next(&mut events).await;
    assert_eq!((name.as_str(), &paired["client_id"]), ("wolf_rs::events::ClientPaired", &json!(client_id)));

    let (s, clients) = get(&sock, "/api/v1/clients").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(clients["clients"].as_array().unwrap().len(), 1, "{clients}");
    let listed = &clients["clients"][0];
    assert_eq!(listed["client_id"], client_id.as_str(), "Wolf's id for the same certificate");
    assert_eq!(listed["settings"]["motion_controller_override"], "AUTO");
    assert_eq!(listed["fingerprint"], c.identity.cert.fingerprint_hex());

    // A launch is listed and announced; a stop by Wolf's session id ends it.
    let r = c.https_get(&c.launch_url("1", "1280x720x60", RIKEY_HEX)).await.unwrap();
    assert_eq!(r.field("gamesession").as_deref(), Some("1"), "{}", r.text());
    let (name, started) = next(&mut events).await;
    assert_eq!(name, "wolf::core::events::StreamSession");
    assert_eq!((&started["client_id"], &started["video_width"]), (&json!(client_id), &json!(1280)));
    let (_, sessions) = get(&sock, "/api/v1/sessions").await;
    let listed = &sessions["sessions"][0];
    assert_eq!(
        (&listed["client_id"], &listed["app_id"], &listed["video_height"], &listed["video_refresh_rate"]),
        (&json!(client_id), &json!("1"), &json!(720), &json!(60)),
    );
    assert_eq!(listed["aes_key"], "", "session keys are not disclosed");
    let (s, e) = post(&sock, "/api/v1/sessions/stop", json!({ "session_id": "123" })).await;
    assert_eq!((s, &e["error"]), (StatusCode::INTERNAL_SERVER_ERROR, &json!("Invalid session_id")));
    let (s, _) = post(&sock, "/api/v1/sessions/stop", json!({ "session_id": client_id })).await;
    assert_eq!(s, StatusCode::OK);
    let (name, stopped) = next(&mut events).await;
    assert_eq!((name.as_str(), &stopped["session_id"]), ("wolf::core::events::StopStreamEvent", &json!(client_id)));
    let (name, ended) = next(&mut events).await;
    assert_eq!((name.as_str(), &ended["reason"]), ("wolf_rs::events::SessionEnded", &json!("cancelled")));
    until("the session is gone", || host.running().host.sessions.is_empty()).await;

    let settings = json!({ "client_id": client_id, "app_state_folder": null, "settings": { "run_uid": 1001 } });
    assert_eq!(post(&sock, "/api/v1/clients/settings", settings).await.0, StatusCode::OK);
    // Unpair: malformed 400, unknown 404 (Wolf's codes on this route), then the client goes.
    let (s, _) = call(&sock, Method::POST, "/api/v1/unpair/client", Some("[]".into())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, e) = post(&sock, "/api/v1/unpair/client", json!({ "client_id": "1" })).await;
    assert_eq!((s, &e["error"]), (StatusCode::NOT_FOUND, &json!("Client not found")));
    let (s, _) = post(&sock, "/api/v1/unpair/client", json!({ "client_id": client_id })).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(get(&sock, "/api/v1/clients").await.1["clients"], json!([]));
    let (name, _) = next(&mut events).await;
    assert_eq!(name, "wolf_rs::events::ClientUnpaired");
    let r = c.https_get("/serverinfo").await;
    assert!(r.is_err() || r.unwrap().field("PairStatus").as_deref() != Some("1"), "unpaired");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_the_socket_keeps_serving() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let sock = socket(&host);
    let (s, e) = get(&sock, "/api/v1/nothing").await;
    assert_eq!((s, &e["success"]), (StatusCode::NOT_FOUND, &json!(false)));
    let (s, _) = get(&sock, "/elsewhere").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e) = call(&sock, Method::POST, "/api/v1/apps", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{e}");
    // A 405 says which methods the route has.
    let mut raw = UnixStream::connect(&sock).await.unwrap();
    raw.write_all(b"DELETE /api/v1/lobbies/create HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    let head = answer.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 405"), "{answer}");
    assert!(head.lines().any(|l| l == "allow: post"), "{answer}");
    // Wolf's routes that are not served say why.
    let (s, e) = post(&sock, "/api/v1/sessions/input", json!({ "session_id": "1", "input_packet_hex": "00" })).await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
    assert!(e["error"].as_str().unwrap().contains("authenticated control channel"), "{e}");
    assert_eq!(get(&sock, "/api/v1/profiles").await.1, json!({ "success": true, "profiles": [] }));
    let (s, _) = post(&sock, "/api/v1/clients/settings", json!({ "client_id": "5", "settings": null })).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&sock, Method::POST, "/api/v1/clients/settings", Some("{".into())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A body over the limit: answered 413 (the host may close before reading it all, so the
    // writer ignores a broken pipe and reads the answer).
    let big = format!("{{\"session_id\":\"{}\"}}", "1".repeat(2 << 20));
    let mut over = UnixStream::connect(&sock).await.unwrap();
    let head = format!("POST /api/v1/sessions/stop HTTP/1.0\r\nContent-Length: {}\r\n\r\n", big.len());
    let _ = over.write_all(head.as_bytes()).await;
    let _ = over.write_all(big.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), over.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 413") && answer.contains("larger than"), "{answer}");
    let (s, e) = post(&sock, "/api/v1/sessions/stop", json!({ "session_id": [1] })).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{e}");
    // A connection that sends half a request and stops holds nothing up.
    let mut stalled = UnixStream::connect(&sock).await.unwrap();
    stalled.write_all(b"POST /api/v1/sessions/stop HTTP/1.1\r\nContent-Length: 100\r\n\r\n{").await.unwrap();
    let (s, apps) = get(&sock, "/api/v1/apps").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(apps["apps"][0]["title"], "Test pattern");
    assert_eq!(apps["apps"][0]["id"], "1");
    assert_eq!(apps["apps"][0]["runner"]["type"], "process");
    // HTTP/1.0, as Wolf's clients speak it: one answer, then the connection closes.
    let mut old = UnixStream::connect(&sock).await.unwrap();
    old.write_all(b"GET /api/v1/clients HTTP/1.0\r\n\r\n").await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), old.read_to_string(&mut text)).await.unwrap().unwrap();
    assert!(text.starts_with("HTTP/1.0 200") && text.ends_with("{\"success\":true,\"clients\":[]}"), "{text}");
    drop(stalled);
    host.stop().await;
}

/// Every `$ref` in `v` names a component of `doc`.
fn refs_resolve(doc: &Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
                assert!(doc["components"]["schemas"][name].is_object(), "{r} resolves");
            }
            m.values().for_each(|x| refs_resolve(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| refs_resolve(doc, x)),
        _ => {}
    }
}

/// What is wrong with `body` by the schema `reference` names in `doc` (JSON Schema 2020-12, as
/// OpenAPI 3.1's).
fn problems(doc: &Value, reference: &str, body: &Value) -> Vec<String> {
    let schema = json!({ "$ref": reference, "components": doc["components"] });
    let validator = jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{reference}: {e}"));
    validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

fn validates(doc: &Value, reference: &str, body: &Value) {
    let errors = problems(doc, reference, body);
    assert!(errors.is_empty(), "{reference}: {errors:?}\n{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_names_every_route_and_responses_validate_against_it() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let sock = socket(&host);
    let (s, doc) = get(&sock, "/api/v1/openapi-schema").await;
    assert_eq!(s, StatusCode::OK);
    // The shape of an OpenAPI 3.1 document: its version, info, an operation with responses per
    // route, every reference resolving.
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    refs_resolve(&doc, &doc);
    let (mut c, _) = wolf_testkit::pair_and_launch(&host).await;
    let mut checked = 0;
    for (method, route) in wolf_rs::api::openapi::ROUTES {
        let path = format!("/api/v1{route}");
        let op = &doc["paths"][&path][method.to_lowercase()];
        assert!(op["responses"].is_object(), "{method} {path} is in the document with its responses");
        if method != "GET" || route == "/events" {
            continue;
        }
        let (s, body) = get(&sock, &path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        if let Some(reference) = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].as_str() {
            validates(&doc, reference, &body);
            checked += 1;
        }
    }
    assert!(checked >= 5, "the listing routes' answers were checked: {checked}");
    let wrong = json!({ "success": true, "clients": [{ "client_id": 5 }] });
    assert!(!problems(&doc, "#/components/schemas/ClientsResponse", &wrong).is_empty(), "the check can fail");
    // Errors and the answers of POST routes validate too.
    let (_, e) = post(&sock, "/api/v1/sessions/stop", json!({ "session_id": "nope" })).await;
    validates(&doc, "#/components/schemas/GenericError", &e);
    let (_, ok) = post(&sock, "/api/v1/apps/delete", json!({ "id": "nope" })).await;
    validates(&doc, "#/components/schemas/GenericSuccess", &ok);
    c.https = host.https;
    // Sixteen subscribers at most: the seventeenth closes the first.
    let mut first = UnixStream::connect(&sock).await.unwrap();
    first.write_all(b"GET /api/v1/events HTTP/1.0\r\n\r\n").await.unwrap();
    // Subscribed once its answer starts: only then is it the oldest.
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(first.read(&mut byte).await.unwrap(), 1, "the first subscriber's answer");
        head.push(byte[0]);
    }
    let mut held = Vec::new();
    for _ in 0..wolf_rs::api::MAX_SUBSCRIBERS {
        held.push(subscribe(&sock).await);
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), first.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the oldest subscriber was closed");
    host.stop().await;
}

/// The number `/applist` gives the app titled `title`.
async fn applist_id(c: &wolf_client::GameStreamClient, title: &str) -> Option<u32> {
    let text = c.https_get("/applist").await.unwrap().text();
    let after = text.split(&format!("<AppTitle>{title}</AppTitle>")).nth(1)?;
    after.split("<ID>").nth(1)?.split("</ID>").next()?.parse().ok()
}

/// An app as Wolf's clients add it (every field Wolf requires, its pipelines included).
fn wolf_app(id: &str, title: &str, runner: Value) -> Value {
    json!({
        "title": title, "id": id, "support_hdr": false, "icon_png_path": "/nowhere/icon.png",
        "h264_gst_pipeline": "videotestsrc ! x264enc", "hevc_gst_pipeline": "", "av1_gst_pipeline": "",
        "render_node": "/dev/dri/renderD128", "opus_gst_pipeline": "",
        "start_virtual_compositor": false, "start_audio_server": false, "runner": runner,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_added_through_the_api_launches_survives_a_restart_and_goes_when_deleted() {
    let mut host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let sock = socket(&host);
    let mut events = subscribe(&sock).await;
    let sleeper = json!({ "type": "process", "run_cmd": "sh -c 'exec sleep 600'" });
    let (s, e) = post(&sock, "/api/v1/apps/add", wolf_app("b7c1-added", "Added", sleeper.clone())).await;
    assert_eq!((s, e), (StatusCode::OK, json!({ "success": true })));
    let (name, added) = next(&mut events).await;
    assert_eq!((name.as_str(), &added["id"]), ("wolf_rs::events::AppAdded", &json!("b7c1-added")));
    // Refused, each with why: an empty image, an env entry without '=', config.toml's id, no title.
    let docker = |image: &str, env: &str| json!({ "type": "docker", "name": "x", "image": image, "mounts": [], "env": [env], "devices": [], "ports": [] });
    for (body, why) in [
        (wolf_app("x", "X", docker("", "A=1")), "runner.image is empty"),
        (wolf_app("x", "X", docker("busybox", "NOEQUALS")), "is not NAME=VALUE"),
        (wolf_app("1", "Clash", sleeper.clone()), "comes from config.toml"),
        (json!({ "id": "x" }), "Invalid request format"),
    ] {
        let (s, e) = post(&sock, "/api/v1/apps/add", body).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{e}");
        assert!(e["error"].as_str().unwrap().contains(why), "{why}: {e}");
    }
    let (_, apps) = get(&sock, "/api/v1/apps").await;
    let listed: Vec<(&str, &str)> = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap(), a["title"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("1", "Test pattern"), ("b7c1-added", "Added")]);
    assert_eq!(apps["apps"][1]["runner"]["run_cmd"], "sh -c 'exec sleep 600'");

    // Moonlight sees it and launches it: its process runs.
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let number = applist_id(&c, "Added").await.expect("in /applist");
    let r = c.https_get(&c.launch_url(&number.to_string(), "1280x720x60", RIKEY_HEX)).await.unwrap();
    assert_eq!(r.field("gamesession").as_deref(), Some("1"), "{}", r.text());
    let session = host.running().host.sessions.list().remove(0);
    assert!(matches!(session.runner, wolf_rs::runners::RunnerHandle::Process { .. }), "{:?}", session.runner);
    assert_eq!(c.https_get("/cancel").await.unwrap().field("cancel").as_deref(), Some("1"));
    until("the session is gone", || host.running().host.sessions.is_empty()).await;

    // A restart keeps it, under the same number.
    host.restart().await;
    c.https = host.https;
    assert_eq!(applist_id(&c, "Added").await, Some(number));
    let sock = socket(&host);
    assert_eq!(get(&sock, "/api/v1/apps").await.1["apps"][1]["id"], "b7c1-added");
    // Deleted, it is gone; deleting it again answers success, as Wolf does; config.toml's stay.
    assert_eq!(post(&sock, "/api/v1/apps/delete", json!({ "id": "b7c1-added" })).await.0, StatusCode::OK);
    assert_eq!(applist_id(&c, "Added").await, None);
    assert_eq!(post(&sock, "/api/v1/apps/delete", json!({ "id": "b7c1-added" })).await.0, StatusCode::OK);
    let (s, e) = post(&sock, "/api/v1/apps/delete", json!({ "id": 1 })).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{e}");
    host.restart().await;
    c.https = host.https;
    assert_eq!(applist_id(&c, "Added").await, None, "still gone after a restart");
    assert_eq!(applist_id(&c, "Test pattern").await, Some(1));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_added_through_the_api_streams_to_its_client() {
    use wolf_client::video::{VideoOpener, announce_sdp};
    use wolf_protocol::rtsp::SS_ENC_CONTROL_V2;
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let sock = socket(&host);
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let client_id = wolf_client_id(&c.identity.cert.pem);
    let add = |client: &str, app: &str, key: &str| {
        json!({
            "client_ip": "127.0.0.1", "aes_key": key, "aes_iv": "1", "rtsp_fake_ip": "10.1.2.3",
            "video_width": 1280, "video_height": 720, "video_refresh_rate": 30, "audio_channel_count": 2,
            "app_id": app, "client_id": client, "client_settings": null,
        })
    };
    for (body, why) in [
        (add("42", "1", RIKEY_HEX), "Invalid client_id"),
        (add(&client_id, "99", RIKEY_HEX), "Invalid app_id"),
        (add(&client_id, "1", "abc"), "aes_key"),
    ] {
        let (s, e) = post(&sock, "/api/v1/sessions/add", body).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e["error"].as_str().unwrap().contains(why), "{why}: {e}");
    }
    let (s, r) = post(&sock, "/api/v1/sessions/add", add(&client_id, "1", RIKEY_HEX)).await;
    assert_eq!((s, r), (StatusCode::OK, json!({ "success": true, "session_id": client_id })));
    let (s, e) = post(&sock, "/api/v1/sessions/add", add(&client_id, "1", RIKEY_HEX)).await;
    assert!(s == StatusCode::INTERNAL_SERVER_ERROR && e["error"].as_str().unwrap().contains("already running"), "{e}");
    let (_, listed) = get(&sock, "/api/v1/sessions").await;
    assert_eq!(
        (&listed["sessions"][0]["client_id"], &listed["sessions"][0]["video_refresh_rate"]),
        (&json!(client_id), &json!(30))
    );

    // The client streams it as after a launch: plain RTSP on the shared port, under its key.
    let url = format!("rtsp://127.0.0.1:{}", host.running().rtsp_port);
    let rtsp = wolf_client::RtspSession::from_url(&url, wolf_testkit::RIKEY).unwrap();
    let played = wolf_testkit::session::rtsp_to_play(&rtsp, &announce_sdp(1280, 720, 30, 3000, SS_ENC_CONTROL_V2))
        .await
        .expect("RTSP to PLAY");
    let opener = VideoOpener::new(SS_ENC_CONTROL_V2, &wolf_testkit::RIKEY).unwrap();
    let frames = wolf_testkit::session::receive_video(
        [127, 0, 0, 1].into(),
        played.video,
        &played.ping,
        &opener,
        3,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(frames.len() >= 3, "video arrives");
    let (s, _) = post(&sock, "/api/v1/sessions/stop", json!({ "session_id": client_id })).await;
    assert_eq!(s, StatusCode::OK);
    until("the session is gone", || host.running().host.sessions.is_empty()).await;
    drop(c);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_and_lobbies_commands_work_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let _owned = wolf_testkit::KillOwned::new(dir.path());
    let mut host = wolf_testkit::host_process::spawn(dir.path(), ConfigBuilder::loopback().pin(PIN));
    host.health_until("healthy").await;
    let run = |host: &wolf_testkit::host_process::Proc, args: &[&str]| {
        let o = host.cli(args);
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
    };
    let (code, out) = run(&host, &["apps", "add", "--title", "Tool", "--id", "tool-1", "--command", "sh -c 'sleep 1'"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&host, &["apps", "list"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("tool-1") && l.contains("Tool") && l.contains("process: sh -c")),
        "{out}"
    );
    let (code, out) = run(&host, &["apps", "remove", "1"]);
    assert_eq!(code, Some(1), "config.toml's app stays: {out}");
    assert!(out.contains("comes from config.toml"), "{out}");
    assert_eq!(run(&host, &["apps", "remove", "tool-1"]).0, Some(0));
    assert!(!run(&host, &["apps", "list"]).1.contains("tool-1"));

    let create = ["lobbies", "create", "--name", "Shared", "--command", "sh -c 'exec sleep 600'"];
    let (code, out) = run(&host, &[&create[..], &["--mode", "640x360x30", "--pin", "12"]].concat());
    assert_eq!(code, Some(0), "{out}");
    let id = out.trim().to_owned();
    let (_, out) = run(&host, &["lobbies", "list"]);
    assert!(out.lines().any(|l| l.starts_with(&id) && l.contains("Shared") && l.contains("pin")), "{out}");
    let (code, out) = run(&host, &["lobbies", "stop", &id]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Invalid PIN"), "{out}");
    assert_eq!(run(&host, &["lobbies", "stop", &id, "--pin", "12"]).0, Some(0));
    assert!(!run(&host, &["lobbies", "list"]).1.contains(&id));
    host.kill9();
    let (code, out) = run(&host, &["apps", "list"]);
    assert_eq!(code, Some(4), "not running: {out}");
}

/// One raw HTTP/1.0 request on TCP: the whole answer.
async fn tcp_get(addr: std::net::SocketAddr, path: &str, auth: Option<&str>) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.0\r\n{auth}\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text)).await.unwrap().unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_may_share_the_socket_and_tcp_needs_the_token() {
    let gid = unsafe { libc::getgid() };
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| {
        c.api.group = gid.to_string();
        c.api.tcp = "0".into();
    }))
    .await;
    let meta = std::fs::metadata(socket(&host)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
    let addr = host.running().api_tcp.expect("the API listens on TCP");
    assert!(addr.ip().is_loopback(), "a bare port is loopback's");
    let token = std::fs::read_to_string(host.dir.path().join(wolf_rs::api::TOKEN_FILE)).unwrap();
    let mode = std::fs::metadata(host.dir.path().join(wolf_rs::api::TOKEN_FILE)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    for auth in [None, Some("Bearer nope".to_owned()), Some(format!("Basic {token}"))] {
        let answer = tcp_get(addr, "/api/v1/apps", auth.as_deref()).await;
        assert!(answer.starts_with("HTTP/1.0 401"), "{auth:?}: {answer}");
    }
    let answer = tcp_get(addr, "/api/v1/apps", Some(&format!("Bearer {token}"))).await;
    assert!(answer.starts_with("HTTP/1.0 200") && answer.contains("Test pattern"), "{answer}");
    // The socket needs none.
    assert_eq!(get(&socket(&host), "/api/v1/apps").await.0, StatusCode::OK);
    host.stop().await;

    // A malformed address is a config error naming the key.
    let issues = wolf_rs::config::Config::parse("[api]\ntcp = \"here\"\n", &Default::default()).unwrap_err();
    assert!(issues.iter().any(|i| i.key == "api.tcp"), "{issues:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_costs_a_bounded_buffer_and_loses_the_oldest() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let sock = socket(&host);
    // Subscribed, never read: the socket's buffers fill, then the host's bounded queue.
    let mut stalled = UnixStream::connect(&sock).await.unwrap();
    stalled.write_all(b"GET /api/v1/events HTTP/1.0\r\n\r\n").await.unwrap();
    let mut reader = subscribe(&sock).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = host.running().host.events.clone();
    let title = "x".repeat(200);
    let metrics = host.running().host.metrics.clone();
    let dropped = || metrics.api_events_dropped.with_label_values(&["slow_subscriber"]).get();
    // Far more than any buffer holds, in bursts (the reader keeps up between them).
    for burst in 0..200 {
        for i in 0..200 {
            events.publish(wolf_rs::events::Event::AppAdded { id: format!("{burst}-{i}"), title: title.clone() });
        }
        while reader.try_recv().is_ok() {}
        tokio::task::yield_now().await;
        if dropped() > 0 && burst > 20 {
            break;
        }
    }
    until("the stalled subscriber's losses are counted", || dropped() > 0).await;
    // The host still answers, and a reader that keeps up still gets what comes next.
    assert_eq!(get(&sock, "/api/v1/apps").await.0, StatusCode::OK);
    events.publish(wolf_rs::events::Event::StopLobbyEvent { lobby_id: "last".into() });
    loop {
        let (name, data) = next(&mut reader).await;
        if name == "wolf::core::events::StopLobbyEvent" {
            assert_eq!(data["lobby_id"], "last");
            break;
        }
    }
    drop(stalled);
    host.stop().await;
}
