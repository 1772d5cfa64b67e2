//! One function per GameStream endpoint. Handlers are thin: parse the query, call protocol code,
//! answer XML. Errors are XML with a status_code and a message, never a panic or a reset.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::HostContext;
use super::pairing::{BeginError, PairingManager, Source, SubmitError};
use crate::runners::RunnerHandle;
use crate::sessions::{LaunchError, Mode, RtspProgress, Session, SessionPorts, SessionState};
use crate::state::clients::PairedClient;
use wolf_protocol::pairing::{CertInfo, PairError, PairingSession, is_valid_pin, sha256};
use wolf_protocol::xml;

pub type Body = Full<Bytes>;

/// Longest `uniqueid` / `devicename` kept (clients send 16 and short names).
const MAX_ID_LEN: usize = 64;

/// What a handler knows about the connection it answers.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// `Some` on HTTPS: the client's certificate fingerprint (hex), if it sent one.
    pub tls: Option<Option<String>>,
}

impl Conn {
    fn ip(&self) -> IpAddr {
        self.peer.ip().to_canonical()
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn xml_ok(body: String) -> Response<Body> {
    respond(StatusCode::OK, "application/xml", body)
}

/// An XML error. HTTP status stays 200 so clients read `status_message` (curl's FAILONERROR would
/// hide it).
fn xml_err(code: u16, query: &str, message: &str) -> Response<Body> {
    xml_ok(xml::error(code, query, message))
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body.into())
}

fn params(req: &Request<Incoming>) -> HashMap<String, String> {
    parse_query(req.uri().query().unwrap_or(""))
}

/// A request's query string as its parameters, percent-decoded; the first of repeated names wins.
pub fn parse_query(query: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// Step 1 of pairing, the one request allowed to wait (for the PIN) longer than request_timeout.
pub(crate) fn waits_for_pin(path: &str, q: &HashMap<String, String>) -> bool {
    path == "/pair" && (q.get("phrase").map(String::as_str) == Some("getservercert") || q.contains_key("salt"))
}

/// Entry point for both ports. Every handler but pairing step 1 is bounded by request_timeout
/// (reading a body included); step 1 is bounded by the PIN timeout.
pub async fn handle(ctx: Arc<HostContext>, conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let q = params(&req);
    let method = req.method().clone();
    if waits_for_pin(&path, &q) {
        return route(&ctx, &conn, req, &q, &method, &path).await;
    }
    let limit = Duration::from_millis(ctx.config.http.request_timeout_ms);
    match tokio::time::timeout(limit, route(&ctx, &conn, req, &q, &method, &path)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(peer = %conn.peer, %path, "request took longer than request_timeout_ms; answered 503");
            respond(StatusCode::SERVICE_UNAVAILABLE, "application/xml", xml::error(503, &path, "The request timed out"))
        }
    }
}

async fn route(
    ctx: &Arc<HostContext>,
    conn: &Arc<Conn>,
    req: Request<Incoming>,
    q: &HashMap<String, String>,
    method: &Method,
    path: &str,
) -> Response<Body> {
    let (ctx, conn, q, path) = (ctx.clone(), conn.clone(), q.clone(), path.to_owned());
    let method = method.clone();
    let resp = match (&conn.tls, &method, path.as_str()) {
        (None, &Method::GET, "/serverinfo") => serverinfo(&ctx, &conn, None),
        (None, &Method::GET, "/pair") => pair(&ctx, &conn, &q, &path).await,
        (None, &Method::GET, "/unpair") => unpair_http(&ctx, &conn, &q, &path),
        (None, &Method::GET, "/pin" | "/pin/") => respond(StatusCode::OK, "text/html; charset=utf-8", PIN_PAGE),
        (None, &Method::POST, "/pin" | "/pin/") => submit_pin(&ctx, req).await,
        (Some(fp), _, _) => {
            let client = fp.as_deref().and_then(|f| ctx.clients.get(f));
            match client {
                None => xml_ok(xml::unauthorized(&path)),
                Some(client) => https(&ctx, &conn, &client, &method, &path, &q).await,
            }
        }
        (None, _, _) => respond(StatusCode::NOT_FOUND, "application/xml", xml::error(404, &path, "Not found")),
    };
    tracing::debug!(peer = %conn.peer, %method, %path, status = resp.status().as_u16(), "request");
    resp
}

async fn https(
    ctx: &HostContext,
    conn: &Conn,
    client: &PairedClient,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
) -> Response<Body> {
    if method != Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "application/xml", xml::error(405, path, "Use GET"));
    }
    match path {
        "/serverinfo" => serverinfo(ctx, conn, Some(client)),
        "/pair" => match q.get("phrase").map(String::as_str) {
            Some("pairchallenge") => xml_ok(xml::ok(&[("paired", "1")])),
            _ => pair(ctx, conn, q, path).await,
        },
        "/unpair" => {
            let fp = client.fingerprint.clone();
            match ctx.clients.remove_where(|c| c.fingerprint == fp).await {
                Ok(_) => {
                    tracing::info!(client = %client.name, fingerprint = %fp, "client unpaired");
                    xml_ok(xml::ok(&[]))
                }
                Err(e) => {
                    tracing::error!(error = %e, "unpair could not be saved");
                    xml_err(500, path, "The pairing could not be removed from disk")
                }
            }
        }
        "/applist" => {
            let apps = ctx.apps.list();
            xml_ok(xml::applist(apps.iter().map(|a| (a.title.as_str(), a.id))))
        }
        "/launch" => launch(ctx, conn, client, q, path).await,
        "/resume" => resume(ctx, conn, client, q, path).await,
        "/cancel" => {
            if let Some(s) = ctx.sessions.for_client(&client.fingerprint)
                && ctx.ender.end(s.id, crate::commands::EndReason::Cancelled).is_some()
            {
                tracing::info!(session = s.id, app = s.app_id, client = %client.name, "session cancelled");
            }
            xml_ok(xml::ok(&[("cancel", "1")]))
        }
        "/appasset" => {
            let id = q.get("appid").and_then(|v| v.parse::<u32>().ok());
            match id.and_then(|id| ctx.apps.icon(id)) {
                Some(png) => respond(StatusCode::OK, "image/png", png),
                None => xml_err(404, path, "No such app; appid must be the ID of an app in /applist"),
            }
        }
        _ => respond(StatusCode::NOT_FOUND, "application/xml", xml::error(404, path, "Not found")),
    }
}

