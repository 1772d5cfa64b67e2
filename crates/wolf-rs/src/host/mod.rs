//! The one owner of every session's lifecycle: the front-ends (GameStream, the API, the CLI through
//! the API) parse what they are asked, call [`Host`], and format its answer; none of them starts,
//! changes or ends a session itself. A session is launched, resumed, moved into and out of a lobby
//! and ended here, and an end is on disk before anyone is told of it.

pub mod configured;
pub mod end;
pub mod launch;
pub mod pairing;
pub mod plan;
pub mod streaming;
pub mod watch;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::events::Events;
use crate::lobbies::{Lobbies, LobbyError};
use crate::metrics::Metrics;
use crate::runners::Runners;
use crate::sessions::Sessions;
use crate::state::apps::AppCatalog;
use crate::state::clients::ClientStore;
pub use launch::{LaunchError, LaunchRequest, StreamParams};
use pairing::PairingManager;

/// The host's ports as bound: what clients are sent to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ports {
    pub http: u16,
    pub https: u16,
    pub rtsp: u16,
}

/// The streaming planes the host drives.
pub struct Planes {
    /// Each session's app, display and sink.
    pub runners: Arc<Runners>,
    /// Plain-RTSP sessions' own RTSP ports.
    pub rtsp_ports: Arc<crate::rtsp::SessionPorts>,
    /// Each session's session process.
    pub spawner: Arc<crate::session_process::link::Spawner>,
    /// What each session's streams are to be.
    pub planner: crate::host::plan::Planner,
    /// Where session processes' stalled threads show (`/health`).
    pub health: Arc<crate::status::Health>,
    /// Where session processes' starts, adoptions and exits are recorded (`events.log`).
    pub lifecycle: crate::lifecycle::Lifecycle,
}

/// The handle every front-end calls.
pub struct Host {
    pub sessions: Arc<Sessions>,
    /// The apps clients can launch (config.toml's and those added through the API), with icons.
    pub apps: Arc<AppCatalog>,
    pub clients: Arc<ClientStore>,
    pub pairing: PairingManager,
    pub lobbies: Arc<Lobbies>,
    /// What happened, for the API's event stream.
    pub events: Arc<Events>,
    pub metrics: Arc<Metrics>,
    pub ports: Ports,
    /// `[stream]`: whether clients must encrypt RTSP.
    pub stream: crate::config::Stream,
    /// Launches configured to go straight into a lobby.
    pub configured: configured::Configured,
    pub planes: Planes,
    /// Fired on SIGTERM: new launches are refused while the host drains.
    pub shutdown: CancellationToken,
}

impl Host {
    /// Session `session_id` joins lobby `lobby_id`: its client sees the lobby from now on.
    pub async fn join_lobby(&self, lobby_id: &str, session_id: u32, pin: Option<&[u8]>) -> Result<(), LobbyError> {
        self.lobbies.join(lobby_id, session_id, pin).await
    }

    /// Session `session_id` leaves lobby `lobby_id` and gets its own app back.
    pub async fn leave_lobby(&self, lobby_id: &str, session_id: u32) -> Result<(), LobbyError> {
        self.lobbies.leave(lobby_id, session_id).await
    }

    /// Wolf's id of the client whose session this is (the API and events name sessions by it).
    pub fn wolf_client_id(&self, fingerprint: &str) -> String {
        self.clients.get(fingerprint).map(|c| crate::events::wolf_client_id(&c.cert_pem)).unwrap_or_default()
    }
}
