//! Turns TOML text into a `Config`, collecting every unknown key, bad value and broken rule with
//! the key's path and line.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::de::DeserializeOwned;

use super::{Config, PortRange, RunnerKind};

/// One problem: where it is and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path (`tls.max_concurrent_handshakes`, `apps.0.id`), or `env NAME`.
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: `{}`: {}", self.key, self.message),
            None => write!(f, "`{}`: {}", self.key, self.message),
        }
    }
}

/// Environment overrides, captured once so parsing stays pure and testable.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: BTreeMap<String, String>,
}

impl Env {
    pub const NAMES: [&'static str; 8] = [
        "WOLF_HOSTNAME",
        "WOLF_MDNS",
        "WOLF_PIN",
        "WOLF_INTERNAL_IP",
        "WOLF_INTERNAL_MAC",
        "WOLF_PRIVATE_KEY_FILE",
        "WOLF_PRIVATE_CERT_FILE",
        "WOLF_SOCKET_PATH",
    ];

    pub fn from_process() -> Env {
        let vars = Self::NAMES.iter().filter_map(|n| std::env::var(n).ok().map(|v| ((*n).to_owned(), v))).collect();
        Env { vars }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn join(path: &[Seg]) -> String {
    let parts: Vec<String> = path
        .iter()
        .map(|s| match s {
            Seg::Key(k) => k.clone(),
            Seg::Index(i) => i.to_string(),
        })
        .collect();
    parts.join(".")
}

fn ignored_path(p: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path;
    match p {
        Path::Root => {}
        Path::Seq { parent, index } => {
            ignored_path(parent, out);
            out.push(Seg::Index(*index));
        }
        Path::Map { parent, key } => {
            ignored_path(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            ignored_path(parent, out)
        }
    }
}

/// Line (1-based) of the key or value at `path`, from the span-keeping parse.
fn line_of(doc: &toml_edit::ImDocument<&str>, text: &str, path: &[Seg]) -> Option<usize> {
    enum Cur<'d> {
        Item(&'d toml_edit::Item),
        Table(&'d toml_edit::Table),
    }
    let mut span = None;
    let mut cur = Cur::Item(doc.as_item());
    for seg in path {
        match (seg, cur) {
            (Seg::Key(k), c) => {
                let table: &dyn toml_edit::TableLike = match c {
                    Cur::Item(i) => i.as_table_like()?,
                    Cur::Table(t) => t,
                };
                let Some((key, next)) = table.get_key_value(k) else {
                    break;
                };
                span = key.span().or_else(|| next.span()).or(span);
                cur = Cur::Item(next);
            }
            (Seg::Index(i), Cur::Item(item)) => {
                if let Some(t) = item.as_array_of_tables().and_then(|a| a.get(*i)) {
                    span = t.span().or(span);
                    cur = Cur::Table(t);
                } else {
                    if let Some(v) = item.as_array().and_then(|a| a.get(*i)) {
                        span = v.span().or(span);
                    }
                    break;
                }
            }
            (Seg::Index(_), Cur::Table(_)) => break,
        }
    }
    span.map(|s| line_at(text, s.start))
}

fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(1, |t| t.bytes().filter(|b| *b == b'\n').count() + 1)
}

/// Keys allowed in the table at `path`, read off the defaults so the list never drifts.
fn allowed_keys(path: &[Seg]) -> Vec<String> {
    let Ok(mut v) = toml::Value::try_from(Config::default()) else {
        return Vec::new();
    };
    for seg in path {
        v = match (seg, v) {
            (Seg::Key(k), toml::Value::Table(mut t)) => match t.remove(k) {
                Some(x) => x,
                None => return Vec::new(),
            },
            (Seg::Index(_), toml::Value::Array(mut a)) if !a.is_empty() => a.swap_remove(0),
            _ => return Vec::new(),
        };
    }
    match v {
        toml::Value::Table(t) => t.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

struct Ctx<'a> {
    text: &'a str,
    doc: toml_edit::ImDocument<&'a str>,
    issues: Vec<ConfigIssue>,
}

impl Ctx<'_> {
    fn issue(&mut self, path: &[Seg], message: impl Into<String>) {
        let line = line_of(&self.doc, self.text, path);
        self.issues.push(ConfigIssue { key: join(path), line, message: message.into() });
    }

    fn issue_at(&mut self, key: &str, message: impl Into<String>) {
        let path: Vec<Seg> =
            key.split('.').map(|p| p.parse::<usize>().map_or_else(|_| Seg::Key(p.to_owned()), Seg::Index)).collect();
        self.issue(&path, message);
    }

    /// Deserialize one top-level entry on its own so one bad section does not hide the others.
    fn section<T: DeserializeOwned + Default>(&mut self, table: &toml::Table, key: &str) -> T {
        let Some(value) = table.get(key) else {
            return T::default();
        };
        let mut unknown: Vec<Vec<Seg>> = Vec::new();
        let mut on_ignored = |p: serde_ignored::Path<'_>| {
            let mut segs = vec![Seg::Key(key.to_owned())];
            ignored_path(&p, &mut segs);
            unknown.push(segs);
        };
        let de = serde_ignored::Deserializer::new(value.clone(), &mut on_ignored);
        let result: Result<T, _> = serde_path_to_error::deserialize(de);
        for path in unknown {
            let parent = &path[..path.len() - 1];
            let allowed = allowed_keys(parent);
            let msg = if allowed.is_empty() {
                "unknown key".to_owned()
            } else {
                format!("unknown key; allowed here: {}", allowed.join(", "))
            };
            self.issue(&path, msg);
        }
        match result {
            Ok(v) => v,
            Err(e) => {
                let mut path = vec![Seg::Key(key.to_owned())];
                for s in e.path().iter() {
                    match s {
                        serde_path_to_error::Segment::Seq { index } => path.push(Seg::Index(*index)),
                        serde_path_to_error::Segment::Map { key } => path.push(Seg::Key(key.clone())),
                        _ => {}
                    }
                }
                let msg = e.into_inner().to_string().replace('\n', " ");
                self.issue(&path, format!("bad value: {msg}"));
                T::default()
            }
        }
    }
}

const TOP_KEYS: [&str; 19] = [
    "hostname",
    "uuid",
    "bind_address",
    "ports",
    "network",
    "http",
    "tls",
    "pairing",
    "mdns",
    "video",
    "stream",
    "health",
    "api",
    "watchdog",
    "supervisor",
    "debug",
    "sessions",
    "desktop",
    "apps",
];

pub(super) fn parse(text: &str, env: &Env) -> Result<Config, Vec<ConfigIssue>> {
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let line = e.span().map(|s| line_at(text, s.start));
            return Err(vec![ConfigIssue { key: "(syntax)".into(), line, message: e.message().trim().to_owned() }]);
        }
    };
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map(|s| line_at(text, s.start));
            return Err(vec![ConfigIssue { key: "(syntax)".into(), line, message: e.message().to_owned() }]);
        }
    };
    let mut cx = Ctx { text, doc, issues: Vec::new() };
    for key in table.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            cx.issue(&[Seg::Key(key.clone())], format!("unknown key; allowed here: {}", TOP_KEYS.join(", ")));
        }
    }
    let defaults = Config::default();
    let mut cfg = Config {
        hostname: cx.section::<Option<String>>(&table, "hostname").unwrap_or(defaults.hostname),
        uuid: cx.section::<Option<String>>(&table, "uuid").unwrap_or(defaults.uuid),
        bind_address: cx.section::<Option<String>>(&table, "bind_address").unwrap_or(defaults.bind_address),
        ports: cx.section(&table, "ports"),
        network: cx.section(&table, "network"),
        http: cx.section(&table, "http"),
        tls: cx.section(&table, "tls"),
        pairing: cx.section(&table, "pairing"),
        mdns: cx.section(&table, "mdns"),
        video: cx.section(&table, "video"),
        stream: cx.section(&table, "stream"),
        health: cx.section(&table, "health"),
        api: cx.section(&table, "api"),
        watchdog: cx.section(&table, "watchdog"),
        supervisor: cx.section(&table, "supervisor"),
        debug: cx.section(&table, "debug"),
        sessions: cx.section(&table, "sessions"),
        desktop: cx.section(&table, "desktop"),
        apps: if table.contains_key("apps") { cx.section(&table, "apps") } else { defaults.apps },
    };
    apply_env(&mut cfg, env);
    check_rules(&cfg, env, &mut cx);
    if cx.issues.is_empty() { Ok(cfg) } else { Err(cx.issues) }
}