fn serverinfo(ctx: &HostContext, conn: &Conn, client: Option<&PairedClient>) -> Response<Body> {
    let session = match client {
        Some(c) => ctx.sessions.for_client(&c.fingerprint),
        None => ctx.sessions.for_ip(conn.ip()),
    };
    let uuid = ctx.uuid.to_string();
    let local_ip = ctx.net.local_ip.to_string();
    xml_ok(xml::serverinfo(&xml::ServerInfo {
        hostname: &ctx.config.hostname,
        uniqueid: &uuid,
        https_port: ctx.https_port,
        http_port: ctx.http_port,
        hevc: ctx.hevc,
        mac: if client.is_some() { &ctx.net.mac } else { "00:00:00:00:00:00" },
        local_ip: &local_ip,
        gpu_type: &ctx.gpu_type,
        paired: client.is_some(),
        current_game: session.as_ref().map_or(0, |s| s.app_id),
        busy: session.is_some(),
    }))
}

/// A refused pairing step; it counts against `source` when there is one to blame.
fn pair_error_reply(ctx: &HostContext, source: Option<&Source>, path: &str, e: &PairError) -> Response<Body> {
    ctx.metrics.pairing("error");
    if let Some(source) = source
        && ctx.pairing.record_failure(source)
    {
        tracing::warn!(%source, "too many failed pairings: refusing it for {} s", ctx.pairing.limits.ban.as_secs());
    }
    tracing::info!(?source, error = %e, "pairing step refused");
    xml_err(400, path, &e.to_string())
}

fn banned_reply(ctx: &HostContext, source: &Source, path: &str) -> Option<Response<Body>> {
    let left = ctx.pairing.banned_for(source)?;
    ctx.metrics.pairing("banned");
    Some(xml_err(429, path, &format!("Too many failed pairing attempts from this {source}; try again in {left} s")))
}

