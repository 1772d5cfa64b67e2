//! `wolf-rs config import-wolf`: a Wolf config.toml (written here in Wolf's documented format, with
//! two paired clients and a Moonlight profile of two apps) carried over to a stopped host. Its
//! clients then reach the host over mutual TLS without pairing again, under the ids Wolf gave them,
//! and its apps are listed with the numbers Moonlight knew; a second import changes nothing.

use std::sync::Arc;

use wolf_client::GameStreamClient;
use wolf_client::identity::ClientIdentity;
use wolf_rs::events::wolf_client_id;
use wolf_testkit::ConfigBuilder;
use wolf_testkit::host_process::spawn;

fn wolf_config(a: &ClientIdentity, b: &ClientIdentity) -> String {
    format!(
        r#"hostname = "Wolf"
uuid = "3f1c2a9e-5b7d-4c11-9a0e-2d6f8b1c7e44"
config_version = 7

[[paired_clients]]
client_cert = """{}"""
app_state_folder = "{}"
[paired_clients.settings]
run_uid = 1000
run_gid = 1000
controllers_override = ["PS"]
mouse_acceleration = 1.0
v_scroll_acceleration = 1.0
h_scroll_acceleration = 1.0
motion_controller_override = "AUTO"

[[paired_clients]]
client_cert = """{}"""
app_state_folder = "living-room"

[[profiles]]
id = "moonlight-profile-id"

[[profiles.apps]]
title = "Firefox"
icon_png_path = "firefox.png"
[profiles.apps.runner]
type = "docker"
name = "WolfFirefox"
image = "ghcr.io/games-on-whales/firefox:edge"
mounts = []
env = ["RUN_SWAY=1", "MOZ_ENABLE_WAYLAND=1"]
devices = []
ports = []
base_create_json = '''{{"HostConfig":{{"IpcMode":"host"}}}}'''

[[profiles.apps]]
title = "Test ball"
start_virtual_compositor = false
start_audio_server = false
[profiles.apps.runner]
type = "process"
run_cmd = "sh -c \"while :; do echo 'running...'; sleep 10; done\""
[profiles.apps.video]
source = "videotestsrc pattern=ball flip=true is-live=true"
video_params = "videoconvert ! videoscale"

[[profiles]]
id = "user"
name = "User"
pin = [1, 2, 3, 4]
apps = []

[gstreamer.video]
default_source = "interpipesrc"
"#,
        a.cert.pem,
        wolf_client_id(&a.cert.pem),
        b.cert.pem
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wolfs_clients_stay_paired_and_its_apps_keep_their_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (a, b) = (Arc::new(ClientIdentity::generate().unwrap()), Arc::new(ClientIdentity::generate().unwrap()));
    let wolf = dir.path().join("wolf-config.toml");
    std::fs::write(&wolf, wolf_config(&a, &b)).unwrap();
    // A host that ran once (its config written), now stopped.
    let mut host = spawn(&state, ConfigBuilder::loopback());
    host.health_until("healthy").await;
    host.kill9();

    let out = host.cli(&["config", "import-wolf", wolf.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert_eq!(report.matches("stays paired").count(), 2, "{report}");
    for named in ["settings", "base_create_json", "[video] video_params", "profile \"user\"", "[gstreamer]"] {
        assert!(report.lines().any(|l| l.starts_with("not carried:") && l.contains(named)), "{named}: {report}");
    }

    let host = spawn(&state, ConfigBuilder::loopback());
    host.health_until("healthy").await;
    for id in [&a, &b] {
        let c =
            GameStreamClient::new(([127, 0, 0, 1], host.http).into(), ([127, 0, 0, 1], host.https).into(), id.clone());
        let info = c.https_get("/serverinfo").await.expect("mutual TLS with Wolf's client certificate");
        assert_eq!(info.field("PairStatus").as_deref(), Some("1"), "{}", info.text());
        assert_eq!(info.field("hostname").as_deref(), Some("Wolf"));
        assert_eq!(info.field("uniqueid").as_deref(), Some("3f1c2a9e-5b7d-4c11-9a0e-2d6f8b1c7e44"));
        let apps = c.https_get("/applist").await.unwrap().text();
        assert!(apps.contains("<AppTitle>Firefox</AppTitle><ID>304556286</ID>"), "Wolf's number: {apps}");
        assert!(apps.contains("<AppTitle>Test ball</AppTitle>"), "{apps}");
    }
    // The API names them as Wolf did.
    let sock = state.join("wolf.sock");
    let stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let (_, text) = wolf_rs::net::http1::request(
        stream,
        hyper::Method::GET,
        "/api/v1/clients",
        None,
        wolf_rs::error::ErrorKind::Admin,
        "api",
    )
    .await
    .unwrap();
    let clients: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> =
        clients["clients"].as_array().unwrap().iter().map(|c| c["client_id"].as_str().unwrap()).collect();
    for id in [&a, &b] {
        assert!(ids.contains(&wolf_client_id(&id.cert.pem).as_str()), "{ids:?}");
    }
    let mut host = host;
    host.kill9();

    // Again: nothing new, each thing named.
    let out = host.cli(&["config", "import-wolf", wolf.to_str().unwrap()]);
    let again = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success());
    assert!(again.contains("imported 0 client(s) and 0 app(s)"), "{again}");
    assert_eq!(again.matches("already paired here").count(), 2, "{again}");
    let config = std::fs::read_to_string(state.join("config.toml")).unwrap();
    assert_eq!(config.matches("title = \"Firefox\"").count(), 1);

    // Not a Wolf config: a clear error, nothing written.
    std::fs::write(&wolf, "hostname = [").unwrap();
    let out = host.cli(&["config", "import-wolf", wolf.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Wolf config.toml"));
    assert_eq!(std::fs::read_to_string(state.join("config.toml")).unwrap(), config);
}