fn apply_env(cfg: &mut Config, env: &Env) {
    if let Some(v) = env.get("WOLF_HOSTNAME") {
        cfg.hostname = v.to_owned();
    }
    if let Some(v) = env.get("WOLF_PIN") {
        cfg.pairing.pin = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    }
    if let Some(v) = env.get("WOLF_MDNS") {
        match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => cfg.mdns.enabled = true,
            "0" | "false" | "no" | "off" => cfg.mdns.enabled = false,
            _ => {}
        }
    }
    if let Some(v) = env.get("WOLF_INTERNAL_IP") {
        cfg.network.local_ip = v.to_owned();
    }
    if let Some(v) = env.get("WOLF_INTERNAL_MAC") {
        cfg.network.mac = v.to_owned();
    }
    if let Some(v) = env.get("WOLF_PRIVATE_KEY_FILE") {
        cfg.tls.key_file = v.to_owned();
    }
    if let Some(v) = env.get("WOLF_PRIVATE_CERT_FILE") {
        cfg.tls.cert_file = v.to_owned();
    }
    if let Some(v) = env.get("WOLF_SOCKET_PATH") {
        cfg.api.socket = v.to_owned();
    }
}

/// Where a value came from, for the message: the file key or the env variable that overrode it.
fn origin(env: &Env, var: &str, key: &str) -> String {
    if env.get(var).is_some() { format!("env {var}") } else { key.to_owned() }
}

pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// What `serve` will do with the configured files, checked now (so `check` passing means `serve`
/// starts): each lives in a directory that exists (nothing is created for them, least of all a new
/// identity every client would have to pair with again), an existing one is a regular file with
/// the right content, and key and certificate go together.
fn check_paths(cfg: &Config, key_key: &str, cert_key: &str) -> Vec<(String, String)> {
    use rustls_pki_types::pem::PemObject;
    let mut out = Vec::new();
    let (key, cert) = (cfg.tls.key_file.as_str(), cfg.tls.cert_file.as_str());
    if key.is_empty() != cert.is_empty() {
        let (k, missing) = if key.is_empty() { (key_key, "key_file") } else { (cert_key, "cert_file") };
        out.push((
            k.to_owned(),
            format!("set tls.{missing} too: the key and certificate go together (or leave both empty)"),
        ));
    }
    let file = |key: &str, path: &str, out: &mut Vec<(String, String)>| -> Option<bool> {
        if path.is_empty() {
            return None;
        }
        let p = std::path::Path::new(path);
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            out.push((key.to_owned(), format!("{path:?}: the directory {} does not exist", dir.display())));
            return None;
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_file() => Some(true),
            Ok(_) => {
                out.push((key.to_owned(), format!("{path:?} is not a regular file")));
                None
            }
            Err(_) => Some(false),
        }
    };
    let key_exists = file(key_key, key, &mut out);
    let cert_exists = file(cert_key, cert, &mut out);
    if key_exists == Some(true) && rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(key).is_err() {
        out.push((key_key.to_owned(), format!("{key:?} is not a PKCS#8 PEM private key")));
    }
    if cert_exists == Some(true) && rustls_pki_types::CertificateDer::from_pem_file(cert).is_err() {
        out.push((cert_key.to_owned(), format!("{cert:?} is not a PEM certificate")));
    }
    if cert_exists == Some(true) && key_exists == Some(false) {
        out.push((key_key.to_owned(), format!("{key:?} does not exist but its certificate {cert:?} does; restore it")));
    }
    file("sessions.file", &cfg.sessions.file, &mut out);
    out
}