async fn pair(ctx: &HostContext, conn: &Conn, q: &HashMap<String, String>, path: &str) -> Response<Body> {
    let ip = conn.ip();
    let Some(uniqueid) = q.get("uniqueid").filter(|u| !u.is_empty()) else {
        return xml_err(400, path, "Missing uniqueid");
    };
    if uniqueid.len() > MAX_ID_LEN || q.get("devicename").is_some_and(|d| d.len() > MAX_ID_LEN) {
        return xml_err(400, path, &format!("uniqueid and devicename must be at most {MAX_ID_LEN} characters"));
    }
    // Behind a trusted proxy the address is everyone's: only certificates are banned there.
    let proxied = ctx.trusted.contains(ip);
    if !proxied && let Some(refused) = banned_reply(ctx, &Source::addr(ip), path) {
        return refused;
    }
    let key = PairingManager::key(uniqueid, ip);
    let server = &ctx.identity.pairing;
    if q.get("phrase").map(String::as_str) == Some("getservercert") || q.contains_key("salt") {
        return pair_step1(ctx, conn, q, path, uniqueid, proxied).await;
    }
    let source = ctx.pairing.source_of(&key);
    let source = source.as_ref();
    // Not counted as a failed pairing: it guesses nothing, and under one address it may be another
    // client's late step (the count is for wrong PINs).
    let no_pairing = |step: &str| {
        ctx.metrics.pairing("error");
        xml_err(400, path, &format!("Out of order call to {step}: no pairing in progress for this client"))
    };
    if let Some(v) = q.get("clientchallenge") {
        return match ctx.pairing.step(&key, |s| s.client_challenge(server, v)) {
            None => no_pairing("clientchallenge"),
            Some(Err(e)) => pair_error_reply(ctx, source, path, &e),
            Some(Ok(resp)) => xml_ok(xml::ok(&[("paired", "1"), ("challengeresponse", &resp)])),
        };
    }
    if let Some(v) = q.get("serverchallengeresp") {
        return match ctx.pairing.step(&key, |s| s.server_challenge_resp(server, v)) {
            None => no_pairing("serverchallengeresp"),
            Some(Err(e)) => pair_error_reply(ctx, source, path, &e),
            Some(Ok(secret)) => xml_ok(xml::ok(&[("pairingsecret", &secret), ("paired", "1")])),
        };
    }
    if let Some(v) = q.get("clientpairingsecret") {
        let outcome =
            ctx.pairing.with_session(&key, |s| (s.client_pairing_secret(v).map(|ok| (ok, s.client.clone())), false));
        return match outcome {
            None => no_pairing("clientpairingsecret"),
            Some(Err(e)) => pair_error_reply(ctx, source, path, &e),
            Some(Ok((false, _))) => {
                ctx.metrics.pairing("wrong_pin");
                if let Some(source) = source {
                    ctx.pairing.record_failure(source);
                }
                tracing::warn!(%ip, %uniqueid, "pairing failed: wrong PIN or bad client signature");
                xml_ok(xml::ok(&[("paired", "0")]))
            }
            Some(Ok((true, cert))) => finish_pairing(ctx, conn, q, path, uniqueid, cert).await,
        };
    }
    xml_err(
        400,
        path,
        "Unknown pairing request: expected getservercert, clientchallenge, serverchallengeresp, clientpairingsecret or pairchallenge",
    )
}

