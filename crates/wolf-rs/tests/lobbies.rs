//! Lobbies through Wolf's API, with real displays: a client streams its own desktop (red), a lobby
//! is created (its app paints its display blue), the client's session joins it and the same
//! stream, without reconnecting, shows blue with its frame numbers going on; it leaves and sees
//! red again. A PIN is checked, a restart adopts the lobby with its member, and a stopped lobby's
//! display goes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use wolf_client::video::{VideoOpener, announce_sdp};
use wolf_client::{GameStreamClient, PairOutcome};
use wolf_protocol::rtsp::SS_ENC_CONTROL_V2;
use wolf_rs::events::wolf_client_id;
use wolf_testkit::config::desktop_app;
use wolf_testkit::media::{Picture, h264_last_picture};
use wolf_testkit::session::{from_first_idr, receive_video_on, rtsp_to_play};
use wolf_testkit::{ConfigBuilder, PIN, RIKEY, TestHost, launch_rtsp, until};

const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const MODE: (u32, u32) = (640, 360);

async fn call(sock: &Path, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let stream = tokio::net::UnixStream::connect(sock).await.expect("the API socket");
    let (status, text) = wolf_rs::net::http1::request(
        stream,
        method,
        path,
        body.map(|b| b.to_string()),
        wolf_rs::error::ErrorKind::Admin,
        "api",
    )
    .await
    .expect("the API answers");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")))
}

fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) < 40)
}

/// The stream the client keeps: one socket, pinging the video port, every frame it got.
struct Watcher {
    sock: tokio::net::UdpSocket,
    to: std::net::SocketAddr,
    ping: String,
    opener: VideoOpener,
    frames: std::collections::BTreeMap<u32, (u8, Vec<u8>)>,
}

impl Watcher {
    /// Frames until the last picture is `colour` (bounded); the frame numbers this call got. The
    /// decoder gets every frame from the first IDR on, as a client's does.
    async fn until_colour(&mut self, colour: [u8; 3]) -> Vec<u32> {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let got = receive_video_on(&self.sock, self.to, &self.ping, &self.opener, 12, Duration::from_secs(60))
                .await
                .expect("video keeps coming");
            seen.extend(got.keys().copied());
            self.frames.extend(got);
            let decodable = from_first_idr(&self.frames);
            let picture: Result<Picture, String> =
                tokio::task::spawn_blocking(move || h264_last_picture(&decodable)).await.unwrap();
            // A corner: the pointer sits in the middle.
            if picture.is_ok_and(|p| near(p.pixel(8, 8), colour)) {
                return seen;
            }
        }
        panic!("the stream never showed {colour:?}");
    }
}

fn socket(host: &TestHost) -> PathBuf {
    host.dir.path().join("wolf.sock")
}