fn check_rules(cfg: &Config, env: &Env, cx: &mut Ctx<'_>) {
    let mut report = |key: String, msg: String| {
        if key.starts_with("env ") {
            cx.issues.push(ConfigIssue { key, line: None, message: msg });
        } else {
            cx.issue_at(&key, msg);
        }
    };
    if let Some(v) = env.get("WOLF_MDNS")
        && !matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on" | "0" | "false" | "no" | "off")
    {
        report("env WOLF_MDNS".into(), format!("{v:?} is not a boolean; allowed: true or false"));
    }
    let host_key = origin(env, "WOLF_HOSTNAME", "hostname");
    if cfg.hostname.trim().is_empty() || cfg.hostname.len() > 63 {
        report(host_key, "must be 1 to 63 characters".into());
    }
    if !cfg.uuid.is_empty() && uuid::Uuid::parse_str(&cfg.uuid).is_err() {
        report("uuid".into(), format!("{:?} is not a UUID; allowed: empty (generated once) or a UUID", cfg.uuid));
    }
    if cfg.bind_address.parse::<IpAddr>().is_err() {
        report(
            "bind_address".into(),
            format!("{:?} is not an IP address (e.g. \"0.0.0.0\" or \"::\")", cfg.bind_address),
        );
    }
    if let Err(e) = cfg.api.tcp_addr() {
        report("api.tcp".into(), e.to_string());
    }
    let p = &cfg.ports;
    let ports =
        [("ports.http", p.http), ("ports.https", p.https), ("ports.rtsp", p.rtsp), ("health.port", cfg.health.port)];
    let mut seen_tcp = HashSet::new();
    for (k, v) in &ports {
        // 0 picks a free port (tests); only real ports must be distinct.
        if *v != 0 && !seen_tcp.insert(*v) {
            report((*k).into(), format!("port {v} is already used by another TCP listener"));
        }
    }
    if p.stream_sessions == PortRange::Off {
        report(
            "ports.stream_sessions".into(),
            "every session streams from ports of this range: it cannot be off".into(),
        );
    }
    let ip_key = origin(env, "WOLF_INTERNAL_IP", "network.local_ip");
    if !cfg.network.local_ip.is_empty() && cfg.network.local_ip.parse::<Ipv4Addr>().is_err() {
        report(
            ip_key,
            format!("{:?} is not an IPv4 address; allowed: empty (detected) or a.b.c.d", cfg.network.local_ip),
        );
    }
    let mac_key = origin(env, "WOLF_INTERNAL_MAC", "network.mac");
    if !cfg.network.mac.is_empty() && !is_mac(&cfg.network.mac) {
        report(
            mac_key,
            format!("{:?} is not a MAC address; allowed: empty (detected) or aa:bb:cc:dd:ee:ff", cfg.network.mac),
        );
    }
    let positive = |v: u64| v >= 1;
    for (k, v, max) in [
        ("http.request_timeout_ms", cfg.http.request_timeout_ms, 600_000),
        ("tls.permit_wait_timeout_ms", cfg.tls.permit_wait_timeout_ms, 600_000),
        ("tls.handshake_timeout_ms", cfg.tls.handshake_timeout_ms, 600_000),
        ("tls.client_hello_timeout_ms", cfg.tls.client_hello_timeout_ms, 600_000),
        ("pairing.pin_timeout", cfg.pairing.pin_timeout, 3600),
        ("pairing.failure_window_s", cfg.pairing.failure_window_s, 86_400),
        ("pairing.ban_s", cfg.pairing.ban_s, 86_400),
        ("watchdog.interval_ms", cfg.watchdog.interval_ms, 600_000),
        ("supervisor.restart_backoff_ms", cfg.supervisor.restart_backoff_ms, 600_000),
        ("supervisor.max_backoff_ms", cfg.supervisor.max_backoff_ms, 3_600_000),
        ("supervisor.stable_after_s", cfg.supervisor.stable_after_s, 86_400),
        ("supervisor.crash_loop_exits", cfg.supervisor.crash_loop_exits as u64, 1000),
        ("supervisor.crash_loop_window_s", cfg.supervisor.crash_loop_window_s, 86_400),
        ("supervisor.crash_loop_pause_s", cfg.supervisor.crash_loop_pause_s, 86_400),
        ("supervisor.stop_grace_ms", cfg.supervisor.stop_grace_ms, 3_600_000),
        ("sessions.reconcile_timeout_ms", cfg.sessions.reconcile_timeout_ms, 600_000),
        ("sessions.shutdown_timeout_ms", cfg.sessions.shutdown_timeout_ms, 600_000),
        ("sessions.stop_timeout_ms", cfg.sessions.stop_timeout_ms, 600_000),
    ] {
        if !positive(v) || v > max {
            report(k.into(), format!("{v} is out of range; allowed: 1 to {max}"));
        }
    }
    for (k, v) in [
        ("http.max_connections", cfg.http.max_connections),
        ("http.max_connections_per_ip", cfg.http.max_connections_per_ip),
        ("http.max_connections_per_trusted_proxy", cfg.http.max_connections_per_trusted_proxy),
        ("tls.max_concurrent_handshakes", cfg.tls.max_concurrent_handshakes),
        ("tls.max_pending_connections", cfg.tls.max_pending_connections),
    ] {
        if !(1..=1_000_000).contains(&v) {
            report(k.into(), format!("{v} is out of range; allowed: 1 to 1000000"));
        }
    }
    let w = &cfg.watchdog;
    // Accept loops beat every 250 ms; a threshold near that would call them hung.
    if !(500..=3_600_000).contains(&w.warn_after_ms) {
        report(
            "watchdog.warn_after_ms".into(),
            format!("{} is out of range; allowed: 500 to 3600000", w.warn_after_ms),
        );
    }
    if w.warn_after_ms < w.interval_ms {
        report(
            "watchdog.warn_after_ms".into(),
            format!("{} must be at least watchdog.interval_ms ({})", w.warn_after_ms, w.interval_ms),
        );
    }
    if w.exit_after_ms != 0 && w.exit_after_ms <= w.warn_after_ms {
        report(
            "watchdog.exit_after_ms".into(),
            format!(
                "{} must be 0 (never exit) or more than watchdog.warn_after_ms ({})",
                w.exit_after_ms, w.warn_after_ms
            ),
        );
    }
    if cfg.pairing.max_failures == 0 {
        report("pairing.max_failures".into(), "must be at least 1".into());
    }
    for (i, entry) in cfg.pairing.trusted_proxies.iter().enumerate() {
        if super::parse_proxy(entry).is_none() {
            report(
                format!("pairing.trusted_proxies[{i}]"),
                format!("{entry:?} is not an address or a CIDR (e.g. \"10.0.0.7\" or \"10.0.0.0/24\")"),
            );
        }
    }
    let key_key = origin(env, "WOLF_PRIVATE_KEY_FILE", "tls.key_file");
    let cert_key = origin(env, "WOLF_PRIVATE_CERT_FILE", "tls.cert_file");
    for (k, msg) in check_paths(cfg, &key_key, &cert_key) {
        report(k, msg);
    }
    let pin_key = origin(env, "WOLF_PIN", "pairing.pin");
    for pin in &cfg.pairing.pin {
        if !wolf_protocol::pairing::is_valid_pin(pin) {
            report(pin_key.clone(), format!("{pin:?} is not a PIN; allowed: exactly 4 digits"));
        }
    }
    if !super::ENCODERS.contains(&cfg.video.encoder.as_str()) {
        report(
            "video.encoder".into(),
            format!("{:?} is not an encoder; allowed: {}", cfg.video.encoder, super::ENCODERS.join(", ")),
        );
    }
    if cfg.apps.is_empty() {
        report("apps".into(), "at least one [[apps]] entry is needed".into());
    }
    let mut ids = HashSet::new();
    let mut titles = HashSet::new();
    for (i, app) in cfg.apps.iter().enumerate() {
        if app.title.trim().is_empty() {
            report(format!("apps.{i}.title"), "must not be empty".into());
        } else if !titles.insert(app.title.clone()) {
            report(format!("apps.{i}.title"), format!("{:?} is used by another app; titles must be unique", app.title));
        }
        if app.id == 0 || app.id > i32::MAX as u32 {
            report(format!("apps.{i}.id"), format!("{} is out of range; allowed: 1 to {}", app.id, i32::MAX));
        } else if !ids.insert(app.id) {
            report(format!("apps.{i}.id"), format!("{} is used by another app; ids must be unique", app.id));
        }
        match app.runner.kind {
            RunnerKind::Process if app.runner.command.is_empty() => report(
                format!("apps.{i}.runner.command"),
                "a process runner needs a command, e.g. [\"/usr/bin/game\"]".into(),
            ),
            RunnerKind::Docker if app.runner.image.trim().is_empty() => {
                report(format!("apps.{i}.runner.image"), "a docker runner needs an image".into())
            }
            _ => {}
        }
        let d = &app.display;
        if d.kind == super::DisplayKind::Virtual {
            if d.command.is_empty() {
                report(format!("apps.{i}.display.command"), "the X server command must not be empty".into());
            }
            if d.resize && (d.max_width == 0 || d.max_height == 0 || d.max_width > 16384 || d.max_height > 16384) {
                report(format!("apps.{i}.display.max_width"), "max_width and max_height: 1 to 16384".into());
            }
            if (d.width == 0) != (d.height == 0) || d.width > 16384 || d.height > 16384 {
                report(
                    format!("apps.{i}.display.width"),
                    "set both width and height (1 to 16384), or neither for the client's mode".into(),
                );
            }
        }
    }
    let desk = &cfg.desktop;
    if desk.max_displays == 0
        || desk.max_displays > 10_000
        || desk.first_display.saturating_add(desk.max_displays) > 65_535
    {
        report(
            "desktop.max_displays".into(),
            "allowed: 1 to 10000, and first_display + max_displays at most 65535".into(),
        );
    }
    if desk.pulseaudio.is_empty() {
        report("desktop.pulseaudio".into(), "the PulseAudio command must not be empty".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(text: &str) -> Vec<ConfigIssue> {
        parse(text, &Env::default()).expect_err("should be invalid")
    }

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(parse("", &Env::default()).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_reported_with_line_and_allowed_keys() {
        let found = issues("hostname = \"a\"\n[tls]\nmax_concurent_handshakes = 4\n[bogus]\nx = 1\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].key, "bogus");
        assert_eq!(found[0].line, Some(4));
        let tls = found.iter().find(|i| i.key == "tls.max_concurent_handshakes").unwrap();
        assert_eq!(tls.line, Some(3));
        assert!(tls.message.contains("max_concurrent_handshakes"), "{}", tls.message);
    }

    #[test]
    fn every_bad_value_is_reported() {
        let text = "[ports]\nhttp = \"x\"\n[tls]\nmax_concurrent_handshakes = 0\n[pairing]\npin = [\"12a4\"]\n\
                    [[apps]]\ntitle = \"A\"\nid = 1\n[[apps]]\ntitle = \"B\"\nid = 1\n";
        let found = issues(text);
        let keys: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert!(keys.contains(&("ports.http", Some(2))), "{found:?}");
        assert!(keys.contains(&("tls.max_concurrent_handshakes", Some(4))), "{found:?}");
        assert!(keys.contains(&("pairing.pin", Some(6))), "{found:?}");
        assert!(keys.contains(&("apps.1.id", Some(12))), "{found:?}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let found = issues("hostname = \"a\"\n[tls\n");
        assert_eq!(found[0].line, Some(2));
    }

    #[test]
    fn files_are_checked_as_serve_will_use_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let issues = |toml: &str| -> Vec<String> {
            match parse(toml, &Env::default()) {
                Ok(_) => Vec::new(),
                Err(i) => i.into_iter().map(|i| format!("{}: {}", i.key, i.message)).collect(),
            }
        };
        let missing_dir = issues(&format!("[tls]\nkey_file = \"{d}/no/key.pem\"\ncert_file = \"{d}/no/cert.pem\"\n"));
        assert!(
            missing_dir.iter().any(|i| i.starts_with("tls.key_file") && i.contains("does not exist")),
            "{missing_dir:?}"
        );
        std::fs::write(dir.path().join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let passwd = issues(&format!("[tls]\nkey_file = \"{d}/passwd\"\ncert_file = \"{d}/passwd\"\n"));
        assert!(passwd.iter().any(|i| i.contains("not a PKCS#8 PEM private key")), "{passwd:?}");
        assert!(passwd.iter().any(|i| i.contains("not a PEM certificate")), "{passwd:?}");
        let alone = issues(&format!("[tls]\nkey_file = \"{d}/key.pem\"\n"));
        assert!(alone.iter().any(|i| i.contains("set tls.cert_file too")), "{alone:?}");
        let dir_as_file = issues("[sessions]\nfile = \"/tmp\"\n");
        assert!(
            dir_as_file.iter().any(|i| i.starts_with("sessions.file") && i.contains("not a regular file")),
            "{dir_as_file:?}"
        );
        // Files that do not exist yet in a directory that does: made at the first start.
        assert!(issues(&format!("[tls]\nkey_file = \"{d}/key.pem\"\ncert_file = \"{d}/cert.pem\"\n")).is_empty());
    }

    #[test]
    fn env_overrides_the_file_and_is_validated() {
        let mut env = Env::default();
        env.vars.insert("WOLF_PIN".into(), "1234, 5678".into());
        env.vars.insert("WOLF_HOSTNAME".into(), "from-env".into());
        let cfg = parse("hostname = \"file\"\n[pairing]\npin = [\"0000\"]\n", &env).unwrap();
        assert_eq!(cfg.hostname, "from-env");
        assert_eq!(cfg.pairing.pin, vec!["1234", "5678"]);
        env.vars.insert("WOLF_PIN".into(), "12".into());
        let found = parse("", &env).unwrap_err();
        assert_eq!(found[0].key, "env WOLF_PIN");
    }
}