async fn pair_step1(
    ctx: &HostContext,
    conn: &Conn,
    q: &HashMap<String, String>,
    path: &str,
    uniqueid: &str,
    proxied: bool,
) -> Response<Body> {
    let ip = conn.ip();
    let (Some(salt), Some(cert_hex)) = (q.get("salt"), q.get("clientcert")) else {
        return xml_err(400, path, "getservercert needs salt and clientcert");
    };
    // Behind a trusted proxy nothing unparsable is blamed on the proxy's address.
    let addr = (!proxied).then(|| Source::addr(ip));
    let mut session = match PairingSession::start(salt, cert_hex) {
        Ok(s) => s,
        Err(e) => return pair_error_reply(ctx, addr.as_ref(), path, &e),
    };
    let source = match addr {
        Some(a) => a,
        None => Source::Cert(fingerprint(&session.client.der)),
    };
    if proxied && let Some(refused) = banned_reply(ctx, &source, path) {
        return refused;
    }
    let device = q.get("devicename").map_or("", String::as_str);
    let fixed = ctx.config.pairing.fixed_pin().map(str::to_owned);
    if let Some(pin) = &fixed
        && let Err(e) = session.set_pin(pin)
    {
        return pair_error_reply(ctx, Some(&source), path, &e);
    }
    let secret = match wolf_protocol::pairing::random16() {
        Ok(b) => hex::encode(b),
        Err(e) => return xml_err(500, path, &e.to_string()),
    };
    let key = PairingManager::key(uniqueid, ip);
    // Another pairing under this key (a gateway pairing many identities, all with Moonlight's one
    // uniqueid) goes first; this one waits its turn instead of overwriting it.
    let client_der = session.client.der.clone();
    let turn = match ctx.pairing.take_turn(uniqueid, ip, &client_der, ctx.pairing.limits.pin_timeout).await {
        Ok(t) => t,
        Err(_) => {
            ctx.metrics.pairing("refused");
            return xml_err(503, path, "Another pairing from this client is still in progress; try again shortly");
        }
    };
    let (rx, guard) = match ctx.pairing.begin(turn, source.clone(), device, session, secret.clone(), fixed.is_none()) {
        Ok(x) => x,
        Err(BeginError::TooManyFromIp) => {
            ctx.metrics.pairing("refused");
            return xml_err(503, path, "Too many pairings in progress from this address; finish or cancel one");
        }
        Err(BeginError::TooMany | BeginError::Busy) => {
            ctx.metrics.pairing("refused");
            return xml_err(503, path, "Too many pairings in progress; try again shortly");
        }
    };
    if let Some(rx) = rx {
        tracing::warn!(
            %ip, device, "pairing waits for its PIN: open http://{}:{}/pin/#{secret} or run `wolf-rs pair <PIN>`",
            ctx.net.local_ip, ctx.http_port
        );
        ctx.events.publish(crate::events::Event::PairSignal {
            client_ip: ip.to_string(),
            host_ip: ctx.net.local_ip.to_string(),
        });
        let pin = match tokio::time::timeout(ctx.pairing.limits.pin_timeout, rx).await {
            Ok(Ok(pin)) => pin,
            Ok(Err(_)) => {
                return xml_err(400, path, "The pairing was replaced or cancelled before the PIN arrived");
            }
            Err(_) => {
                drop(guard);
                ctx.metrics.pairing("timeout");
                ctx.pairing.record_failure(&source);
                let secs = ctx.pairing.limits.pin_timeout.as_secs();
                tracing::warn!(%ip, device, "pairing discarded: no PIN within {secs} s");
                return xml_err(408, path, &format!("No PIN was entered within {secs} s"));
            }
        };
        match ctx.pairing.step(&key, |s| s.set_pin(&pin)) {
            Some(Ok(())) => {}
            Some(Err(e)) => return pair_error_reply(ctx, Some(&source), path, &e),
            None => return xml_err(400, path, "The pairing was discarded before the PIN arrived"),
        }
    }
    guard.disarm();
    let plaincert = hex::encode(ctx.identity.cert_pem.as_bytes());
    xml_ok(xml::ok(&[("paired", "1"), ("plaincert", &plaincert)]))
}

