//! Configuration: the TOML file, environment overrides, and validation that reports every problem
//! with its key, line and what is allowed.

pub mod import_wolf;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use validate::{ConfigIssue, Env, is_mac};

/// The documented template, written as `config.toml` on first start.
pub const TEMPLATE: &str = include_str!("../../../../config.toml.template");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub hostname: String,
    pub uuid: String,
    pub bind_address: String,
    pub ports: Ports,
    pub network: Network,
    pub http: Http,
    pub tls: Tls,
    pub pairing: Pairing,
    pub mdns: Mdns,
    pub video: Video,
    pub stream: Stream,
    pub health: Health,
    pub api: Api,
    pub watchdog: Watchdog,
    pub supervisor: SupervisorConfig,
    pub debug: Debug,
    pub sessions: SessionsConfig,
    pub desktop: Desktop,
    pub apps: Vec<App>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "wolf-rs".into(),
            uuid: String::new(),
            bind_address: "0.0.0.0".into(),
            ports: Ports::default(),
            network: Network::default(),
            http: Http::default(),
            tls: Tls::default(),
            pairing: Pairing::default(),
            mdns: Mdns::default(),
            video: Video::default(),
            stream: Stream::default(),
            health: Health::default(),
            api: Api::default(),
            watchdog: Watchdog::default(),
            supervisor: SupervisorConfig::default(),
            debug: Debug::default(),
            sessions: SessionsConfig::default(),
            desktop: Desktop::default(),
            apps: vec![App::test_pattern(), App::desktop()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ports {
    pub http: u16,
    pub https: u16,
    pub rtsp: u16,
    /// Ports of their own for sessions whose client speaks plain RTSP.
    pub rtsp_sessions: PortRange,
    /// UDP ports of the session processes: three each (video, audio, control), told to the client
    /// in RTSP SETUP.
    pub stream_sessions: PortRange,
    /// The shared stream ports of earlier versions: read so their configs still load, and unused
    /// (each session streams from its own ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<u16>,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            http: 47989,
            https: 47984,
            rtsp: 48010,
            rtsp_sessions: PortRange::Range(48100, 48163),
            stream_sessions: PortRange::Range(48200, 48391),
            control: None,
            video: None,
            audio: None,
        }
    }
}

/// A range of ports, written `"FIRST-LAST"`; `"0"`: any free port the OS gives; `""`: none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PortRange {
    Off,
    Any,
    Range(u16, u16),
}

impl PortRange {
    /// The ports to try, in order (`0` alone for `Any`).
    pub fn ports(&self) -> impl Iterator<Item = u16> {
        let (a, b) = match *self {
            PortRange::Off => (1, 0),
            PortRange::Any => (0, 0),
            PortRange::Range(a, b) => (a, b),
        };
        a..=b
    }
}

/// Why a text is not a `PortRange`; serde reports its Display with the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// No `-`, a port that is not a number, a first port of 0 or a last below the first.
    #[error("{0:?} is not a port range: expected \"FIRST-LAST\" (e.g. \"48100-48163\"), \"0\" or \"\"")]
    NotARange(String),
}

impl TryFrom<String> for PortRange {
    type Error = PortRangeError;

    fn try_from(v: String) -> Result<PortRange, PortRangeError> {
        let v = v.trim();
        match v {
            "" => return Ok(PortRange::Off),
            "0" => return Ok(PortRange::Any),
            _ => {}
        }
        let bad = || PortRangeError::NotARange(v.to_owned());
        let (a, b) = v.split_once('-').ok_or_else(bad)?;
        let (a, b): (u16, u16) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        if a == 0 || b < a {
            return Err(bad());
        }
        Ok(PortRange::Range(a, b))
    }
}

