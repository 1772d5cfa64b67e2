//! Wolf's management API, `/api/v1`, over HTTP on a unix socket (`[api] socket`, env
//! `WOLF_SOCKET_PATH`; default `<state dir>/wolf.sock`, mode 0600): what platforms that drive Wolf
//! call, with Wolf's routes, JSON (`api_wire`) and status codes, so their clients work unchanged.
//! Never on a network port. Its own bounded connection count, body size and read timeouts, so it
//! answers while the GameStream ports are busy; the event stream (`GET /api/v1/events`, SSE)
//! has a bounded number of subscribers (the oldest is closed for a newcomer) each behind a
//! bounded buffer (`events`). `GET /api/v1/openapi-schema` is generated from the code (`openapi`).

pub mod openapi;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api_wire::*;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::events::{Event, wolf_client_id};
use crate::host::Host;

/// Connections served at once; the next waits in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Event-stream subscribers at once; a newcomer closes the oldest.
pub const MAX_SUBSCRIBERS: usize = 16;
/// The largest request body.
pub const MAX_BODY: usize = 1 << 20;
/// A request's head and body must arrive within this.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// SSE comment frames keep idle streams (and proxies) open.
const KEEPALIVE: Duration = Duration::from_secs(15);

type Body = BoxBody<Bytes, Infallible>;

pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
    /// `[api] tcp`: its listener and the bearer token every request there must carry.
    tcp: Option<(tokio::net::TcpListener, Arc<String>)>,
}

/// The TCP listener's token file in the state dir.
pub const TOKEN_FILE: &str = "api_token";

/// The bearer token for the TCP listener: read, or made (32 random bytes, hex, mode 0600).
fn token(state_dir: &Path) -> Result<String> {
    let path = state_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::with_source(ErrorKind::Store, format!("reading {}", path.display()), e)),
    }
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::new(ErrorKind::Store, "no randomness for the API token"))?;
    let t = hex::encode(bytes);
    crate::state::atomic::write_atomic(&path, t.as_bytes(), 0o600)?;
    Ok(t)
}

/// A group name or number as a gid.
fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse() {
        return Some(gid);
    }
    let name = std::ffi::CString::new(group).ok()?;
    // SAFETY: getgrnam reads the NUL-terminated name; the record it returns is read at once, on
    // the start-up path, before anything else could call it.
    let g = unsafe { libc::getgrnam(name.as_ptr()) };
    // SAFETY: non-null: a valid group record.
    (!g.is_null()).then(|| unsafe { (*g).gr_gid })
}