async fn finish_pairing(
    ctx: &HostContext,
    conn: &Conn,
    q: &HashMap<String, String>,
    path: &str,
    uniqueid: &str,
    cert: CertInfo,
) -> Response<Body> {
    let name = q.get("devicename").cloned().unwrap_or_else(|| "Moonlight".into());
    let client = PairedClient {
        fingerprint: cert.fingerprint_hex(),
        cert_pem: cert.pem,
        name,
        uniqueid: uniqueid.to_owned(),
        ip: conn.ip().to_string(),
        paired_at: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    let (fp, name, pem) = (client.fingerprint.clone(), client.name.clone(), client.cert_pem.clone());
    match ctx.clients.add(client).await {
        Ok(()) => {
            ctx.metrics.pairing("paired");
            tracing::info!(client = %name, fingerprint = %fp, ip = %conn.ip(), "client paired");
            ctx.events.publish(crate::events::Event::ClientPaired {
                client_id: crate::events::wolf_client_id(&pem),
                name,
                client_ip: conn.ip().to_string(),
            });
            xml_ok(xml::ok(&[("paired", "1")]))
        }
        Err(e) => {
            ctx.metrics.pairing("error");
            tracing::error!(error = %e, "pairing succeeded but could not be saved");
            xml_err(500, path, "The pairing could not be saved on the host")
        }
    }
}

/// Plain-HTTP `/unpair` carries no certificate, and every Moonlight client sends the same
/// uniqueid (and calls it after any failed pairing), so it only ends this client's pending
/// pairing. Paired clients are removed over HTTPS (their own certificate) or by the operator.
fn unpair_http(ctx: &HostContext, conn: &Conn, q: &HashMap<String, String>, path: &str) -> Response<Body> {
    let Some(uniqueid) = q.get("uniqueid").filter(|u| !u.is_empty()) else {
        return xml_err(400, path, "Missing uniqueid");
    };
    if ctx.pairing.discard(&PairingManager::key(uniqueid, conn.ip())) {
        tracing::info!(ip = %conn.ip(), %uniqueid, "pending pairing discarded by /unpair");
    }
    xml_ok(xml::ok(&[]))
}

#[derive(serde::Deserialize)]
struct PinForm {
    pin: String,
    secret: String,
}

async fn submit_pin(ctx: &HostContext, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), 4096).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "The body must be JSON {\"pin\", \"secret\"} under 4 KiB");
        }
    };
    let form: PinForm = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Expected JSON {{\"pin\": \"1234\", \"secret\": \"...\"}}: {e}"),
            );
        }
    };
    if !is_valid_pin(&form.pin) {
        return text(StatusCode::BAD_REQUEST, "The PIN must be exactly 4 digits");
    }
    match ctx.pairing.submit_pin(Some(&form.secret), form.pin) {
        Ok(()) => text(StatusCode::OK, "PIN handed to the pairing: the client shows whether it matched"),
        Err(_) => text(StatusCode::NOT_FOUND, "No pairing is waiting for this link; start pairing on the client again"),
    }
}

/// `submit_pin` for the admin socket: no secret needed when exactly one pairing waits.
pub fn submit_pin_admin(ctx: &HostContext, pin: &str, secret: Option<&str>) -> Result<(), String> {
    if !is_valid_pin(pin) {
        return Err("The PIN must be exactly 4 digits".into());
    }
    ctx.pairing.submit_pin(secret, pin.to_owned()).map_err(|e| match e {
        SubmitError::UnknownSecret => "No pairing waits under that secret".to_owned(),
        SubmitError::NoneWaiting => "No pairing is waiting for a PIN; start pairing on the client first".to_owned(),
        SubmitError::Ambiguous(n) => {
            format!("{n} pairings are waiting; pass --secret (see the log or `wolf-rs pair --list`)")
        }
    })
}

pub(crate) fn rikey(q: &HashMap<String, String>) -> Result<([u8; 16], i32), &'static str> {
    let key = q.get("rikey").ok_or("Missing rikey")?;
    let key: [u8; 16] =
        hex::decode(key).ok().and_then(|k| k.try_into().ok()).ok_or("rikey must be 32 hex characters")?;
    let id = q.get("rikeyid").ok_or("Missing rikeyid")?;
    // Clients send it as a signed or unsigned 32-bit decimal.
    let id = id
        .parse::<i32>()
        .or_else(|_| id.parse::<u32>().map(|u| u as i32))
        .map_err(|_| "rikeyid must be a 32-bit integer")?;
    Ok((key, id))
}

/// Does the client encrypt RTSP? Moonlight sends `corever=1` when it can, and then encrypts every
/// RTSP message with the rikey if `sessionUrl0` says `rtspenc://`.
pub(crate) fn rtsp_encrypted(q: &HashMap<String, String>) -> bool {
    q.get("corever").and_then(|v| v.parse::<u32>().ok()).is_some_and(|v| v >= 1)
}

/// `sessionUrl0`: encrypted RTSP on the shared port (the key finds the session), plain RTSP on the
/// session's own port when one is free (else the shared port, which finds it by address).
fn session_url(ctx: &HostContext, conn: &Conn, session_id: u32, encrypted: bool) -> String {
    let scheme = if encrypted { "rtspenc" } else { "rtsp" };
    let port = if encrypted { None } else { ctx.rtsp_ports.port_for(session_id) };
    let port = port.unwrap_or(ctx.rtsp_port);
    match conn.local.ip().to_canonical() {
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
    }
}

