//! The API's OpenAPI 3.1 document, generated from the `api_wire` types (utoipa), served at
//! `GET /api/v1/openapi-schema`. The functions here only carry each route's description.
// The described functions are never called.
#![allow(dead_code)]

use utoipa::OpenApi;

use crate::api_wire::*;

/// Every route served: (method, path under `/api/v1`). A test asks each one.
pub const ROUTES: [(&str, &str); 21] = [
    ("GET", "/openapi-schema"),
    ("GET", "/events"),
    ("GET", "/apps"),
    ("POST", "/apps/add"),
    ("POST", "/apps/delete"),
    ("GET", "/clients"),
    ("POST", "/clients/settings"),
    ("GET", "/profiles"),
    ("POST", "/unpair/client"),
    ("GET", "/pair/pending"),
    ("POST", "/pair/client"),
    ("GET", "/sessions"),
    ("GET", "/sessions/records"),
    ("GET", "/lobbies"),
    ("POST", "/lobbies/create"),
    ("POST", "/lobbies/join"),
    ("POST", "/lobbies/leave"),
    ("POST", "/lobbies/stop"),
    ("POST", "/sessions/add"),
    ("POST", "/sessions/stop"),
    ("POST", "/sessions/configure"),
];

/// Wolf's routes wolf-rs does not serve (501 with why): (method, path under `/api/v1`, why).
pub const NOT_SERVED: [(&str, &str, &str); 9] = [
    ("POST", "/profiles/add", "Wolf UI profiles have no use here: Moonlight's apps are /apps/add"),
    ("POST", "/profiles/remove", "Wolf UI profiles have no use here: Moonlight's apps are /apps/delete"),
    ("POST", "/sessions/start", "the stream starts when the client's RTSP PLAY arrives, with what it negotiated"),
    ("POST", "/sessions/pause", "a client pauses by leaving; /sessions/stop ends a session"),
    ("POST", "/sessions/input", "input comes from the session's own authenticated control channel only"),
    ("POST", "/runners/start", "a session's app is started at launch (/apps/add, /sessions/add)"),
    ("GET", "/utils/get-icon", "icons are served to clients at /appasset"),
    ("GET", "/docker/images/inspect", "use the Docker engine's own API"),
    ("POST", "/docker/images/pull", "use the Docker engine's own API (docker pull)"),
];

/// The `Allow` header for `path` (under `/api/v1`): the methods it has, served or not; `None` for
/// a path that is not a route.
pub fn allowed(path: &str) -> Option<String> {
    let served = ROUTES.iter().map(|(m, p)| (*m, *p));
    let mut methods: Vec<&str> =
        served.chain(NOT_SERVED.iter().map(|(m, p, _)| (*m, *p))).filter(|(_, p)| *p == path).map(|(m, _)| m).collect();
    methods.sort_unstable();
    methods.dedup();
    (!methods.is_empty()).then(|| methods.join(", "))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wolf-rs API",
        description = "Wolf's management API (/api/v1) as wolf-rs serves it, over HTTP on a unix socket. Errors are {\"success\": false, \"error\": \"...\"} with Wolf's status codes: 500 for most, 400/404 where Wolf uses them, 413 for a body over 1 MiB.",
        version = "1"
    ),
    paths(
        openapi_schema,
        events,
        apps,
        apps_add,
        apps_delete,
        clients,
        clients_settings,
        profiles,
        unpair,
        pair_pending,
        pair_client,
        sessions,
        sessions_records,
        lobbies,
        lobbies_create,
        lobbies_join,
        lobbies_leave,
        lobbies_stop,
        sessions_add,
        sessions_stop,
        sessions_configure
    ),
    components(schemas(GenericSuccess, GenericError))
)]
struct Doc;

/// The document, as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(Doc::openapi()).unwrap_or_default()
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi-schema", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
fn openapi_schema() {}

/// Server-sent events: `event: <name>` and `data: <json>` per event, a `:keepalive` comment every
/// 15 s. Wolf's names where Wolf has the event (`wolf::core::events::PairSignal`,
/// `StreamSession`, `StopStreamEvent`, `CreateLobbyEvent`, `JoinLobbyEvent`, `LeaveLobbyEvent`,
/// `StopLobbyEvent`); wolf-rs's own otherwise (`wolf_rs::events::ClientPaired`,
/// `ClientUnpaired`, `SessionFailed`, `SessionEnded`). At most 16 subscribers: a newcomer closes
/// the oldest. A subscriber that reads too slowly loses the oldest events
/// (`wolf_api_events_dropped_total`).
#[utoipa::path(get, path = "/api/v1/events", responses((status = 200, description = "text/event-stream")))]
fn events() {}

/// The apps Moonlight clients see (`/applist`).
#[utoipa::path(get, path = "/api/v1/apps", responses((status = 200, body = AppsResponse)))]
fn apps() {}

/// Add an app (or replace the one added under the same `id`): it is in `/applist` at once and
/// after restarts (`<state dir>/apps.json`). `start_virtual_compositor`: a virtual display per
/// session; `start_audio_server`: an audio sink per session. Wolf's pipelines, `render_node`,
/// `support_hdr` and a container's `name`, `ports` and `base_create_json` are accepted and not used.
#[utoipa::path(post, path = "/api/v1/apps/add", request_body = App, responses(
    (status = 200, body = GenericSuccess),
    (status = 500, description = "Invalid app, an id of config.toml's, or not saved", body = GenericError),
))]
fn apps_add() {}

/// Remove an added app (success for an unknown id, as Wolf answers); its sessions end. config.toml's
/// apps are removed there.
#[utoipa::path(post, path = "/api/v1/apps/delete", request_body = AppDeleteRequest, responses(
    (status = 200, body = GenericSuccess),
    (status = 500, description = "An app of config.toml's, or not saved", body = GenericError),
))]
fn apps_delete() {}