fn lobby_request(pin: Option<Vec<u8>>) -> Value {
    json!({
        "profile_id": "agent-1", "name": "Agent desktop", "multi_user": true, "pin": pin,
        "stop_when_everyone_leaves": false,
        "video_settings": { "width": MODE.0, "height": MODE.1, "refresh_rate": 30,
            "wayland_render_node": "software", "runner_render_node": "software", "video_producer_buffer_caps": "video/x-raw" },
        "audio_settings": { "channel_count": 2 }, "client_settings": null, "runner_state_folder": "agent-1",
        "runner": { "type": "process", "run_cmd": "sh -c \"xsetroot -solid '#0000ff'; exec sleep 600\"" },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_joins_a_lobby_and_sees_it_then_its_own_desktop_again() {
    let mut host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| {
        c.apps = vec![desktop_app(2, "Own desktop", "xsetroot -solid '#ff0000'; exec sleep 600")];
    }))
    .await;
    let sock = socket(&host);
    let mut c: GameStreamClient = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let rtsp = launch_rtsp(&c, &c.launch_url("2", &format!("{}x{}x30", MODE.0, MODE.1), wolf_testkit::RIKEY_HEX)).await;
    let played =
        rtsp_to_play(&rtsp, &announce_sdp(MODE.0, MODE.1, 30, 3000, SS_ENC_CONTROL_V2)).await.expect("RTSP to PLAY");
    let mut watcher = Watcher {
        sock: tokio::net::UdpSocket::bind(("127.0.0.1", 0)).await.unwrap(),
        to: played.video,
        ping: played.ping.clone(),
        opener: VideoOpener::new(SS_ENC_CONTROL_V2, &RIKEY).unwrap(),
        frames: Default::default(),
    };
    let own = watcher.until_colour(RED).await;

    // A lobby with a PIN: listed without it.
    let (s, created) =
        call(&sock, Method::POST, "/api/v1/lobbies/create", Some(lobby_request(Some(vec![1, 2, 3, 4])))).await;
    assert_eq!(s, StatusCode::OK, "{created}");
    let lobby_id = created["lobby_id"].as_str().unwrap().to_owned();
    let (_, listed) = call(&sock, Method::GET, "/api/v1/lobbies", None).await;
    let l = &listed["lobbies"][0];
    assert_eq!((&l["id"], &l["name"], &l["pin_required"]), (&json!(lobby_id), &json!("Agent desktop"), &json!(true)));
    assert!(l.get("pin").is_none(), "the PIN is not shown");

    // Join: a wrong PIN is refused; with the right one the same stream shows the lobby.
    let session_id = wolf_client_id(&c.identity.cert.pem);
    let join = |pin: Value| json!({ "lobby_id": lobby_id, "moonlight_session_id": session_id, "pin": pin });
    let (s, e) = call(&sock, Method::POST, "/api/v1/lobbies/join", Some(join(json!([4, 3, 2, 1])))).await;
    assert_eq!((s, &e["error"]), (StatusCode::INTERNAL_SERVER_ERROR, &json!("Invalid PIN")));
    let (s, e) = call(&sock, Method::POST, "/api/v1/lobbies/join", Some(join(json!([1, 2, 3, 4])))).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let in_lobby = watcher.until_colour(BLUE).await;
    let before = own.iter().max().unwrap();
    assert!(in_lobby.iter().filter(|i| *i > before).count() >= 12, "frame numbers go on: {before} then {in_lobby:?}");
    let (_, listed) = call(&sock, Method::GET, "/api/v1/lobbies", None).await;
    let number = host.running().host.sessions.list()[0].id;
    assert_eq!(listed["lobbies"][0]["connected_sessions"], json!([number.to_string()]));

    // Leave: its own desktop again, on the same stream; join again.
    let leave = json!({ "lobby_id": lobby_id, "moonlight_session_id": session_id });
    assert_eq!(call(&sock, Method::POST, "/api/v1/lobbies/leave", Some(leave)).await.0, StatusCode::OK);
    watcher.until_colour(RED).await;
    assert_eq!(
        call(&sock, Method::POST, "/api/v1/lobbies/join", Some(join(json!([1, 2, 3, 4])))).await.0,
        StatusCode::OK
    );
    watcher.until_colour(BLUE).await;

    // A restart keeps the lobby, its app and its member.
    host.restart().await;
    let sock = socket(&host);
    let (_, listed) = call(&sock, Method::GET, "/api/v1/lobbies", None).await;
    assert_eq!(listed["lobbies"][0]["id"], json!(lobby_id), "adopted: {listed}");
    assert_eq!(listed["lobbies"][0]["connected_sessions"], json!([number.to_string()]));
    c.https = host.https;

    // Leave after the restart (by wolf-rs's session number).
    let (s, _) = call(
        &sock,
        Method::POST,
        "/api/v1/lobbies/leave",
        Some(json!({ "lobby_id": lobby_id, "moonlight_session_id": number })),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(host.running().host.sessions.list()[0].lobby.is_none());

    // Stop: a wrong PIN is refused; then the lobby and its display are gone.
    let lobby = host.running().host.lobbies.get(&lobby_id).unwrap();
    let display_pid = lobby.display.as_ref().unwrap().pid;
    let (s, e) = call(&sock, Method::POST, "/api/v1/lobbies/stop", Some(json!({ "lobby_id": lobby_id }))).await;
    assert_eq!((s, &e["error"]), (StatusCode::INTERNAL_SERVER_ERROR, &json!("Invalid PIN")));
    let stop = json!({ "lobby_id": lobby_id, "pin": [1, 2, 3, 4] });
    assert_eq!(call(&sock, Method::POST, "/api/v1/lobbies/stop", Some(stop)).await.0, StatusCode::OK);
    assert_eq!(call(&sock, Method::GET, "/api/v1/lobbies", None).await.1["lobbies"], json!([]));
    until("the lobby's display is gone", || wolf_rs::runners::process::start_time(display_pid).is_none()).await;
    let (s, e) = call(&sock, Method::POST, "/api/v1/lobbies/join", Some(join(Value::Null))).await;
    assert_eq!((s, &e["error"]), (StatusCode::INTERNAL_SERVER_ERROR, &json!("Invalid lobby ID")));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_lobby_that_everyone_left_stops_and_one_whose_app_exits_too() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let sock = socket(&host);
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let r = c.https_get(&c.launch_url("1", "1280x720x60", wolf_testkit::RIKEY_HEX)).await.unwrap();
    assert_eq!(r.field("gamesession").as_deref(), Some("1"));
    let mut body = lobby_request(None);
    body["stop_when_everyone_leaves"] = json!(true);
    body["multi_user"] = json!(false);
    let (_, created) = call(&sock, Method::POST, "/api/v1/lobbies/create", Some(body)).await;
    let lobby_id = created["lobby_id"].as_str().unwrap().to_owned();
    let number = host.running().host.sessions.list()[0].id;
    let join = json!({ "lobby_id": lobby_id, "moonlight_session_id": number, "pin": null });
    assert_eq!(call(&sock, Method::POST, "/api/v1/lobbies/join", Some(join)).await.0, StatusCode::OK);
    // The session ends (cancel): it leaves, the lobby is empty and stops.
    assert_eq!(c.https_get("/cancel").await.unwrap().field("cancel").as_deref(), Some("1"));
    until("the empty lobby stops", || host.running().host.lobbies.list().is_empty()).await;

    // A lobby whose app exits stops.
    let mut body = lobby_request(None);
    body["runner"] = json!({ "type": "process", "run_cmd": "sh -c 'sleep 1'" });
    let (s, _) = call(&sock, Method::POST, "/api/v1/lobbies/create", Some(body)).await;
    assert_eq!(s, StatusCode::OK);
    until("a lobby whose app exited stops", || host.running().host.lobbies.list().is_empty()).await;
    // Malformed: an impossible mode, a runner without a command.
    let mut body = lobby_request(None);
    body["video_settings"]["width"] = json!(0);
    let (s, e) = call(&sock, Method::POST, "/api/v1/lobbies/create", Some(body)).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{e}");
    let mut body = lobby_request(None);
    body["runner"] = json!({ "type": "process", "run_cmd": "" });
    let (s, e) = call(&sock, Method::POST, "/api/v1/lobbies/create", Some(body)).await;
    assert!(s == StatusCode::INTERNAL_SERVER_ERROR && e["error"].as_str().unwrap().contains("run_cmd"), "{e}");
    c.https = host.https;
    host.stop().await;
}

/// `sessions/configure` as a web gateway uses it: the next launch with the configured `uniqueid`
/// streams the lobby from its first frame (no PIN asked: the platform chose it); the entry is used
/// once, and a request with an empty field is refused with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_launch_goes_straight_into_its_lobby() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c| {
        c.apps = vec![desktop_app(2, "Own desktop", "xsetroot -solid '#ff0000'; exec sleep 600")];
    }))
    .await;
    let sock = socket(&host);
    let (s, created) =
        call(&sock, Method::POST, "/api/v1/lobbies/create", Some(lobby_request(Some(vec![1, 2, 3, 4])))).await;
    assert_eq!(s, StatusCode::OK, "{created}");
    let lobby_id = created["lobby_id"].as_str().unwrap().to_owned();
    for (body, why) in [
        (json!({ "client_unique_id": "", "immediate_lobby_id": lobby_id }), "client_unique_id is required"),
        (json!({ "client_unique_id": "gw-7", "immediate_lobby_id": "" }), "immediate_lobby_id is required"),
    ] {
        let (s, e) = call(&sock, Method::POST, "/api/v1/sessions/configure", Some(body)).await;
        assert_eq!((s, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some(why)));
    }
    let configure = json!({ "client_unique_id": "gw-7", "immediate_lobby_id": lobby_id });
    let (s, e) = call(&sock, Method::POST, "/api/v1/sessions/configure", Some(configure)).await;
    assert_eq!((s, &e["success"]), (StatusCode::OK, &json!(true)), "{e}");

    let mut c: GameStreamClient = host.client();
    c.uniqueid = "gw-7".into();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let rtsp = launch_rtsp(&c, &c.launch_url("2", &format!("{}x{}x30", MODE.0, MODE.1), wolf_testkit::RIKEY_HEX)).await;
    let number = host.running().host.sessions.list()[0].id;
    let (_, listed) = call(&sock, Method::GET, "/api/v1/lobbies", None).await;
    assert_eq!(listed["lobbies"][0]["connected_sessions"], json!([number.to_string()]), "{listed}");
    let played =
        rtsp_to_play(&rtsp, &announce_sdp(MODE.0, MODE.1, 30, 3000, SS_ENC_CONTROL_V2)).await.expect("RTSP to PLAY");
    let mut watcher = Watcher {
        sock: tokio::net::UdpSocket::bind(("127.0.0.1", 0)).await.unwrap(),
        to: played.video,
        ping: played.ping.clone(),
        opener: VideoOpener::new(SS_ENC_CONTROL_V2, &RIKEY).unwrap(),
        frames: Default::default(),
    };
    watcher.until_colour(BLUE).await;
    assert!(host.running().host.configured.take("gw-7").is_none(), "used once");
    host.stop().await;
}
