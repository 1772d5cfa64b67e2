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

use super::Context;
use crate::host::launch::{BadRequest, LaunchError, LaunchRequest, ResumeParams, StreamParams};
use crate::host::pairing::{BeginError, PairingManager, Source};
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
pub async fn handle(ctx: Arc<Context>, conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
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
    ctx: &Arc<Context>,
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
            let client = fp.as_deref().and_then(|f| ctx.host.clients.get(f));
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
    ctx: &Context,
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
            match ctx.host.clients.remove_where(|c| c.fingerprint == fp).await {
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
            let apps = ctx.host.apps.list();
            xml_ok(xml::applist(apps.iter().map(|a| (a.title.as_str(), a.id))))
        }
        "/launch" => launch(ctx, conn, client, q, path).await,
        "/resume" => resume(ctx, conn, client, q, path).await,
        "/cancel" => {
            // Answered once the end is on disk: a crash after this never brings the session back.
            if let Some(s) = ctx.host.cancel_for_client(&client.fingerprint).await {
                tracing::info!(session = s.id, app = s.app_id, client = %client.name, "session cancelled");
            }
            xml_ok(xml::ok(&[("cancel", "1")]))
        }
        "/appasset" => {
            let id = q.get("appid").and_then(|v| v.parse::<u32>().ok());
            match id.and_then(|id| ctx.host.apps.icon(id)) {
                Some(png) => respond(StatusCode::OK, "image/png", png),
                None => xml_err(404, path, "No such app; appid must be the ID of an app in /applist"),
            }
        }
        _ => respond(StatusCode::NOT_FOUND, "application/xml", xml::error(404, path, "Not found")),
    }
}

fn serverinfo(ctx: &Context, conn: &Conn, client: Option<&PairedClient>) -> Response<Body> {
    let session = match client {
        Some(c) => ctx.host.sessions.for_client(&c.fingerprint),
        None => ctx.host.sessions.for_ip(conn.ip()),
    };
    let uuid = ctx.uuid.to_string();
    let local_ip = ctx.net.local_ip.to_string();
    xml_ok(xml::serverinfo(&xml::ServerInfo {
        hostname: &ctx.config.hostname,
        uniqueid: &uuid,
        https_port: ctx.host.ports.https,
        http_port: ctx.host.ports.http,
        hevc: ctx.encoder.hevc.is_some(),
        mac: if client.is_some() { &ctx.net.mac } else { "00:00:00:00:00:00" },
        local_ip: &local_ip,
        gpu_type: ctx.encoder.h264.name,
        paired: client.is_some(),
        current_game: session.as_ref().map_or(0, |s| s.app_id),
        busy: session.is_some(),
    }))
}

/// A refused pairing step; it counts against `source` when there is one to blame.
fn pair_error_reply(ctx: &Context, source: Option<&Source>, path: &str, e: &PairError) -> Response<Body> {
    ctx.host.metrics.pairing("error");
    if let Some(source) = source
        && ctx.host.pairing.record_failure(source)
    {
        tracing::warn!(%source, "too many failed pairings: refusing it for {} s", ctx.host.pairing.limits.ban.as_secs());
    }
    tracing::info!(?source, error = %e, "pairing step refused");
    xml_err(400, path, &e.to_string())
}

fn banned_reply(ctx: &Context, source: &Source, path: &str) -> Option<Response<Body>> {
    let left = ctx.host.pairing.banned_for(source)?;
    ctx.host.metrics.pairing("banned");
    Some(xml_err(429, path, &format!("Too many failed pairing attempts from this {source}; try again in {left} s")))
}

