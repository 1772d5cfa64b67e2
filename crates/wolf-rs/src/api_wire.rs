//! The JSON of Wolf's `/api/v1` (served by `api`, read by `cli`), field for field as Wolf's clients send and read it. Fields of
//! Wolf's that mean nothing here are written with a neutral value and accepted and ignored on
//! input; the OpenAPI document (generated from these types) says which.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

pub use crate::events::StreamSession;

/// A lobby's display, as Wolf's clients send it. The render nodes and buffer caps are accepted
/// and not used (wolf-rs's displays are X servers).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VideoSettings {
    pub width: u32,
    pub height: u32,
    pub refresh_rate: u32,
    #[serde(default)]
    pub wayland_render_node: String,
    #[serde(default)]
    pub runner_render_node: String,
    #[serde(default)]
    pub video_producer_buffer_caps: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AudioSettings {
    pub channel_count: u8,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LobbyCreateRequest {
    pub profile_id: String,
    pub name: String,
    #[serde(default)]
    pub icon_png_path: Option<String>,
    pub multi_user: bool,
    /// Digits a joiner must give; null: anyone may join.
    #[serde(default)]
    pub pin: Option<Vec<u8>>,
    pub stop_when_everyone_leaves: bool,
    pub video_settings: VideoSettings,
    pub audio_settings: AudioSettings,
    /// Accepted, not used.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub client_settings: Option<serde_json::Value>,
    /// Accepted, not used: the lobby's app data lives under `<state dir>/apps/lobby-<profile_id>`.
    #[serde(default)]
    pub runner_state_folder: String,
    pub runner: Runner,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LobbyCreateResponse {
    pub success: bool,
    pub lobby_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LobbyJoinRequest {
    pub lobby_id: String,
    /// The session: Wolf's id (its client's) or wolf-rs's number.
    #[serde(deserialize_with = "string_or_number")]
    #[schema(value_type = String)]
    pub moonlight_session_id: String,
    #[serde(default)]
    pub pin: Option<Vec<u8>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LobbyLeaveRequest {
    pub lobby_id: String,
    #[serde(deserialize_with = "string_or_number")]
    #[schema(value_type = String)]
    pub moonlight_session_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LobbyStopRequest {
    pub lobby_id: String,
    #[serde(default)]
    pub pin: Option<Vec<u8>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LobbyView {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_png_path: Option<String>,
    pub multi_user: bool,
    pub started_by_profile_id: String,
    pub pin_required: bool,
    pub stop_when_everyone_leaves: bool,
    pub runner: Runner,
    /// wolf-rs's numbers of the sessions in it.
    pub connected_sessions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LobbiesResponse {
    pub success: bool,
    pub lobbies: Vec<LobbyView>,
}

/// `{"success": true}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GenericSuccess {
    pub success: bool,
}

/// `{"success": false, "error": "..."}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GenericError {
    pub success: bool,
    pub error: String,
}

/// A client's settings as Wolf keeps them. wolf-rs applies none of them yet: they are shown with
/// Wolf's defaults.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClientSettings {
    pub run_uid: i64,
    pub run_gid: i64,
    pub controllers_override: Vec<String>,
    pub mouse_acceleration: f64,
    pub v_scroll_acceleration: f64,
    pub h_scroll_acceleration: f64,
    pub motion_controller_override: String,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            run_uid: 1000,
            run_gid: 1000,
            controllers_override: Vec::new(),
            mouse_acceleration: 1.0,
            v_scroll_acceleration: 1.0,
            h_scroll_acceleration: 1.0,
            motion_controller_override: "AUTO".into(),
        }
    }
}

/// A paired client. The last five fields are wolf-rs's own.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Client {
    /// Wolf's id: a hash of the client's certificate (the same a Wolf host gives it).
    pub client_id: String,
    /// The client's folder under `<state dir>/apps` (its certificate's SHA-256).
    pub app_state_folder: String,
    pub settings: ClientSettings,
    pub name: String,
    pub fingerprint: String,
    /// The `uniqueid` the client paired with.
    #[serde(default)]
    pub uniqueid: String,
    pub ip: String,
    /// Unix seconds.
    pub paired_at: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientsResponse {
    pub success: bool,
    pub clients: Vec<Client>,
}

/// `clients/settings`: accepted for Wolf's clients; wolf-rs applies no per-client settings yet.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientSettingsRequest {
    pub client_id: String,
    #[serde(default)]
    pub app_state_folder: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProfilesResponse {
    pub success: bool,
    /// Always empty: wolf-rs has no Wolf UI profiles.
    #[schema(value_type = Vec<Object>)]
    pub profiles: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnpairRequest {
    /// Wolf's client id, or the certificate fingerprint.
    pub client_id: String,
}

/// A pairing that waits for its PIN.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PendingPair {
    pub pair_secret: String,
    pub client_ip: String,
    /// wolf-rs: the name the client gave.
    pub device_name: String,
    /// wolf-rs: the `uniqueid` it gave.
    #[serde(default)]
    pub uniqueid: String,
    /// wolf-rs: seconds it has waited.
    #[serde(default)]
    pub waiting_s: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PendingPairsResponse {
    pub success: bool,
    pub requests: Vec<PendingPair>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PairRequest {
    /// Which waiting pairing. wolf-rs: may be left out while exactly one waits.
    #[serde(default)]
    pub pair_secret: Option<String>,
    /// The 4 digits the client shows.
    pub pin: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionsResponse {
    pub success: bool,
    pub sessions: Vec<StreamSession>,
}

/// wolf-rs's own (`GET /sessions/records`): each session as the host keeps it, for
/// `wolf-rs sessions list`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionRecordsResponse {
    pub success: bool,
    /// As in `active_sessions.json`, with the last activity.
    #[schema(value_type = Vec<Object>)]
    pub sessions: Vec<crate::sessions::SessionRecord>,
}

/// `sessions/add`: a session for a paired client, as if it had launched the app (it then connects
/// with RTSP as after `/launch`). `client_id` and `app_id` are required here (Wolf makes a dummy
/// client or app without them); `rtsp_fake_ip` and `client_settings` are accepted and not used.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionAddRequest {
    pub client_ip: String,
    /// The client's `rikey`: 32 hex digits.
    pub aes_key: String,
    /// The client's `rikeyid`, a decimal (may be negative).
    pub aes_iv: String,
    #[serde(default)]
    pub rtsp_fake_ip: String,
    pub video_width: u32,
    pub video_height: u32,
    pub video_refresh_rate: u32,
    pub audio_channel_count: u8,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// The `uniqueid` its Moonlight client uses (listed as the session's `client_unique_id`).
    #[serde(default)]
    pub client_unique_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub client_settings: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionAddResponse {
    pub success: bool,
    /// Wolf's session id: the client id.
    pub session_id: String,
}

/// `sessions/configure`: the next launch whose `uniqueid` is `client_unique_id` goes straight into
/// the lobby (no PIN asked: the platform chose it). Kept for one launch, or 5 minutes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConfigureSessionRequest {
    pub client_unique_id: String,
    pub immediate_lobby_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConfigureSessionResponse {
    pub success: bool,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionIdRequest {
    /// Wolf's session id (the client id), or wolf-rs's session number; a string or a number.
    #[serde(deserialize_with = "string_or_number")]
    #[schema(value_type = String)]
    pub session_id: String,
}

/// Wolf sends ids as decimal strings (numbers before mid-2025): both are accepted.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(u64),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

/// An app's runner as Wolf writes it: a process (`run_cmd`) or a container.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Runner {
    Process {
        run_cmd: String,
    },
    Docker {
        #[serde(default)]
        name: String,
        image: String,
        #[serde(default)]
        mounts: Vec<String>,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        devices: Vec<String>,
        #[serde(default)]
        ports: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_create_json: Option<String>,
    },
}

/// An app as Wolf lists it. Pipelines and render nodes are wolf-rs's choice (listed empty); on
/// input every field but `title`, `id` and `runner` may be left out, with Wolf's defaults (its
/// clients leave the pipelines out for the host to choose).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct App {
    pub title: String,
    pub id: String,
    #[serde(default)]
    pub support_hdr: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_png_path: Option<String>,
    #[serde(default)]
    pub h264_gst_pipeline: String,
    #[serde(default)]
    pub hevc_gst_pipeline: String,
    #[serde(default)]
    pub av1_gst_pipeline: String,
    #[serde(default)]
    pub render_node: String,
    #[serde(default)]
    pub opus_gst_pipeline: String,
    /// A virtual display per session (default true, as Wolf).
    #[serde(default = "yes")]
    pub start_virtual_compositor: bool,
    /// An audio sink per session (default true, as Wolf).
    #[serde(default = "yes")]
    pub start_audio_server: bool,
    /// XBOX, PS, NINTENDO or AUTO (Wolf's; the client's controller type picks the pad here).
    #[serde(default = "joypad_auto")]
    pub joypad_type: String,
    pub runner: Runner,
}

fn yes() -> bool {
    true
}

fn joypad_auto() -> String {
    "AUTO".into()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppsResponse {
    pub success: bool,
    pub apps: Vec<App>,
}

impl From<&crate::config::App> for App {
    fn from(a: &crate::config::App) -> App {
        use crate::config::{AudioKind, DisplayKind, RunnerKind};
        let r = &a.runner;
        let runner = match r.kind {
            RunnerKind::Docker => Runner::Docker {
                name: a.title.clone(),
                image: r.image.clone(),
                mounts: r.mounts.clone(),
                env: r.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                devices: r.devices.clone(),
                ports: Vec::new(),
                base_create_json: None,
            },
            RunnerKind::Process | RunnerKind::None => Runner::Process { run_cmd: shell_words::join(&r.command) },
        };
        App {
            title: a.title.clone(),
            id: a.id.to_string(),
            support_hdr: false,
            icon_png_path: (!a.icon_png.is_empty()).then(|| a.icon_png.clone()),
            h264_gst_pipeline: String::new(),
            hevc_gst_pipeline: String::new(),
            av1_gst_pipeline: String::new(),
            render_node: String::new(),
            opus_gst_pipeline: String::new(),
            start_virtual_compositor: a.display.kind == DisplayKind::Virtual,
            start_audio_server: a.audio.kind == AudioKind::Sink,
            joypad_type: joypad_auto(),
            runner,
        }
    }
}

/// Why an app (or a lobby's runner) sent over the API cannot be run; answered as text.
#[derive(Debug, thiserror::Error)]
pub enum InvalidApp {
    #[error("title is empty")]
    EmptyTitle,
    #[error("runner.run_cmd: {0}")]
    RunCmd(#[source] shell_words::ParseError),
    #[error("runner.run_cmd is empty")]
    EmptyRunCmd,
    #[error("runner.image is empty")]
    EmptyImage,
    #[error("runner.env: {0:?} is not NAME=VALUE")]
    Env(String),
}

impl App {
    /// An app as Wolf's clients describe one: no pipelines (the host chooses), a display and a
    /// sink per session when `own_desktop`.
    pub fn new(title: String, id: String, runner: Runner, own_desktop: bool) -> App {
        App {
            title,
            id,
            support_hdr: false,
            icon_png_path: None,
            h264_gst_pipeline: String::new(),
            hevc_gst_pipeline: String::new(),
            av1_gst_pipeline: String::new(),
            render_node: String::new(),
            opus_gst_pipeline: String::new(),
            start_virtual_compositor: own_desktop,
            start_audio_server: own_desktop,
            joypad_type: joypad_auto(),
            runner,
        }
    }

    /// The app this describes, for the catalog. Wolf's pipelines, render node, HDR flag and a
    /// container's name, ports and create JSON are not used (wolf-rs builds its own pipelines).
    pub fn to_config(&self) -> Result<crate::config::App, InvalidApp> {
        use crate::config::{AudioKind, DisplayKind, RunnerKind};
        if self.title.trim().is_empty() {
            return Err(InvalidApp::EmptyTitle);
        }
        let mut runner = crate::config::Runner::default();
        match &self.runner {
            Runner::Process { run_cmd } => {
                runner.kind = RunnerKind::Process;
                runner.command = shell_words::split(run_cmd).map_err(InvalidApp::RunCmd)?;
                if runner.command.is_empty() {
                    return Err(InvalidApp::EmptyRunCmd);
                }
            }
            Runner::Docker { image, mounts, env, devices, .. } => {
                runner.kind = RunnerKind::Docker;
                if image.trim().is_empty() {
                    return Err(InvalidApp::EmptyImage);
                }
                runner.image = image.clone();
                runner.mounts = mounts.clone();
                runner.devices = devices.clone();
                for kv in env {
                    let (k, v) = kv.split_once('=').ok_or_else(|| InvalidApp::Env(kv.clone()))?;
                    runner.env.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        let mut app = crate::config::App {
            title: self.title.clone(),
            icon_png: self.icon_png_path.clone().unwrap_or_default(),
            runner,
            ..crate::config::App::default()
        };
        if self.start_virtual_compositor {
            app.display.kind = DisplayKind::Virtual;
        }
        if self.start_audio_server {
            app.audio.kind = AudioKind::Sink;
        }
        Ok(app)
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppDeleteRequest {
    /// The id given at `/apps/add` (or the app's number).
    #[serde(deserialize_with = "string_or_number")]
    #[schema(value_type = String)]
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_as_strings_or_numbers_and_commands_as_one_line() {
        let a: SessionIdRequest = serde_json::from_str(r#"{"session_id":"42"}"#).unwrap();
        let b: SessionIdRequest = serde_json::from_str(r#"{"session_id":42}"#).unwrap();
        assert_eq!((a.session_id.as_str(), b.session_id.as_str()), ("42", "42"));
        assert!(serde_json::from_str::<SessionIdRequest>(r#"{"session_id":[1]}"#).is_err());
        let words = ["sh", "-c", "echo it's here"].map(String::from);
        let app = crate::config::App {
            runner: crate::config::Runner {
                kind: crate::config::RunnerKind::Process,
                command: words.to_vec(),
                ..Default::default()
            },
            title: "Quoted".into(),
            ..Default::default()
        };
        assert_eq!(App::from(&app).to_config().unwrap().runner.command, words, "a command survives the round trip");
    }

    #[test]
    fn an_invalid_app_says_which_field() {
        let mut app = App::from(&crate::config::App { title: "T".into(), ..Default::default() });
        let why = |app: &App| app.to_config().map(|_| ()).map_err(|e| e.to_string());
        app.runner = Runner::Process { run_cmd: "sh -c 'open".into() };
        assert_eq!(why(&app), Err("runner.run_cmd: missing closing quote".into()));
        app.runner = Runner::Process { run_cmd: " ".into() };
        assert_eq!(why(&app), Err("runner.run_cmd is empty".into()));
        let docker = |image: &str, env: &str| Runner::Docker {
            name: String::new(),
            image: image.into(),
            mounts: Vec::new(),
            env: vec![env.into()],
            devices: Vec::new(),
            ports: Vec::new(),
            base_create_json: None,
        };
        app.runner = docker("", "A=1");
        assert_eq!(why(&app), Err("runner.image is empty".into()));
        app.runner = docker("busybox", "NOEQUALS");
        assert_eq!(why(&app), Err("runner.env: \"NOEQUALS\" is not NAME=VALUE".into()));
        app.title = " ".into();
        assert_eq!(why(&app), Err("title is empty".into()));
    }
}