async fn launch(
    ctx: &HostContext,
    conn: &Conn,
    client: &PairedClient,
    q: &HashMap<String, String>,
    path: &str,
) -> Response<Body> {
    let failed = |reason: &str, code: u16, msg: &str| {
        ctx.metrics.launch_failed(reason);
        xml_err(code, path, msg)
    };
    if ctx.shutdown.is_cancelled() {
        return failed("draining", 503, "The host is shutting down; launch again once it is back");
    }
    let Some(app_id) = q.get("appid").and_then(|v| v.parse::<u32>().ok()) else {
        return failed("bad_request", 400, "Missing or malformed appid");
    };
    let Some(app) = ctx.apps.get(app_id) else {
        return failed("unknown_app", 404, &format!("No app with ID {app_id}; see /applist"));
    };
    let Some(mode) = q.get("mode").and_then(|m| Mode::parse(m)) else {
        return failed("bad_request", 400, "Missing or malformed mode; expected WIDTHxHEIGHTxFPS");
    };
    let (rikey, rikeyid) = match rikey(q) {
        Ok(k) => k,
        Err(msg) => return failed("bad_request", 400, msg),
    };
    let surround = q.get("surroundAudioInfo").and_then(|v| v.parse::<u32>().ok()).unwrap_or(196_610);
    let encrypted = rtsp_encrypted(q);
    let request = LaunchRequest { client, client_ip: conn.ip(), app: &app, mode, rikey, rikeyid, surround, encrypted };
    match launch_session(ctx, request).await {
        Ok(s) => {
            let url = session_url(ctx, conn, s.id, encrypted);
            xml_ok(xml::ok(&[("sessionUrl0", &url), ("gamesession", "1")]))
        }
        Err(LaunchError::Store(_)) => xml_err(
            500,
            path,
            "The host could not save the session (its state directory is not writable); see the host log",
        ),
        Err(LaunchError::Runner { message, .. }) => xml_err(500, path, &message),
        Err(LaunchError::AlreadyRunning { app_id }) => {
            xml_err(400, path, &format!("App {app_id} is already running for this client; resume or quit it first"))
        }
    }
}

/// What a launch asks for, from `/launch` or the API's `sessions/add`.
pub struct LaunchRequest<'a> {
    pub client: &'a PairedClient,
    pub client_ip: IpAddr,
    pub app: &'a crate::config::App,
    pub mode: Mode,
    pub rikey: [u8; 16],
    pub rikeyid: i32,
    pub surround: u32,
    /// The client encrypts RTSP (`corever` >= 1).
    pub encrypted: bool,
}

/// A new session for the client, its app started and saved; counted, logged and announced.
pub async fn launch_session(ctx: &HostContext, r: LaunchRequest<'_>) -> Result<Session, LaunchError> {
    let session = Session {
        id: 0,
        client_fingerprint: r.client.fingerprint.clone(),
        client_ip: r.client_ip,
        app_id: r.app.id,
        mode: r.mode,
        rikey: r.rikey,
        rikeyid: r.rikeyid,
        surround_audio_info: r.surround,
        created: SystemTime::now(),
        updated: SystemTime::now(),
        state: SessionState::Launching,
        runner: RunnerHandle::None,
        display: None,
        sink: None,
        ports: SessionPorts {
            rtsp: ctx.rtsp_port,
            video: ctx.video_port,
            audio: ctx.audio_port,
            control: ctx.control_port,
        },
        rtsp: RtspProgress { encrypted: r.encrypted, ..RtspProgress::default() },
        lobby: None,
    };
    let launched = match ctx.sessions.launch(session).await {
        Ok(s) => start_app(ctx, s, r.app).await,
        Err(e) => Err(e),
    };
    let client_id = crate::events::wolf_client_id(&r.client.cert_pem);
    match &launched {
        Ok(s) => {
            ctx.metrics.sessions_created.inc();
            tracing::info!(session = s.id, app = %r.app.title, client = %r.client.name, mode = ?s.mode, "session launched");
            ctx.events.publish(crate::events::Event::StreamSession(crate::events::StreamSession::of(s, client_id)));
        }
        Err(e) => {
            ctx.metrics.launch_failed(e.reason());
            match e {
                LaunchError::Store(e) => tracing::error!(error = %e, "launch refused: the session could not be saved"),
                LaunchError::Runner { part, message } => {
                    tracing::error!(error = %message, part, app = %r.app.title, "launch failed: the session did not start")
                }
                LaunchError::AlreadyRunning { .. } => {}
            }
            ctx.events.publish(crate::events::Event::SessionFailed {
                client_id,
                app_id: r.app.id.to_string(),
                reason: e.reason().to_owned(),
            });
        }
    }
    launched
}