async fn pair(ctx: &Context, conn: &Conn, q: &HashMap<String, String>, path: &str) -> Response<Body> {
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
    let source = ctx.host.pairing.source_of(&key);
    let source = source.as_ref();
    // Not counted as a failed pairing: it guesses nothing, and under one address it may be another
    // client's late step (the count is for wrong PINs).
    let no_pairing = |step: &str| {
        ctx.host.metrics.pairing("error");
        xml_err(400, path, &format!("Out of order call to {step}: no pairing in progress for this client"))
    };
    if let Some(v) = q.get("clientchallenge") {
        return match ctx.host.pairing.step(&key, |s| s.client_challenge(server, v)) {
            None => no_pairing("clientchallenge"),
            Some(Err(e)) => pair_error_reply(ctx, source, path, &e),
            Some(Ok(resp)) => xml_ok(xml::ok(&[("paired", "1"), ("challengeresponse", &resp)])),
        };
    }
    if let Some(v) = q.get("serverchallengeresp") {
        return match ctx.host.pairing.step(&key, |s| s.server_challenge_resp(server, v)) {
            None => no_pairing("serverchallengeresp"),
            Some(Err(e)) => pair_error_reply(ctx, source, path, &e),
            Some(Ok(secret)) => xml_ok(xml::ok(&[("pairingsecret", &secret), ("paired", "1")])),
        };
    }
    if let Some(v) = q.get("clientpairingsecret") {
        let outcome = ctx
            .host
            .pairing
            .with_session(&key, |s| (s.client_pairing_secret(v).map(|ok| (ok, s.client.clone())), false));
        return match outcome {
            None => no_pairing("clientpairingsecret"),
            Some(Err(e)) => pair_error_reply(ctx, source, path, &e),
            Some(Ok((false, _))) => {
                ctx.host.metrics.pairing("wrong_pin");
                if let Some(source) = source {
                    ctx.host.pairing.record_failure(source);
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
    ctx: &Context,
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
    let turn = match ctx.host.pairing.take_turn(uniqueid, ip, &client_der, ctx.host.pairing.limits.pin_timeout).await {
        Ok(t) => t,
        Err(_) => {
            ctx.host.metrics.pairing("refused");
            return xml_err(503, path, "Another pairing from this client is still in progress; try again shortly");
        }
    };
    let (rx, guard) =
        match ctx.host.pairing.begin(turn, source.clone(), device, session, secret.clone(), fixed.is_none()) {
            Ok(x) => x,
            Err(BeginError::TooManyFromIp) => {
                ctx.host.metrics.pairing("refused");
                return xml_err(503, path, "Too many pairings in progress from this address; finish or cancel one");
            }
            Err(BeginError::TooMany | BeginError::Busy) => {
                ctx.host.metrics.pairing("refused");
                return xml_err(503, path, "Too many pairings in progress; try again shortly");
            }
        };
    if let Some(rx) = rx {
        tracing::warn!(
            %ip, device, "pairing waits for its PIN: open http://{}:{}/pin/#{secret} or run `wolf-rs pair <PIN>`",
            ctx.net.local_ip, ctx.host.ports.http
        );
        ctx.host.events.publish(crate::events::Event::PairSignal {
            client_ip: ip.to_string(),
            host_ip: ctx.net.local_ip.to_string(),
        });
        let pin = match tokio::time::timeout(ctx.host.pairing.limits.pin_timeout, rx).await {
            Ok(Ok(pin)) => pin,
            Ok(Err(_)) => {
                return xml_err(400, path, "The pairing was replaced or cancelled before the PIN arrived");
            }
            Err(_) => {
                drop(guard);
                ctx.host.metrics.pairing("timeout");
                ctx.host.pairing.record_failure(&source);
                let secs = ctx.host.pairing.limits.pin_timeout.as_secs();
                tracing::warn!(%ip, device, "pairing discarded: no PIN within {secs} s");
                return xml_err(408, path, &format!("No PIN was entered within {secs} s"));
            }
        };
        match ctx.host.pairing.step(&key, |s| s.set_pin(&pin)) {
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
    ctx: &Context,
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
    match ctx.host.clients.add(client).await {
        Ok(()) => {
            ctx.host.metrics.pairing("paired");
            tracing::info!(client = %name, fingerprint = %fp, ip = %conn.ip(), "client paired");
            ctx.host.events.publish(crate::events::Event::ClientPaired {
                client_id: crate::events::wolf_client_id(&pem),
                name,
                client_ip: conn.ip().to_string(),
            });
            xml_ok(xml::ok(&[("paired", "1")]))
        }
        Err(e) => {
            ctx.host.metrics.pairing("error");
            tracing::error!(error = %e, "pairing succeeded but could not be saved");
            xml_err(500, path, "The pairing could not be saved on the host")
        }
    }
}

/// Plain-HTTP `/unpair` carries no certificate, and every Moonlight client sends the same
/// uniqueid (and calls it after any failed pairing), so it only ends this client's pending
/// pairing. Paired clients are removed over HTTPS (their own certificate) or by the operator.
fn unpair_http(ctx: &Context, conn: &Conn, q: &HashMap<String, String>, path: &str) -> Response<Body> {
    let Some(uniqueid) = q.get("uniqueid").filter(|u| !u.is_empty()) else {
        return xml_err(400, path, "Missing uniqueid");
    };
    if ctx.host.pairing.discard(&PairingManager::key(uniqueid, conn.ip())) {
        tracing::info!(ip = %conn.ip(), %uniqueid, "pending pairing discarded by /unpair");
    }
    xml_ok(xml::ok(&[]))
}

#[derive(serde::Deserialize)]
struct PinForm {
    pin: String,
    secret: String,
}

async fn submit_pin(ctx: &Context, req: Request<Incoming>) -> Response<Body> {
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
    match ctx.host.pairing.submit_pin(Some(&form.secret), form.pin) {
        Ok(()) => text(StatusCode::OK, "PIN handed to the pairing: the client shows whether it matched"),
        Err(_) => text(StatusCode::NOT_FOUND, "No pairing is waiting for this link; start pairing on the client again"),
    }
}

/// `sessionUrl0`: encrypted RTSP on the shared port (the key finds the session), plain RTSP on the
/// session's own port when one is free (else the shared port, which finds it by address).
fn session_url(ctx: &Context, conn: &Conn, session_id: u32, encrypted: bool) -> String {
    let scheme = if encrypted { "rtspenc" } else { "rtsp" };
    let port = if encrypted { None } else { ctx.host.own_rtsp_port(session_id) };
    let port = port.unwrap_or(ctx.host.ports.rtsp);
    match conn.local.ip().to_canonical() {
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
    }
}

async fn launch(
    ctx: &Context,
    conn: &Conn,
    client: &PairedClient,
    q: &HashMap<String, String>,
    path: &str,
) -> Response<Body> {
    let bad = |msg: &str| {
        ctx.host.metrics.launch_failed("bad_request");
        xml_err(400, path, msg)
    };
    let Some(app_id) = q.get("appid").and_then(|v| v.parse::<u32>().ok()) else {
        return bad(BadRequest::AppId.message());
    };
    // An unknown app is named before the rest of the query is (clients show the 404 as such).
    if ctx.host.apps.get(app_id).is_none() {
        ctx.host.metrics.launch_failed(LaunchError::UnknownApp(app_id).reason());
        return xml_err(404, path, &format!("No app with ID {app_id}; see /applist"));
    }
    let params = match StreamParams::from_query(q) {
        Ok(p) => p,
        Err(e) => return bad(e.message()),
    };
    let client_unique_id = q.get("uniqueid").map(|u| u.chars().take(MAX_ID_LEN).collect()).unwrap_or_default();
    let request = LaunchRequest { client: client.clone(), client_ip: conn.ip(), client_unique_id, app_id, params };
    match ctx.host.launch(request).await {
        Ok(s) => {
            let url = session_url(ctx, conn, s.id, s.rtsp.encrypted);
            xml_ok(xml::ok(&[("sessionUrl0", &url), ("gamesession", "1")]))
        }
        Err(e @ LaunchError::PlainRtsp) => xml_err(403, path, &e.to_string()),
        Err(LaunchError::Draining) => xml_err(503, path, "The host is shutting down; launch again once it is back"),
        Err(LaunchError::UnknownApp(id)) => xml_err(404, path, &format!("No app with ID {id}; see /applist")),
        Err(LaunchError::Store(_)) => xml_err(
            500,
            path,
            "The host could not save the session (its state directory is not writable); see the host log",
        ),
        Err(LaunchError::Runner { source, .. }) => xml_err(500, path, &source.to_string()),
        Err(e @ (LaunchError::EndedWhileStarting | LaunchError::SessionProcess(_))) => {
            xml_err(500, path, &e.to_string())
        }
        Err(LaunchError::AlreadyRunning { app_id }) => {
            xml_err(400, path, &format!("App {app_id} is already running for this client; resume or quit it first"))
        }
    }
}

async fn resume(
    ctx: &Context,
    conn: &Conn,
    client: &PairedClient,
    q: &HashMap<String, String>,
    path: &str,
) -> Response<Body> {
    let mut params = match ResumeParams::from_query(q) {
        Ok(p) => p,
        Err(e) => return xml_err(400, path, e.message()),
    };
    params.encrypted = match ctx.host.rtsp_encrypted(params.encrypted) {
        Ok(e) => e,
        Err(e) => {
            ctx.host.metrics.launch_failed(e.reason());
            tracing::warn!(client = %client.name, ip = %conn.ip(), "resume refused: plain RTSP, and [stream] encryption is required");
            return xml_err(403, path, &e.to_string());
        }
    };
    match ctx.host.resume(client, params).await {
        Some(s) => {
            let url = session_url(ctx, conn, s.id, s.rtsp.encrypted);
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