/// Paired clients. `settings` are Wolf's defaults: wolf-rs does not apply per-client settings.
#[utoipa::path(get, path = "/api/v1/clients", responses((status = 200, body = ClientsResponse)))]
fn clients() {}

/// Accepted for Wolf's clients (400 for a body it cannot read, 404 for an unknown client, else
/// success); wolf-rs applies no per-client settings (uid/gid, controller and mouse settings), so
/// they are not kept.
#[utoipa::path(post, path = "/api/v1/clients/settings", request_body = ClientSettingsRequest, responses(
    (status = 200, body = GenericSuccess),
    (status = 400, description = "Invalid request format", body = GenericError),
    (status = 404, description = "Client not found", body = GenericError),
))]
fn clients_settings() {}

/// Wolf UI's profiles: always none (Moonlight's apps are `/apps`).
#[utoipa::path(get, path = "/api/v1/profiles", responses((status = 200, body = ProfilesResponse)))]
fn profiles() {}

/// Unpair a client (by Wolf's client id or its certificate fingerprint).
#[utoipa::path(post, path = "/api/v1/unpair/client", request_body = UnpairRequest, responses(
    (status = 200, body = GenericSuccess),
    (status = 400, description = "Invalid request format", body = GenericError),
    (status = 404, description = "Client not found", body = GenericError),
))]
fn unpair() {}

/// Pairings that wait for their PIN (wolf-rs adds each one's `uniqueid` and `waiting_s`).
#[utoipa::path(get, path = "/api/v1/pair/pending", responses((status = 200, body = PendingPairsResponse)))]
fn pair_pending() {}

/// Give a waiting pairing its PIN. Success means the PIN was handed over; whether it was the right
/// one the client's pairing finds out. wolf-rs: `pair_secret` may be left out while exactly one
/// pairing waits.
#[utoipa::path(post, path = "/api/v1/pair/client", request_body = PairRequest, responses(
    (status = 200, body = GenericSuccess),
    (status = 500, description = "No such pairing, or not 4 digits", body = GenericError),
))]
fn pair_client() {}

/// Running sessions.
#[utoipa::path(get, path = "/api/v1/sessions", responses((status = 200, body = SessionsResponse)))]
fn sessions() {}

/// wolf-rs's own: each session as the host keeps it (as in `active_sessions.json`: runner handle,
/// ports, display, sink, lobby, timestamps, last activity); what `wolf-rs sessions list` shows.
#[utoipa::path(get, path = "/api/v1/sessions/records", responses((status = 200, body = SessionRecordsResponse)))]
fn sessions_records() {}

/// Lobbies: apps with their own display and sink that sessions join.
#[utoipa::path(get, path = "/api/v1/lobbies", responses((status = 200, body = LobbiesResponse)))]
fn lobbies() {}

/// Start a lobby: its display at `video_settings`, its sink, its runner; answers once they run.
#[utoipa::path(post, path = "/api/v1/lobbies/create", request_body = LobbyCreateRequest, responses(
    (status = 200, body = LobbyCreateResponse),
    (status = 500, description = "Invalid lobby, too many, or it did not start", body = GenericError),
))]
fn lobbies_create() {}

/// A session joins: its client sees, hears and types into the lobby from now on, without
/// reconnecting. The PIN must equal the lobby's (none for an open lobby).
#[utoipa::path(post, path = "/api/v1/lobbies/join", request_body = LobbyJoinRequest, responses(
    (status = 200, body = GenericSuccess),
    (status = 500, description = "Invalid lobby ID, Invalid PIN, Lobby or session not found, Lobby is full", body = GenericError),
))]
fn lobbies_join() {}

/// A session leaves: its own app again. Success for an unknown lobby or session, as in Wolf. The
/// lobby stops when the last one leaves if it was created so.
#[utoipa::path(post, path = "/api/v1/lobbies/leave", request_body = LobbyLeaveRequest, responses(
    (status = 200, body = GenericSuccess),
))]
fn lobbies_leave() {}

/// Stop a lobby (its sessions get their own apps back).
#[utoipa::path(post, path = "/api/v1/lobbies/stop", request_body = LobbyStopRequest, responses(
    (status = 200, body = GenericSuccess),
    (status = 500, description = "Invalid lobby ID, Invalid PIN", body = GenericError),
))]
fn lobbies_stop() {}

/// Start a session for a paired client, as if it had launched the app; it then connects with RTSP
/// (plain, on the shared port) as after `/launch`.
#[utoipa::path(post, path = "/api/v1/sessions/add", request_body = SessionAddRequest, responses(
    (status = 200, body = SessionAddResponse),
    (status = 500, description = "Unknown client or app, a malformed key or mode, or the session did not start", body = GenericError),
))]
fn sessions_add() {}

/// End a session (as `/cancel` does).
#[utoipa::path(post, path = "/api/v1/sessions/stop", request_body = SessionIdRequest, responses(
    (status = 200, body = GenericSuccess),
    (status = 500, description = "Invalid session_id", body = GenericError),
))]
fn sessions_stop() {}

/// The next Moonlight launch whose `uniqueid` is `client_unique_id` joins lobby
/// `immediate_lobby_id` as it starts (no PIN asked), the way a web gateway attaches a browser to a
/// desktop. Kept for that one launch, or 5 minutes; a newer call for the same id replaces it.
#[utoipa::path(post, path = "/api/v1/sessions/configure", request_body = ConfigureSessionRequest, responses(
    (status = 200, body = ConfigureSessionResponse),
    (status = 400, description = "Invalid request format, or a field empty", body = GenericError),
))]
fn sessions_configure() {}