/// Start the session's display, sink and app and save their handles; on failure the session is
/// taken back out.
async fn start_app(ctx: &HostContext, s: Session, app: &crate::config::App) -> Result<Session, LaunchError> {
    let spec = crate::runners::LaunchSpec {
        session_id: s.id,
        app,
        mode: s.mode,
        client: &s.client_fingerprint,
        channels: s.channels(),
    };
    let parts = match ctx.runners.start_session(&spec).await {
        Ok(p) => p,
        Err(f) => {
            ctx.sessions.remove_by_id(s.id);
            return Err(LaunchError::Runner { part: f.part.as_str(), message: f.error.to_string() });
        }
    };
    let saved = ctx
        .sessions
        .update_by_id_saved(s.id, |s| {
            s.runner = parts.app.clone();
            s.display = parts.display.clone();
            s.sink = parts.sink.clone();
            s.enter(SessionState::Paused);
            s.clone()
        })
        .await;
    match saved {
        Ok(Some(s)) => Ok(s),
        Ok(None) => {
            if let Err(stop) = ctx.runners.stop_session(s.id, &parts).await {
                tracing::error!(error = %stop, "stopping the app of a session that ended while it started");
            }
            Err(LaunchError::Runner { part: "runner", message: "the session ended while its app started".into() })
        }
        Err(e) => {
            // Not on disk: a crash now would leak the app, so stop it before refusing.
            if let Err(stop) = ctx.runners.stop_session(s.id, &parts).await {
                tracing::error!(error = %stop, "stopping an app whose session could not be saved");
            }
            ctx.sessions.remove_by_id(s.id);
            Err(LaunchError::Store(e))
        }
    }
}

async fn resume(
    ctx: &HostContext,
    conn: &Conn,
    client: &PairedClient,
    q: &HashMap<String, String>,
    path: &str,
) -> Response<Body> {
    let (rikey, rikeyid) = match rikey(q) {
        Ok(k) => k,
        Err(msg) => return xml_err(400, path, msg),
    };
    let encrypted = rtsp_encrypted(q);
    let mode = q.get("mode").and_then(|m| Mode::parse(m));
    // A display that follows the client's mode is set to the new one while nothing captures it.
    let mut display = None;
    if let (Some(s), Some(mode)) = (ctx.sessions.for_client(&client.fingerprint), mode)
        && let Some(d) = &s.display
        && mode != s.mode
        && s.state == SessionState::Paused
        && ctx.apps.get(s.app_id).is_some_and(|a| a.display.resize)
    {
        match ctx.runners.resize_display(d, mode).await {
            Ok(resized) => display = Some(resized),
            Err(e) => tracing::warn!(session = s.id, error = %e, "the display keeps its size; the stream is scaled"),
        }
    }
    match ctx.sessions.resume(&client.fingerprint, rikey, rikeyid, encrypted, mode, display) {
        Some(s) => {
            tracing::info!(session = s.id, client = %client.name, mode = %s.mode, "session resumed");
            let url = session_url(ctx, conn, s.id, encrypted);
            xml_ok(xml::ok(&[("sessionUrl0", &url), ("resume", "1")]))
        }
        None => xml_err(503, path, "No running app to resume; launch one"),
    }
}

const PIN_PAGE: &str = include_str!("pin_page.html");

/// Fingerprint (hex SHA-256 of the DER) of a TLS peer certificate.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(sha256(&[der]))
}

/// How long a connection may live on each port (headers + handler + writing the reply).
pub fn connection_deadline(request_timeout: Duration, pin_timeout: Option<Duration>) -> Duration {
    request_timeout * 2 + pin_timeout.unwrap_or_default()
}
