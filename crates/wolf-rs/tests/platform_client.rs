//! Wolf's API as a platform's real client calls it: every request body exactly as that client
//! builds it (a Go client driving Wolf's unix socket: apps without pipeline fields, sessions found
//! by `client_unique_id`), and each answer checked for the fields, and the JSON types, it decodes.

use std::path::{Path, PathBuf};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::UnixStream;
use wolf_client::PairOutcome;
use wolf_testkit::{ConfigBuilder, PIN, TestHost, until};

fn socket(host: &TestHost) -> PathBuf {
    host.dir.path().join("wolf.sock")
}

async fn call(sock: &Path, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let stream = UnixStream::connect(sock).await.expect("the API socket accepts");
    let body = body.map(|b| b.to_string());
    let (status, text) =
        wolf_rs::net::http1::request(stream, method, path, body, wolf_rs::error::ErrorKind::Admin, "api")
            .await
            .expect("the API answers");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
}

/// The platform client checks the status and then `success`.
fn succeeded(path: &str, (s, v): &(StatusCode, Value)) {
    assert_eq!((*s, &v["success"]), (StatusCode::OK, &json!(true)), "{path}: {v}");
}

/// The app as the platform's client adds one: its "minimal" app leaves out every pipeline field,
/// the buffer caps and `joypad_type` (pointer fields with omitempty), and adds display defaults
/// Wolf does not know.
fn minimal_app(id: &str, title: &str) -> Value {
    json!({
        "title": title,
        "id": id,
        "runner": { "type": "process", "run_cmd": "sh -c 'exec sleep 600'" },
        "start_virtual_compositor": false,
        "start_audio_server": false,
        "support_hdr": false,
        "render_node": "/dev/dri/renderD128",
        "default_display_width": 1280,
        "default_display_height": 720,
        "default_display_fps": 60,
    })
}

/// A string field, as the client's Go struct (`string`) decodes it: a number there fails the call.
fn string(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_else(|| panic!("{field} must be a JSON string: {v}")).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_pipeline_fields_is_added_and_launched_and_its_session_is_found_by_unique_id() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let sock = socket(&host);
    let added = call(&sock, Method::POST, "/api/v1/apps/add", Some(minimal_app("agent-app", "Agent"))).await;
    succeeded("apps/add", &added);
    let (_, apps) = call(&sock, Method::GET, "/api/v1/apps", None).await;
    let app = apps["apps"].as_array().unwrap().iter().find(|a| a["id"] == "agent-app").expect("listed").clone();
    assert_eq!((string(&app, "title"), string(&app, "joypad_type")), ("Agent".into(), "AUTO".into()));
    assert!(app["start_audio_server"].is_boolean() && app["h264_gst_pipeline"].is_string(), "{app}");

    // A gateway's stream launches it with a uniqueid of its own.
    let mut c = host.client();
    c.uniqueid = "helix-agent-ses_01-0".into();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let text = c.https_get("/applist").await.unwrap().text();
    let number = text.split("<AppTitle>Agent</AppTitle>").nth(1).and_then(|t| t.split("<ID>").nth(1));
    let number = number.and_then(|t| t.split("</ID>").next()).expect("in the applist").to_owned();
    c.launch(&number, "1280x720x60").await.expect("the added app launches");

    let (_, sessions) = call(&sock, Method::GET, "/api/v1/sessions", None).await;
    succeeded("sessions", &(StatusCode::OK, sessions.clone()));
    let listed = sessions["sessions"].as_array().unwrap();
    // The client finds its sessions by the unique id's prefix, and stops them by client_id.
    let mine: Vec<&Value> = listed
        .iter()
        .filter(|s| s["client_unique_id"].as_str().is_some_and(|u| u.starts_with("helix-agent-ses_01-")))
        .collect();
    assert_eq!(mine.len(), 1, "{sessions}");
    for field in ["app_id", "client_id", "client_ip", "aes_key", "aes_iv", "rtsp_fake_ip"] {
        string(mine[0], field);
    }
    for field in ["video_width", "video_height", "video_refresh_rate", "audio_channel_count"] {
        assert!(mine[0][field].is_u64(), "{field}: {sessions}");
    }
    let stop = json!({ "session_id": string(mine[0], "client_id") });
    succeeded("sessions/stop", &call(&sock, Method::POST, "/api/v1/sessions/stop", Some(stop)).await);
    until("the session ended", || host.running().host.sessions.is_empty()).await;
    host.stop().await;
}
