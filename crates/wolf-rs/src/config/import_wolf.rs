//! `wolf-rs config import-wolf PATH`: what of a Wolf `config.toml` carries over. Wolf's paired
//! clients stay paired (their certificates, so a client connects without pairing again), its
//! hostname and uuid are kept, and the apps Moonlight sees (the `moonlight-profile-id` profile, or
//! the top-level `apps` of older files) become ours with the numbers Wolf gave them. Everything
//! else is named in `not_carried`. Pure: the caller reads and writes the files.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{App, AudioKind, DisplayKind, Runner, RunnerKind};

/// The profile whose apps Moonlight clients see in Wolf.
const MOONLIGHT_PROFILE: &str = "moonlight-profile-id";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WolfConfig {
    hostname: Option<String>,
    uuid: Option<String>,
    paired_clients: Vec<WolfClient>,
    profiles: Vec<WolfProfile>,
    /// Before profiles (config_version 6 and older).
    apps: Vec<WolfApp>,
    gstreamer: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WolfClient {
    client_cert: String,
    app_state_folder: String,
    settings: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WolfProfile {
    id: String,
    name: Option<String>,
    apps: Vec<WolfApp>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct WolfApp {
    title: String,
    icon_png_path: Option<String>,
    start_virtual_compositor: bool,
    start_audio_server: bool,
    runner: Option<WolfRunner>,
    video: Option<toml::Value>,
    audio: Option<toml::Value>,
    render_node: Option<String>,
}

impl Default for WolfApp {
    fn default() -> Self {
        WolfApp {
            title: String::new(),
            icon_png_path: None,
            // Wolf's defaults.
            start_virtual_compositor: true,
            start_audio_server: true,
            runner: None,
            video: None,
            audio: None,
            render_node: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum WolfRunner {
    #[serde(alias = "Process")]
    Process {
        #[serde(default)]
        run_cmd: String,
    },
    #[serde(alias = "Docker")]
    Docker {
        #[serde(default)]
        image: String,
        #[serde(default)]
        mounts: Vec<String>,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        devices: Vec<String>,
        #[serde(default)]
        ports: Vec<String>,
        #[serde(default)]
        base_create_json: Option<String>,
    },
}

/// A paired client of Wolf's: its certificate as Wolf stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedClient {
    pub cert_pem: String,
    /// Wolf's `app_state_folder`, kept as the client's name.
    pub name: String,
}

#[derive(Debug, Default)]
pub struct Imported {
    pub hostname: Option<String>,
    pub uuid: Option<String>,
    pub clients: Vec<ImportedClient>,
    pub apps: Vec<App>,
    /// What was not carried over, one line each.
    pub not_carried: Vec<String>,
}

/// Why Wolf's config text could not be read. Anything past parsing is named in `not_carried`.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not a Wolf config.toml: {0}")]
    Toml(#[from] toml::de::Error),
}

/// Read Wolf's config text. An error names what made it unreadable.
pub fn import(text: &str) -> Result<Imported, ImportError> {
    let w: WolfConfig = toml::from_str(text)?;
    let mut out = Imported { hostname: w.hostname, uuid: w.uuid, ..Imported::default() };
    for (i, c) in w.paired_clients.into_iter().enumerate() {
        if c.client_cert.trim().is_empty() {
            out.not_carried.push(format!("paired_clients[{i}]: no client_cert"));
            continue;
        }
        if c.settings.is_some() {
            out.not_carried.push(format!(
                "paired_clients[{i}].settings (run_uid/run_gid, controller and mouse settings): wolf-rs has no per-client settings"
            ));
        }
        let name = if c.app_state_folder.is_empty() { format!("wolf-client-{i}") } else { c.app_state_folder };
        out.clients.push(ImportedClient { cert_pem: c.client_cert, name });
    }
    let (apps, source) = match w.profiles.iter().position(|p| p.id == MOONLIGHT_PROFILE) {
        Some(i) => {
            let mut profiles = w.profiles;
            let moonlight = profiles.remove(i);
            for p in profiles {
                out.not_carried.push(format!(
                    "profile {:?} ({}, {} app(s)): only Moonlight's apps are carried (Wolf UI profiles are not)",
                    p.id,
                    p.name.unwrap_or_default(),
                    p.apps.len()
                ));
            }
            if !w.apps.is_empty() {
                out.not_carried.push(format!("{} top-level app(s) beside the profiles", w.apps.len()));
            }
            (moonlight.apps, "profiles.moonlight-profile-id.apps")
        }
        None => (w.apps, "apps"),
    };
    for (i, a) in apps.into_iter().enumerate() {
        let at = format!("{source}[{i}] {:?}", a.title);
        match app(a, &at, &mut out.not_carried) {
            Some(mut app) => {
                // Unique, as Wolf's were unless two apps shared icon and title.
                while out.apps.iter().any(|x| x.id == app.id) {
                    app.id += 1;
                }
                out.apps.push(app);
            }
            None => continue,
        }
    }
    if w.gstreamer.is_some() {
        out.not_carried.push("[gstreamer] encoders and pipelines: wolf-rs probes its own encoders".into());
    }
    Ok(out)
}

/// Wolf's number for an app: its hash of icon path and title (what Moonlight saw as the app's ID).
pub fn wolf_app_id(icon_png_path: &str, title: &str) -> u32 {
    let h = icon_png_path
        .bytes()
        .chain(title.bytes())
        .fold(5385u32, |h, c| h.wrapping_mul(33).wrapping_add(c as i8 as i32 as u32));
    (h as i32).unsigned_abs().max(1)
}

fn app(a: WolfApp, at: &str, not_carried: &mut Vec<String>) -> Option<App> {
    if a.title.trim().is_empty() {
        not_carried.push(format!("{at}: no title"));
        return None;
    }
    let icon = a.icon_png_path.clone().unwrap_or_default();
    let mut runner = Runner::default();
    match a.runner {
        None => {}
        Some(WolfRunner::Process { run_cmd }) if run_cmd.trim().is_empty() => {}
        Some(WolfRunner::Process { run_cmd }) => match shell_words::split(&run_cmd) {
            Ok(words) => {
                runner.kind = RunnerKind::Process;
                runner.command = words;
            }
            Err(e) => {
                not_carried.push(format!("{at}: run_cmd {run_cmd:?} does not parse ({e})"));
                return None;
            }
        },
        Some(WolfRunner::Docker { image, mounts, env, devices, ports, base_create_json }) => {
            runner.kind = RunnerKind::Docker;
            runner.image = image;
            runner.mounts = mounts;
            runner.devices = devices;
            let mut vars = BTreeMap::new();
            for kv in env {
                match kv.split_once('=') {
                    Some((k, v)) => {
                        vars.insert(k.to_owned(), v.to_owned());
                    }
                    None => not_carried.push(format!("{at}: env {kv:?} is not NAME=VALUE")),
                }
            }
            runner.env = vars;
            if !ports.is_empty() {
                not_carried.push(format!("{at}: ports {ports:?}"));
            }
            if base_create_json.is_some_and(|j| !j.trim().is_empty()) {
                not_carried
                    .push(format!("{at}: base_create_json (wolf-rs sets the container's devices and mounts itself)"));
            }
        }
    }
    // A source of its own (a test pattern, a capture) is a GStreamer source here too; Wolf's
    // compositor sources (interpipesrc) and its params, encoders and sinks are not ours.
    let mut sources = [String::new(), String::new()];
    for (i, (what, table)) in [("video", &a.video), ("audio", &a.audio)].into_iter().enumerate() {
        let Some(toml::Value::Table(t)) = table else { continue };
        for (key, value) in t {
            match (key.as_str(), value.as_str()) {
                ("source", Some(src)) if !src.contains("interpipesrc") => sources[i] = src.to_owned(),
                _ => not_carried.push(format!("{at}: [{what}] {key} (wolf-rs builds its own pipelines)")),
            }
        }
    }
    if a.render_node.is_some_and(|n| !n.is_empty()) {
        not_carried.push(format!("{at}: render_node"));
    }
    if icon.starts_with("http") {
        not_carried.push(format!("{at}: icon {icon:?} (a URL; wolf-rs reads icons from files)"));
    }
    let [video_source, audio_source] = sources;
    let mut app = App {
        title: a.title.clone(),
        id: wolf_app_id(&icon, &a.title),
        video_source,
        audio_source,
        runner,
        ..App::default()
    };
    if !icon.starts_with("http") {
        app.icon_png = icon;
    }
    if a.start_virtual_compositor {
        app.display.kind = DisplayKind::Virtual;
        // Wolf's compositor follows the client's mode.
        app.display.resize = true;
    }
    if a.start_audio_server {
        app.audio.kind = AudioKind::Sink;
    }
    Some(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_keep_wolfs_numbers_and_the_rest_is_named() {
        let text = r#"
hostname = "Wolf"
uuid = "3f1c2a9e-5b7d-4c11-9a0e-2d6f8b1c7e44"
config_version = 7
[[paired_clients]]
client_cert = "PEM"
app_state_folder = "10594003729173467913"
[paired_clients.settings]
run_uid = 1000
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
env = ["RUN_SWAY=1", "BROKEN"]
devices = []
ports = []
[[profiles.apps]]
title = "Test ball"
start_virtual_compositor = false
start_audio_server = false
[profiles.apps.runner]
type = "process"
run_cmd = "sh -c \"while :; do echo 'running...'; sleep 10; done\""
[profiles.apps.video]
source = "videotestsrc pattern=ball"
video_params = "videoconvert"
[[profiles]]
id = "user"
name = "User"
"#;
        let i = import(text).unwrap();
        assert_eq!(i.hostname.as_deref(), Some("Wolf"));
        assert_eq!(i.clients, [ImportedClient { cert_pem: "PEM".into(), name: "10594003729173467913".into() }]);
        let firefox = &i.apps[0];
        assert_eq!(firefox.id, 304_556_286, "the number Moonlight knew");
        assert_eq!((firefox.display.kind, firefox.audio.kind), (DisplayKind::Virtual, AudioKind::Sink));
        assert_eq!(firefox.runner.env.get("RUN_SWAY").map(String::as_str), Some("1"));
        let ball = &i.apps[1];
        assert_eq!(ball.runner.command[..2], ["sh".to_owned(), "-c".to_owned()]);
        assert_eq!(ball.display.kind, DisplayKind::None);
        let named = i.not_carried.join("\n");
        assert_eq!(ball.video_source, "videotestsrc pattern=ball", "its own source is carried");
        for what in ["settings", "\"BROKEN\"", "[video] video_params", "profile \"user\""] {
            assert!(named.contains(what), "{what} in:\n{named}");
        }
        let e = import("not = [toml").unwrap_err();
        assert!(matches!(e, ImportError::Toml(_)));
        assert!(e.to_string().starts_with("not a Wolf config.toml: "), "{e}");
    }
}