impl std::str::FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<PortRange, PortRangeError> {
        PortRange::try_from(s.to_owned())
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            PortRange::Off => Ok(()),
            PortRange::Any => f.write_str("0"),
            PortRange::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    pub local_ip: String,
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Http {
    pub request_timeout_ms: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// The budget of an address in `pairing.trusted_proxies`: a gateway carries many users.
    pub max_connections_per_trusted_proxy: usize,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            request_timeout_ms: 10_000,
            max_connections: 1024,
            max_connections_per_ip: 64,
            max_connections_per_trusted_proxy: 512,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tls {
    pub key_file: String,
    pub cert_file: String,
    pub max_concurrent_handshakes: usize,
    pub permit_wait_timeout_ms: u64,
    pub handshake_timeout_ms: u64,
    pub client_hello_timeout_ms: u64,
    pub max_pending_connections: usize,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            key_file: String::new(),
            cert_file: String::new(),
            max_concurrent_handshakes: 3,
            permit_wait_timeout_ms: 5000,
            handshake_timeout_ms: 5000,
            client_hello_timeout_ms: 3000,
            max_pending_connections: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pairing {
    pub pin: Vec<String>,
    /// Seconds.
    pub pin_timeout: u64,
    pub max_failures: u32,
    pub failure_window_s: u64,
    pub ban_s: u64,
    /// Gateways (CIDRs or addresses) whose one address carries many users: failed pairings are
    /// counted per client certificate behind them, and their connection budget is larger.
    pub trusted_proxies: Vec<String>,
}

impl Default for Pairing {
    fn default() -> Self {
        Pairing {
            pin: Vec::new(),
            pin_timeout: 120,
            max_failures: 5,
            failure_window_s: 600,
            ban_s: 600,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A trusted-proxy entry: a CIDR, or a bare address (one host).
pub fn parse_proxy(entry: &str) -> Option<ipnet::IpNet> {
    let entry = entry.trim();
    entry.parse::<ipnet::IpNet>().ok().or_else(|| entry.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

impl Pairing {
    /// The fixed PIN clients must use, if any (the first entry).
    pub fn fixed_pin(&self) -> Option<&str> {
        self.pin.first().map(String::as_str)
    }

    /// The trusted proxies that parse (validation reports the others).
    pub fn trusted_proxy_nets(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies.iter().filter_map(|e| parse_proxy(e)).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mdns {
    pub enabled: bool,
}

impl Default for Mdns {
    fn default() -> Self {
        Mdns { enabled: true }
    }
}

/// Values `[video] encoder` accepts.
pub const ENCODERS: [&str; 5] = ["auto", "nvcodec", "va", "x264", "openh264"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Video {
    pub encoder: String,
    pub pipelines_dir: String,
    pub fec_percentage: u8,
    /// Offer HEVC encoded in software (x265) when no GPU encoder does HEVC.
    pub software_hevc: bool,
}

impl Default for Video {
    fn default() -> Self {
        Video { encoder: "auto".into(), pipelines_dir: String::new(), fec_percentage: 20, software_hevc: false }
    }
}

/// `[stream] encryption`: whether a client must encrypt RTSP (Sunshine's encryption modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    /// A launch without `corever` (plain RTSP) is refused.
    Required,
    /// Encrypted RTSP for clients that can, plain for the others.
    #[default]
    WhenSupported,
    /// Plain RTSP and video for every client (control messages stay sealed, as every client
    /// since 2020 seals them).
    Off,
}

/// `[stream]`: how clients set up their streams.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stream {
    pub encryption: Encryption,
    /// The shared RTSP port also finds a plain-RTSP session by its client's address when the
    /// session has a port of its own (for clients that ignore `sessionUrl0`'s port). Anyone on that
    /// address can then take the session's RTSP first: off unless such a client needs it.
    pub shared_rtsp_fallback: bool,
}

/// `[api]`: Wolf's management API (`/api/v1`) on a unix socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Api {
    pub enabled: bool,
    /// The socket (env `WOLF_SOCKET_PATH`, Wolf's name); empty: `<state dir>/wolf.sock`.
    pub socket: String,
    /// A group (name or number) that may use the socket too (mode 0660); empty: only this user.
    pub group: String,
    /// Also serve the API on TCP here (`PORT` for loopback, or `ADDRESS:PORT`), each request with
    /// `Authorization: Bearer <the token in <state dir>/api_token>`; empty: no TCP.
    pub tcp: String,
}

impl Default for Api {
    fn default() -> Self {
        Api { enabled: true, socket: String::new(), group: String::new(), tcp: String::new() }
    }
}

impl Api {
    /// The socket path: `socket`, else `<state dir>/wolf.sock`.
    pub fn socket_path(&self, state_dir: &std::path::Path) -> std::path::PathBuf {
        if self.socket.is_empty() { state_dir.join("wolf.sock") } else { std::path::PathBuf::from(&self.socket) }
    }

    /// `tcp` as an address: a bare port is loopback's. `None` when empty; an error when malformed.
    pub fn tcp_addr(&self) -> Result<Option<std::net::SocketAddr>, TcpAddrError> {
        let t = self.tcp.trim();
        if t.is_empty() {
            return Ok(None);
        }
        if let Ok(port) = t.parse::<u16>() {
            return Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))));
        }
        t.parse().map(Some).map_err(|source| TcpAddrError { text: t.to_owned(), source })
    }
}

/// `api.tcp` is neither a port nor a socket address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not PORT or ADDRESS:PORT")]
pub struct TcpAddrError {
    pub text: String,
    #[source]
    pub source: std::net::AddrParseError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    /// Plain-HTTP port of /health, /livez, /readyz and /metrics (0: a free port).
    pub port: u16,
}

impl Default for Health {
    fn default() -> Self {
        Health { port: 47985 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Watchdog {
    pub interval_ms: u64,
    pub warn_after_ms: u64,
    /// 0: never exit (warnings and /health only).
    pub exit_after_ms: u64,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog { interval_ms: 5000, warn_after_ms: 10_000, exit_after_ms: 30_000 }
    }
}

/// How `wolf-rs serve` restarts the control plane (`supervisor`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SupervisorConfig {
    /// The first restart's delay; each quick exit doubles it up to `max_backoff_ms`.
    pub restart_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// A run this long resets the backoff.
    pub stable_after_s: u64,
    /// This many exits within `crash_loop_window_s` is a crash loop: `crash_loop_pause_s` before
    /// the next start (and never a give-up).
    pub crash_loop_exits: usize,
    pub crash_loop_window_s: u64,
    pub crash_loop_pause_s: u64,
    /// After SIGTERM, how long the control plane may drain before it is killed.
    pub stop_grace_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            restart_backoff_ms: 250,
            max_backoff_ms: 30_000,
            stable_after_s: 60,
            crash_loop_exits: 5,
            crash_loop_window_s: 120,
            crash_loop_pause_s: 300,
            stop_grace_ms: 40_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionsConfig {
    /// The sessions file; empty: `<state dir>/active_sessions.json`.
    pub file: String,
    /// Stop a session after this long without client activity; 0: never.
    pub idle_timeout_ms: u64,
    /// How long the start-up reconcile pass may take.
    pub reconcile_timeout_ms: u64,
    /// SIGTERM → apps are stopped instead of left running for the next start to adopt.
    pub stop_apps_on_shutdown: bool,
    /// SIGTERM → the process exits within this.
    pub shutdown_timeout_ms: u64,
    /// How long an app gets between SIGTERM (or docker stop) and SIGKILL.
    pub stop_timeout_ms: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            file: String::new(),
            idle_timeout_ms: 0,
            reconcile_timeout_ms: 30_000,
            stop_apps_on_shutdown: false,
            shutdown_timeout_ms: 10_000,
            stop_timeout_ms: 5_000,
        }
    }
}

/// `[desktop]`: what virtual displays and session audio are made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Desktop {
    /// Virtual displays get numbers from `:first_display` on.
    pub first_display: u32,
    /// At most this many virtual displays at once (numbers first_display to first_display+max-1).
    pub max_displays: u32,
    /// The PulseAudio server command; the host adds its own options (socket, no idle exit).
    pub pulseaudio: Vec<String>,
}

impl Default for Desktop {
    fn default() -> Self {
        Desktop { first_display: 100, max_displays: 64, pulseaudio: vec!["pulseaudio".into()] }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Debug {
    /// Enables `POST /debug/hang` on the health port.
    pub fault_injection: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct App {
    pub title: String,
    pub id: u32,
    pub icon_png: String,
    /// GStreamer source of the video; empty: the session's display (`ximagesrc`) when the app has
    /// one, else a test pattern. May name `{display}` (`:N`) and `{fps}`.
    pub video_source: String,
    /// GStreamer source of the audio; empty: the session's sink monitor (`pulsesrc`) when the app
    /// has one, else a tick. May name `{pulse_server}` and `{sink}`.
    pub audio_source: String,
    pub display: AppDisplay,
    pub audio: AppAudio,
    pub runner: Runner,
}

/// What `sink` on the PulseAudio `server` plays, as a GStreamer source.
pub fn sink_monitor_source(server: &str, sink: &str) -> String {
    format!("pulsesrc server=\"{server}\" device=\"{sink}.monitor\"")
}

/// The source a session's video is captured from when the app names none.
pub const TEST_PATTERN_SOURCE: &str = "videotestsrc pattern=ball is-live=true";
/// The source a session's audio is captured from when the app names none and has no sink.
pub const TEST_TONE_SOURCE: &str = "audiotestsrc wave=ticks is-live=true";

impl App {
    pub fn test_pattern() -> Self {
        App {
            title: "Test pattern".into(),
            id: 1,
            video_source: TEST_PATTERN_SOURCE.into(),
            audio_source: TEST_TONE_SOURCE.into(),
            ..App::default()
        }
    }

    /// A window manager and a terminal on the session's own display, sound into its own sink.
    pub fn desktop() -> Self {
        App {
            title: "Desktop".into(),
            id: 2,
            display: AppDisplay { kind: DisplayKind::Virtual, ..AppDisplay::default() },
            audio: AppAudio { kind: AudioKind::Sink },
            runner: Runner {
                kind: RunnerKind::Process,
                command: ["openbox", "--startup", "xterm -maximized -fa Monospace -fs 12"].map(String::from).to_vec(),
                ..Runner::default()
            },
            ..App::default()
        }
    }

    /// The video source of a session on `display` (`:N`, when it has one) at `fps`.
    pub fn video_source_for(&self, display: Option<&str>, fps: u32) -> String {
        let fps = fps.to_string();
        match (self.video_source.trim(), display) {
            ("", Some(d)) => {
                format!("ximagesrc display-name={d} use-damage=false show-pointer=true ! video/x-raw,framerate={fps}/1")
            }
            ("", None) => TEST_PATTERN_SOURCE.to_owned(),
            (own, d) => own.replace("{display}", d.unwrap_or("")).replace("{fps}", &fps),
        }
    }

    /// The audio source of a session whose sink (when it has one) is `sink` on `server`.
    pub fn audio_source_for(&self, sink: Option<(&str, &str)>) -> String {
        match (self.audio_source.trim(), sink) {
            ("", Some((server, sink))) => sink_monitor_source(server, sink),
            ("", None) => TEST_TONE_SOURCE.to_owned(),
            (own, s) => {
                let (server, sink) = s.unwrap_or(("", ""));
                own.replace("{pulse_server}", server).replace("{sink}", sink)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DisplayKind {
    /// The app streams `video_source` as it is.
    #[default]
    None,
    /// A virtual X display per session, at the client's mode.
    Virtual,
}

/// `[apps.display]`: the session's own X display.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppDisplay {
    #[serde(rename = "type")]
    pub kind: DisplayKind,
    /// A fixed size instead of the client's mode (0: the client's).
    pub width: u32,
    pub height: u32,
    /// The X server; `{display}` (`:N`), `{width}`, `{height}`, `{fps}` are filled in.
    pub command: Vec<String>,
    /// Follow the client's mode: the X server starts at max_width x max_height and its screen is
    /// set (RandR) to the client's mode at launch and at each `/resume` with another mode. Off: the
    /// display keeps the size it started with and a client with another mode gets it scaled.
    pub resize: bool,
    pub max_width: u32,
    pub max_height: u32,
}

impl Default for AppDisplay {
    fn default() -> Self {
        AppDisplay {
            kind: DisplayKind::None,
            width: 0,
            height: 0,
            command: ["Xvfb", "{display}", "-screen", "0", "{width}x{height}x24", "-nolisten", "tcp", "-noreset"]
                .map(String::from)
                .to_vec(),
            resize: false,
            max_width: 3840,
            max_height: 2160,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioKind {
    /// The app streams `audio_source` as it is.
    #[default]
    None,
    /// A PulseAudio sink per session, captured from its monitor.
    Sink,
}

/// `[apps.audio]`: the session's own sound sink.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppAudio {
    #[serde(rename = "type")]
    pub kind: AudioKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    #[default]
    None,
    Process,
    Docker,
}

/// How an app is started. One flat table so that every key can be checked and reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Runner {
    #[serde(rename = "type")]
    pub kind: RunnerKind,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub image: String,
    pub mounts: Vec<String>,
    pub devices: Vec<String>,
}

/// Every problem found in a config, each with its key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {} problem(s):\n{}", issues.len(), IssueList(issues))]
    Invalid { path: PathBuf, issues: Vec<ConfigIssue> },
}

struct IssueList<'a>(&'a [ConfigIssue]);

impl fmt::Display for IssueList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {issue}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Parse and validate TOML text, then apply environment overrides. All problems are returned.
    pub fn parse(text: &str, env: &Env) -> Result<Config, Vec<ConfigIssue>> {
        validate::parse(text, env)
    }

    /// Read `path` (blocking) and parse it.
    pub fn load(path: &Path, env: &Env) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text, env).map_err(|issues| ConfigError::Invalid { path: path.to_owned(), issues })
    }

    pub fn app(&self, id: u32) -> Option<&App> {
        self.apps.iter().find(|a| a.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_defaults() {
        let cfg = Config::parse(TEMPLATE, &Env::default()).expect("template must be valid");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn port_range_and_api_tcp_errors_say_what_is_allowed() {
        for bad in ["48100", "a-b", "0-5", "9-8"] {
            let e = PortRange::try_from(bad.to_owned()).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{bad:?} is not a port range: expected \"FIRST-LAST\" (e.g. \"48100-48163\"), \"0\" or \"\"")
            );
        }
        assert_eq!(PortRange::try_from(" 1-2 ".to_owned()), Ok(PortRange::Range(1, 2)));
        let api = Api { tcp: " nope ".into(), ..Api::default() };
        assert_eq!(api.tcp_addr().unwrap_err().to_string(), "\"nope\" is not PORT or ADDRESS:PORT");
        let api = Api { tcp: "8080".into(), ..Api::default() };
        assert_eq!(api.tcp_addr(), Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8080)))));
    }
}