impl ApiServer {
    /// Bind the socket (its folder made if missing; shared with `[api] group`), and `[api] tcp`.
    /// A socket that answers means another host serves it: an error; a stale one is replaced.
    pub async fn bind(config: &crate::config::Api, state_dir: &Path) -> Result<ApiServer> {
        let path = &config.socket_path(state_dir);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).or_err(ErrorKind::Bind, || format!("creating {}", dir.display()))?;
        }
        let listener = crate::net::unix::bind(path, 0o600).await?;
        if !config.group.is_empty() {
            let gid = group_id(&config.group)
                .ok_or_else(|| Error::new(ErrorKind::Config, format!("api.group: no group {:?}", config.group)))?;
            std::os::unix::fs::chown(path, None, Some(gid))
                .or_err(ErrorKind::Bind, || format!("giving {} to group {}", path.display(), config.group))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                .or_err(ErrorKind::Bind, || format!("chmod 660 {}", path.display()))?;
        }
        let tcp = match config.tcp_addr().or_err(ErrorKind::Config, || "api.tcp")? {
            None => None,
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .or_err(ErrorKind::Bind, || format!("binding the API on {addr}"))?;
                tracing::info!(%addr, token_file = %state_dir.join(TOKEN_FILE).display(), "API on TCP too, with a bearer token");
                Some((l, Arc::new(token(state_dir)?)))
            }
        };
        Ok(ApiServer { listener, path: path.to_owned(), tcp })
    }

    pub async fn run(self, ctx: Arc<Host>, shutdown: CancellationToken, tracker: TaskTracker) {
        let shared = Arc::new(Shared {
            ctx,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            subscribers: Arc::new(Subscribers::default()),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        });
        let tcp = self.tcp.map(|(l, token)| {
            let s = shared.clone();
            tokio::spawn(async move {
                loop {
                    let Some(permit) = s.permit().await else { break };
                    let accepted = tokio::select! {
                        _ = s.shutdown.cancelled() => break,
                        a = l.accept() => a,
                    };
                    match accepted {
                        Ok((stream, _)) => s.serve(stream, permit, Some(token.clone())),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        });
        loop {
            let Some(permit) = shared.permit().await else { break };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => shared.serve(stream, permit, None),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        if let Some(t) = tcp {
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What both listeners serve with.
struct Shared {
    ctx: Arc<Host>,
    permits: Arc<Semaphore>,
    subscribers: Arc<Subscribers>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Shared {
    /// A connection slot; `None` at shutdown.
    async fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            _ = self.shutdown.cancelled() => None,
            p = self.permits.clone().acquire_owned() => p.ok(),
        }
    }

    /// One connection, one request; with `token`, only a request that carries it is answered.
    fn serve<S>(self: &Arc<Self>, stream: S, permit: tokio::sync::OwnedSemaphorePermit, token: Option<Arc<String>>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let s = self.clone();
        self.tracker.spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req: Request<Incoming>| {
                let (s, token) = (s.clone(), token.clone());
                async move {
                    if let Some(t) = token
                        && !bearer_matches(&req, &t)
                    {
                        return Ok::<_, Infallible>(fail(
                            StatusCode::UNAUTHORIZED,
                            "This API port needs Authorization: Bearer <the token in the state dir's api_token>",
                        ));
                    }
                    Ok::<_, Infallible>(route(&s.ctx, &s.subscribers, &s.shutdown, req).await)
                }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.keep_alive(false).timer(TokioTimer::new()).header_read_timeout(READ_TIMEOUT);
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Does the request carry `Authorization: Bearer <token>`? Compared in constant time.
fn bearer_matches(req: &Request<Incoming>, token: &str) -> bool {
    let given = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(given) = given.and_then(|v| v.strip_prefix("Bearer ")) else { return false };
    aws_lc_rs::constant_time::verify_slices_are_equal(given.trim().as_bytes(), token.as_bytes()).is_ok()
}

impl ApiServer {
    /// The TCP listener's address, when `[api] tcp` is set.
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }
}

fn respond(status: StatusCode, v: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| br#"{"success":false,"error":"encoding"}"#.to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn ok() -> Response<Body> {
    respond(StatusCode::OK, &GenericSuccess { success: true })
}

fn fail(status: StatusCode, error: impl Into<String>) -> Response<Body> {
    respond(status, &GenericError { success: false, error: error.into() })
}

/// The request body as `T`. Wolf answers a body it cannot read with 500 on most routes (400 on a
/// few): `bad` is that status.
async fn body<T: DeserializeOwned>(req: Request<Incoming>, bad: StatusCode) -> std::result::Result<T, Response<Body>> {
    let read = tokio::time::timeout(READ_TIMEOUT, Limited::new(req.into_body(), MAX_BODY).collect()).await;
    let bytes = match read {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(fail(StatusCode::PAYLOAD_TOO_LARGE, format!("The body is larger than {MAX_BODY} bytes")));
        }
        Ok(Err(e)) => return Err(fail(StatusCode::BAD_REQUEST, format!("Reading the body: {e}"))),
        Err(_) => return Err(fail(StatusCode::REQUEST_TIMEOUT, "The body did not arrive in time")),
    };
    serde_json::from_slice(&bytes).map_err(|e| fail(bad, format!("Invalid request format: {e}")))
}

async fn route(
    ctx: &Arc<Host>,
    subs: &Arc<Subscribers>,
    shutdown: &CancellationToken,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let Some(route) = path.strip_prefix("/api/v1") else {
        return fail(StatusCode::NOT_FOUND, format!("No route {path}; the API is under /api/v1"));
    };
    let server_error = StatusCode::INTERNAL_SERVER_ERROR;
    match (req.method().clone(), route) {
        (Method::GET, "/openapi-schema") => respond(StatusCode::OK, &openapi::document()),
        (Method::GET, "/events") => events(ctx, subs, shutdown),
        (Method::GET, "/apps") => {
            let apps =
                ctx.apps.list().iter().map(|a| App { id: ctx.apps.api_id(a.id), ..App::from(a.as_ref()) }).collect();
            respond(StatusCode::OK, &AppsResponse { success: true, apps })
        }
        (Method::POST, "/apps/add") => match body::<App>(req, server_error).await {
            Ok(a) => add_app(ctx, a).await,
            Err(resp) => resp,
        },
        (Method::POST, "/apps/delete") => match body::<AppDeleteRequest>(req, server_error).await {
            Ok(r) => delete_app(ctx, &r.id).await,
            Err(resp) => resp,
        },
        (Method::GET, "/clients") => {
            let clients = ctx.clients.list().into_iter().map(|c| client_view(&c)).collect();
            respond(StatusCode::OK, &ClientsResponse { success: true, clients })
        }
        (Method::POST, "/clients/settings") => {
            match body::<ClientSettingsRequest>(req, StatusCode::BAD_REQUEST).await {
                Ok(r) if find_client(ctx, &r.client_id).is_some() => ok(),
                Ok(_) => fail(StatusCode::NOT_FOUND, "Client not found"),
                Err(resp) => resp,
            }
        }
        (Method::GET, "/profiles") => {
            respond(StatusCode::OK, &ProfilesResponse { success: true, profiles: Vec::new() })
        }
        (Method::POST, "/unpair/client") => match body::<UnpairRequest>(req, StatusCode::BAD_REQUEST).await {
            Ok(r) => unpair(ctx, &r.client_id).await,
            Err(resp) => resp,
        },
        (Method::GET, "/pair/pending") => {
            let requests = ctx
                .pairing
                .waiting()
                .into_iter()
                .map(|w| PendingPair {
                    pair_secret: w.secret,
                    client_ip: w.ip,
                    device_name: w.device_name,
                    uniqueid: w.uniqueid,
                    waiting_s: w.waiting_s,
                })
                .collect();
            respond(StatusCode::OK, &PendingPairsResponse { success: true, requests })
        }
        (Method::POST, "/pair/client") => match body::<PairRequest>(req, server_error).await {
            Ok(r) => match ctx.pairing.submit_operator_pin(r.pair_secret.as_deref(), &r.pin) {
                Ok(()) => ok(),
                Err(e) => fail(server_error, e.to_string()),
            },
            Err(resp) => resp,
        },
        (Method::GET, "/sessions") => {
            let sessions = ctx.sessions.list().iter().map(|s| session_view(ctx, s)).collect();
            respond(StatusCode::OK, &SessionsResponse { success: true, sessions })
        }
        (Method::GET, "/sessions/records") => {
            let sessions = ctx.sessions.list().iter().map(|s| s.record(ctx.sessions.last_activity(s.id))).collect();
            respond(StatusCode::OK, &SessionRecordsResponse { success: true, sessions })
        }
        (Method::GET, "/lobbies") => {
            let lobbies = ctx.lobbies.list().iter().map(|l| lobby_view(l, &ctx.lobbies.members(&l.id))).collect();
            respond(StatusCode::OK, &LobbiesResponse { success: true, lobbies })
        }
        (Method::POST, "/lobbies/create") => match body::<LobbyCreateRequest>(req, server_error).await {
            Ok(r) => create_lobby(ctx, r).await,
            Err(resp) => resp,
        },
        (Method::POST, "/lobbies/join") => match body::<LobbyJoinRequest>(req, server_error).await {
            Ok(r) => match find_session(ctx, &r.moonlight_session_id) {
                Some(sid) => lobby_done(ctx.lobbies.join(&r.lobby_id, sid, r.pin.as_deref()).await),
                None => lobby_done(Err(crate::lobbies::LobbyError::SessionNotFound)),
            },
            Err(resp) => resp,
        },
        (Method::POST, "/lobbies/leave") => match body::<LobbyLeaveRequest>(req, server_error).await {
            Ok(r) => match find_session(ctx, &r.moonlight_session_id) {
                Some(sid) => lobby_done(ctx.lobbies.leave(&r.lobby_id, sid).await),
                // Wolf answers success for an unknown session or lobby.
                None => ok(),
            },
            Err(resp) => resp,
        },
        (Method::POST, "/lobbies/stop") => match body::<LobbyStopRequest>(req, server_error).await {
            Ok(r) => lobby_done(ctx.lobbies.stop(&r.lobby_id, r.pin.as_deref()).await),
            Err(resp) => resp,
        },
        (Method::POST, "/sessions/add") => match body::<SessionAddRequest>(req, server_error).await {
            Ok(r) => add_session(ctx, r).await,
            Err(resp) => resp,
        },
        (Method::POST, "/sessions/configure") => {
            match body::<ConfigureSessionRequest>(req, StatusCode::BAD_REQUEST).await {
                Ok(r) if r.client_unique_id.is_empty() => fail(StatusCode::BAD_REQUEST, "client_unique_id is required"),
                Ok(r) if r.immediate_lobby_id.is_empty() => {
                    fail(StatusCode::BAD_REQUEST, "immediate_lobby_id is required")
                }
                Ok(r) => {
                    ctx.configured.set(&r.client_unique_id, &r.immediate_lobby_id);
                    tracing::info!(unique_id = %r.client_unique_id, lobby = %r.immediate_lobby_id, "a launch is configured to join a lobby");
                    let message = "Session pre-configured for immediate lobby attachment".to_owned();
                    respond(StatusCode::OK, &ConfigureSessionResponse { success: true, message })
                }
                Err(resp) => resp,
            }
        }
        (Method::POST, "/sessions/stop") => match body::<SessionIdRequest>(req, server_error).await {
            Ok(r) => match find_session(ctx, &r.session_id) {
                Some(id) => {
                    ctx.end(id, crate::commands::EndReason::Cancelled).await;
                    ok()
                }
                None => fail(server_error, "Invalid session_id"),
            },
            Err(resp) => resp,
        },
        (m, r)
            if let Some((_, _, why)) = openapi::NOT_SERVED.iter().find(|(nm, p, _)| *nm == m.as_str() && *p == r) =>
        {
            fail(StatusCode::NOT_IMPLEMENTED, format!("wolf-rs does not serve {m} {path}: {why}"))
        }
        (_, r) if let Some(allow) = openapi::allowed(r) => {
            let mut resp = fail(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not served on {path}", req.method()));
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(hyper::header::ALLOW, v);
            }
            resp
        }
        _ => fail(StatusCode::NOT_FOUND, format!("No route {path}; GET /api/v1/openapi-schema lists them")),
    }
}

async fn add_app(ctx: &Arc<Host>, a: App) -> Response<Body> {
    use crate::state::apps::{AddError, Refused};
    let app = match a.to_config() {
        Ok(app) => app,
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, format!("Invalid app: {e}")),
    };
    let title = app.title.clone();
    match ctx.apps.add(a.id.clone(), app).await {
        Ok(number) => {
            tracing::info!(app = %title, id = %a.id, number, "app added through the API");
            ctx.events.publish(Event::AppAdded { id: a.id, title });
            ok()
        }
        Err(AddError::Refused(Refused::FromConfig)) => {
            fail(StatusCode::INTERNAL_SERVER_ERROR, format!("App {} comes from config.toml; change it there", a.id))
        }
        Err(AddError::Refused(r)) => fail(StatusCode::INTERNAL_SERVER_ERROR, format!("App not added: {r:?}")),
        Err(AddError::Store(e)) => fail(StatusCode::INTERNAL_SERVER_ERROR, format!("App not saved: {e}")),
    }
}

/// Wolf answers success for an id it does not know; so does this. The removed app's sessions end.
async fn delete_app(ctx: &Arc<Host>, id: &str) -> Response<Body> {
    use crate::state::apps::AddError;
    match ctx.apps.remove(id).await {
        Ok(Some(app)) => {
            tracing::info!(app = %app.title, id, "app removed through the API");
            for s in ctx.sessions.list().iter().filter(|s| s.app_id == app.id) {
                ctx.end(s.id, crate::commands::EndReason::Cancelled).await;
            }
            ctx.events.publish(Event::AppRemoved { id: id.to_owned(), title: app.title.clone() });
            ok()
        }
        Ok(None) => ok(),
        Err(AddError::Refused(_)) => {
            fail(StatusCode::INTERNAL_SERVER_ERROR, format!("App {id} comes from config.toml; remove it there"))
        }
        Err(AddError::Store(e)) => fail(StatusCode::INTERNAL_SERVER_ERROR, format!("App not removed: {e}")),
    }
}

async fn add_session(ctx: &Arc<Host>, r: SessionAddRequest) -> Response<Body> {
    use crate::host::launch::{LaunchError, LaunchRequest, StreamParams, parse_rikey, surround_for_channels};
    let bad = |m: String| fail(StatusCode::INTERNAL_SERVER_ERROR, m);
    let Some(client) = r.client_id.as_deref().and_then(|id| find_client(ctx, id)) else {
        return bad("Invalid client_id: a session belongs to a paired client (see /api/v1/clients)".into());
    };
    let Some(app) = r
        .app_id
        .as_deref()
        .and_then(|id| ctx.apps.list().into_iter().find(|a| a.id.to_string() == id || ctx.apps.api_id(a.id) == id))
    else {
        return bad("Invalid app_id (see /api/v1/apps)".into());
    };
    let Ok(client_ip) = r.client_ip.parse() else {
        return bad(format!("client_ip {:?} is not an address", r.client_ip));
    };
    let (rikey, rikeyid) = match parse_rikey(Some(&r.aes_key), Some(&r.aes_iv)) {
        Ok(k) => k,
        Err(e) => return bad(format!("aes_key/aes_iv: {e}")),
    };
    let (w, h, fps) = (r.video_width, r.video_height, r.video_refresh_rate);
    let Some(mode) = wolf_protocol::launch::Mode::parse(&format!("{w}x{h}x{fps}")) else {
        return bad(format!("{w}x{h}x{fps} is not a video mode"));
    };
    let surround = surround_for_channels(u32::from(r.audio_channel_count));
    let params = StreamParams { mode, rikey, rikeyid, surround, encrypted: false };
    let session_id = wolf_client_id(&client.cert_pem);
    let client_unique_id = r.client_unique_id.clone().unwrap_or_default();
    match ctx.launch(LaunchRequest { client, client_ip, client_unique_id, app_id: app.id, params }).await {
        Ok(_) => respond(StatusCode::OK, &SessionAddResponse { success: true, session_id }),
        Err(LaunchError::AlreadyRunning { app_id }) => {
            bad(format!("App {app_id} is already running for this client; stop that session first"))
        }
        Err(LaunchError::Store(e)) => bad(format!("The session could not be saved: {e}")),
        Err(e @ LaunchError::PlainRtsp) => bad(format!("No session: {e} (sessions/add sets up plain RTSP)")),
        Err(LaunchError::Runner { part, source }) => {
            bad(format!("The session's {} did not start: {source}", part.as_str()))
        }
        Err(e) => bad(format!("No session: {e}")),
    }
}

fn lobby_done(r: std::result::Result<(), crate::lobbies::LobbyError>) -> Response<Body> {
    match r {
        Ok(()) => ok(),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn lobby_view(l: &crate::lobbies::Lobby, members: &[u32]) -> LobbyView {
    LobbyView {
        id: l.id.clone(),
        name: l.name.clone(),
        icon_png_path: l.icon_png_path.clone(),
        multi_user: l.multi_user,
        started_by_profile_id: l.profile_id.clone(),
        pin_required: l.pin.is_some(),
        stop_when_everyone_leaves: l.stop_when_everyone_leaves,
        runner: App::from(&l.app).runner,
        connected_sessions: members.iter().map(u32::to_string).collect(),
    }
}

async fn create_lobby(ctx: &Arc<Host>, r: LobbyCreateRequest) -> Response<Body> {
    let bad = |m: String| fail(StatusCode::INTERNAL_SERVER_ERROR, m);
    let v = &r.video_settings;
    let Some(mode) = wolf_protocol::launch::Mode::parse(&format!("{}x{}x{}", v.width, v.height, v.refresh_rate)) else {
        return bad(format!("{}x{}x{} is not a video mode", v.width, v.height, v.refresh_rate));
    };
    let described =
        App { icon_png_path: r.icon_png_path.clone(), ..App::new(r.name.clone(), String::new(), r.runner, true) };
    let app = match described.to_config() {
        Ok(a) => a,
        Err(e) => return bad(format!("Invalid lobby: {e}")),
    };
    let new = crate::lobbies::NewLobby {
        name: r.name,
        profile_id: r.profile_id,
        icon_png_path: r.icon_png_path,
        multi_user: r.multi_user,
        stop_when_everyone_leaves: r.stop_when_everyone_leaves,
        pin: r.pin,
        mode,
        channels: match r.audio_settings.channel_count {
            6 => 6,
            8 => 8,
            _ => 2,
        },
        app,
    };
    match ctx.lobbies.create(new).await {
        Ok(lobby_id) => respond(StatusCode::OK, &LobbyCreateResponse { success: true, lobby_id }),
        Err(e) => bad(e.to_string()),
    }
}

fn client_view(c: &crate::state::clients::PairedClient) -> Client {
    Client {
        client_id: wolf_client_id(&c.cert_pem),
        app_state_folder: c.fingerprint.clone(),
        settings: ClientSettings::default(),
        name: c.name.clone(),
        fingerprint: c.fingerprint.clone(),
        uniqueid: c.uniqueid.clone(),
        ip: c.ip.clone(),
        paired_at: c.paired_at,
    }
}

fn session_view(ctx: &Arc<Host>, s: &crate::sessions::Session) -> StreamSession {
    let client_id = ctx.clients.get(&s.client_fingerprint).map(|c| wolf_client_id(&c.cert_pem)).unwrap_or_default();
    StreamSession::of(s, client_id)
}

/// The paired client a route names: Wolf's client id or the certificate fingerprint.
fn find_client(ctx: &Arc<Host>, id: &str) -> Option<crate::state::clients::PairedClient> {
    ctx.clients.list().into_iter().find(|c| c.fingerprint == id || wolf_client_id(&c.cert_pem) == id)
}

/// The session a route names: Wolf's id (the client id) or wolf-rs's number.
fn find_session(ctx: &Arc<Host>, id: &str) -> Option<u32> {
    let sessions = ctx.sessions.list();
    let by_client = sessions
        .iter()
        .find(|s| ctx.clients.get(&s.client_fingerprint).is_some_and(|c| wolf_client_id(&c.cert_pem) == id));
    by_client.or_else(|| sessions.iter().find(|s| s.id.to_string() == id)).map(|s| s.id)
}

async fn unpair(ctx: &Arc<Host>, id: &str) -> Response<Body> {
    let Some(found) = find_client(ctx, id) else { return fail(StatusCode::NOT_FOUND, "Client not found") };
    match ctx.clients.remove_where(|c| c.fingerprint == found.fingerprint).await {
        Ok(gone) if gone.is_empty() => fail(StatusCode::NOT_FOUND, "Client not found"),
        Ok(gone) => {
            for c in gone {
                tracing::info!(client = %c.name, fingerprint = %c.fingerprint, "client unpaired through the API");
                ctx.events.publish(Event::ClientUnpaired { client_id: wolf_client_id(&c.cert_pem), name: c.name });
            }
            ok()
        }
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The open event streams, oldest first; each is closed through its token.
#[derive(Default)]
struct Subscribers {
    open: Mutex<VecDeque<CancellationToken>>,
}

impl Subscribers {
    /// A token for a new subscriber; at the cap the oldest is closed.
    fn add(&self) -> CancellationToken {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.retain(|t| !t.is_cancelled());
        while open.len() >= MAX_SUBSCRIBERS {
            if let Some(oldest) = open.pop_front() {
                oldest.cancel();
            }
        }
        let t = CancellationToken::new();
        open.push_back(t.clone());
        t
    }
}

/// `GET /api/v1/events`: `event: <name>\ndata: <json>\n\n` frames, and a `:keepalive` comment every
/// 15 s. A subscriber that reads too slowly loses the oldest events (counted) and is never waited on.
fn events(ctx: &Arc<Host>, subs: &Arc<Subscribers>, shutdown: &CancellationToken) -> Response<Body> {
    let mut rx = ctx.events.subscribe();
    let token = subs.add();
    let (tx, frames) = mpsc::channel::<Bytes>(8);
    let (metrics, shutdown) = (ctx.metrics.clone(), shutdown.clone());
    tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b":keepalive\n\n")).await;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        loop {
            let frame = tokio::select! {
                _ = token.cancelled() => break,
                _ = shutdown.cancelled() => break,
                _ = tx.closed() => break,
                _ = tick.tick() => Bytes::from_static(b":keepalive\n\n"),
                e = rx.recv() => match e {
                    Ok(e) => Bytes::from(e.frame()),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics.api_events_dropped.with_label_values(&["slow_subscriber"]).inc_by(n);
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            // The client reads slowly: wait for it here while the broadcast buffer, not memory,
            // takes the overflow.
            tokio::select! {
                _ = token.cancelled() => break,
                _ = shutdown.cancelled() => break,
                sent = tx.send(frame) => if sent.is_err() { break },
            }
        }
        token.cancel();
    });
    let mut r = Response::new(BodyExt::boxed(Sse { frames }));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A body fed frame by frame; it ends when its sender goes.
struct Sse {
    frames: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for Sse {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        self.frames.poll_recv(cx).map(|f| f.map(|b| Ok(Frame::data(b))))
    }
}
