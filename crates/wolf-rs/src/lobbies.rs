//! Lobbies (Wolf's): an app with its own display, audio sink and input that runs apart from any
//! Moonlight session. A session joins one and its client then sees, hears and types into the
//! lobby instead of its own app (its streams restart on the lobby's sources, numbering carried
//! on, without the client reconnecting); it leaves and gets its own back. A lobby stops on request,
//! when its app exits, or when the last session leaves if it was created so. Lobbies live in
//! `lobbies.json` (versioned, atomic) and are adopted after a crash like sessions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::commands::{StreamCommand, StreamCommands};
use crate::config::{App, AudioKind, DisplayKind};
use crate::error::{ErrorKind, Result, ResultExt};
use crate::events::{Event, Events};
use crate::runners::audio::SinkHandle;
use crate::runners::display::DisplayHandle;
use crate::runners::{Parts, RunnerHandle, Runners};
use crate::sessions::{LobbyLink, Mode, Sessions};
use crate::state::versioned::{self, Loaded};

pub const FILE_NAME: &str = "lobbies.json";
pub const VERSION: u32 = 1;
/// Lobbies at once.
pub const MAX_LOBBIES: usize = 32;
/// A lobby's number (what its display, sink, runtime folder and container are named by) starts
/// here, far above any session's.
pub const FIRST_NUMBER: u32 = 0x4000_0000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lobby {
    /// A UUID.
    pub id: String,
    pub number: u32,
    pub name: String,
    pub profile_id: String,
    pub icon_png_path: Option<String>,
    pub multi_user: bool,
    pub stop_when_everyone_leaves: bool,
    /// Digits a joiner must give; `None`: anyone may join.
    pub pin: Option<Vec<u8>>,
    /// `WIDTHxHEIGHTxFPS` of its display.
    pub mode: String,
    pub channels: u8,
    pub app: App,
    pub runner: RunnerHandle,
    pub display: Option<DisplayHandle>,
    pub sink: Option<SinkHandle>,
    /// Files written before membership was kept only with the sessions listed it here; read and
    /// ignored.
    #[serde(default, rename = "members", skip_serializing)]
    pub legacy_members: serde::de::IgnoredAny,
}

impl Lobby {
    pub fn parts(&self) -> Parts {
        Parts { app: self.runner.clone(), display: self.display.clone(), sink: self.sink.clone() }
    }

    fn link(&self) -> LobbyLink {
        LobbyLink { id: self.id.clone(), display: self.display.clone(), sink: self.sink.clone() }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LobbiesFile {
    version: u32,
    lobbies: Vec<Lobby>,
}

/// What `create` needs.
pub struct NewLobby {
    pub name: String,
    pub profile_id: String,
    pub icon_png_path: Option<String>,
    pub multi_user: bool,
    pub stop_when_everyone_leaves: bool,
    pub pin: Option<Vec<u8>>,
    pub mode: Mode,
    pub channels: u8,
    /// Its runner (title, runner, env); the display and sink are the lobby's.
    pub app: App,
}

/// Why a lobby call failed; the messages are Wolf's where Wolf has one.
#[derive(Debug)]
pub enum LobbyError {
    InvalidLobby,
    InvalidPin,
    SessionNotFound,
    Full,
    TooMany,
    /// Its display, sink or app did not start.
    Start(crate::runners::LaunchFailure),
    /// `lobbies.json` could not be written.
    Store(crate::error::Error),
    /// The session's lobby link could not be saved.
    Link(crate::sessions::store::WriteError),
}

impl std::fmt::Display for LobbyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LobbyError::InvalidLobby => write!(f, "Invalid lobby ID"),
            LobbyError::InvalidPin => write!(f, "Invalid PIN"),
            LobbyError::SessionNotFound => write!(f, "Lobby or session not found"),
            LobbyError::Full => write!(f, "Lobby is full"),
            LobbyError::TooMany => write!(f, "{MAX_LOBBIES} lobbies exist already; stop one first"),
            LobbyError::Start(e) => write!(f, "The lobby did not start: {}", e.error),
            LobbyError::Store(e) => write!(f, "The lobby could not be saved: {e}"),
            LobbyError::Link(e) => write!(f, "The lobby could not be saved: {e}"),
        }
    }
}

pub struct Lobbies {
    path: PathBuf,
    map: Mutex<BTreeMap<String, Lobby>>,
    /// One change at a time (they start and stop processes and write the file).
    changing: tokio::sync::Mutex<()>,
    runners: Arc<Runners>,
    sessions: Arc<Sessions>,
    streams: StreamCommands,
    events: Arc<Events>,
}

/// Read `lobbies.json` (blocking; start-up). Corrupt: moved aside, no lobbies.
pub fn load(path: &Path) -> Result<Vec<Lobby>> {
    Ok(match versioned::read::<LobbiesFile>(path, VERSION, "lobbies")? {
        Loaded::Read(f) => f.lobbies,
        Loaded::Missing | Loaded::MovedAside(_) => Vec::new(),
    })
}

impl Lobbies {
    pub fn new(
        path: PathBuf,
        adopted: Vec<Lobby>,
        runners: Arc<Runners>,
        sessions: Arc<Sessions>,
        streams: StreamCommands,
        events: Arc<Events>,
    ) -> Lobbies {
        let map = adopted.into_iter().map(|l| (l.id.clone(), l)).collect();
        Lobbies { path, map: Mutex::new(map), changing: Default::default(), runners, sessions, streams, events }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Lobby>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn list(&self) -> Vec<Lobby> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Lobby> {
        self.lock().get(id).cloned()
    }

    async fn save(&self) -> std::result::Result<(), LobbyError> {
        let file = LobbiesFile { version: VERSION, lobbies: self.list() };
        let json = serde_json::to_vec_pretty(&file)
            .or_err(ErrorKind::Store, || "encoding lobbies.json")
            .map_err(LobbyError::Store)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || crate::state::atomic::write_atomic(&path, &json, 0o600))
            .await
            .or_err(ErrorKind::Store, || "the lobbies.json writer")
            .and_then(|written| written)
            .map_err(LobbyError::Store)
    }

    /// Start a lobby: its display at `mode`, its sink, its app. Returns its id.
    pub async fn create(&self, new: NewLobby) -> std::result::Result<String, LobbyError> {
        let _c = self.changing.lock().await;
        let lobbies = self.list();
        if lobbies.len() >= MAX_LOBBIES {
            return Err(LobbyError::TooMany);
        }
        let number = (FIRST_NUMBER..).find(|n| !lobbies.iter().any(|l| l.number == *n)).unwrap_or(FIRST_NUMBER);
        let id = uuid::Uuid::new_v4().to_string();
        let mut app = new.app;
        app.display.kind = DisplayKind::Virtual;
        app.display.width = new.mode.width;
        app.display.height = new.mode.height;
        app.audio.kind = AudioKind::Sink;
        let home = format!("lobby-{}", new.profile_id.chars().filter(char::is_ascii_alphanumeric).collect::<String>());
        let spec = crate::runners::LaunchSpec {
            session_id: number,
            app: &app,
            mode: new.mode,
            client: &home,
            channels: new.channels,
        };
        let parts = self.runners.start_session(&spec).await.map_err(LobbyError::Start)?;
        let lobby = Lobby {
            id: id.clone(),
            number,
            name: new.name,
            profile_id: new.profile_id,
            icon_png_path: new.icon_png_path,
            multi_user: new.multi_user,
            stop_when_everyone_leaves: new.stop_when_everyone_leaves,
            pin: new.pin,
            mode: new.mode.to_string(),
            channels: new.channels,
            app,
            runner: parts.app.clone(),
            display: parts.display.clone(),
            sink: parts.sink.clone(),
            legacy_members: serde::de::IgnoredAny,
        };
        self.lock().insert(id.clone(), lobby.clone());
        if let Err(e) = self.save().await {
            self.lock().remove(&id);
            let _ = self.runners.stop_session(number, &parts).await;
            return Err(e);
        }
        tracing::info!(lobby = %id, name = %lobby.name, number, "lobby created");
        self.events.publish(Event::CreateLobbyEvent {
            id: id.clone(),
            name: lobby.name,
            profile_id: lobby.profile_id,
            multi_user: lobby.multi_user,
            stop_when_everyone_leaves: lobby.stop_when_everyone_leaves,
        });
        Ok(id)
    }

    /// Session `session_id` joins: its client sees the lobby from now on.
    pub async fn join(&self, id: &str, session_id: u32, pin: Option<&[u8]>) -> std::result::Result<(), LobbyError> {
        self.join_checked(id, session_id, Some(pin)).await
    }

    /// Join as `sessions/configure` arranged it: the platform that configured it chose the lobby,
    /// so no PIN is asked (as in Wolf).
    pub async fn join_configured(&self, id: &str, session_id: u32) -> std::result::Result<(), LobbyError> {
        self.join_checked(id, session_id, None).await
    }

    /// `pin`: the PIN to check, or `None` for no check.
    async fn join_checked(
        &self,
        id: &str,
        session_id: u32,
        pin: Option<Option<&[u8]>>,
    ) -> std::result::Result<(), LobbyError> {
        let _c = self.changing.lock().await;
        let lobby = self.get(id).ok_or(LobbyError::InvalidLobby)?;
        if let Some(pin) = pin
            && lobby.pin.as_deref() != pin
        {
            return Err(LobbyError::InvalidPin);
        }
        let session = self.sessions.by_id(session_id).ok_or(LobbyError::SessionNotFound)?;
        if !lobby.multi_user && self.members(id).iter().any(|m| *m != session_id) {
            return Err(LobbyError::Full);
        }
        let link = lobby.link();
        let linked = self.sessions.update_by_id_saved(session_id, |s| s.lobby = Some(link)).await;
        match linked {
            Ok(Some(())) => {}
            Ok(None) => return Err(LobbyError::SessionNotFound),
            Err(e) => return Err(LobbyError::Link(e)),
        }
        self.save().await?;
        // Answered once the session's old streams are joined and the new ones start.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.switched(session_id)).await;
        tracing::info!(lobby = %id, session = session_id, "session joined the lobby");
        self.events.publish(Event::JoinLobbyEvent { lobby_id: id.to_owned(), moonlight_session_id: session_id });
        // The lobby it came from may be empty now.
        if let Some(old) = session.lobby.filter(|l| l.id != id)
            && self.empties(&old.id)
        {
            self.stop_locked(&old.id).await?;
        }
        Ok(())
    }

    /// Session `session_id` leaves: its own app again. Unknown ids change nothing (as in Wolf).
    pub async fn leave(&self, id: &str, session_id: u32) -> std::result::Result<(), LobbyError> {
        let _c = self.changing.lock().await;
        self.leave_locked(id, session_id).await
    }

    async fn leave_locked(&self, id: &str, session_id: u32) -> std::result::Result<(), LobbyError> {
        let in_it = self.sessions.by_id(session_id).is_some_and(|s| s.lobby.as_ref().is_some_and(|l| l.id == id));
        if !in_it {
            return Ok(());
        }
        let _ = self.sessions.update_by_id_saved(session_id, |s| s.lobby = None).await;
        // Before the lobby can stop below, its display must be free of this session's streams.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.switched(session_id)).await;
        self.left(id, session_id).await
    }

    /// A member of lobby `id` that nothing runs for ended (it left the table with its end):
    /// the lobby hears of it as a leave.
    pub async fn member_ended(&self, id: &str, session_id: u32) -> std::result::Result<(), LobbyError> {
        let _c = self.changing.lock().await;
        if self.get(id).is_none() {
            return Ok(());
        }
        self.left(id, session_id).await
    }

    /// Session `session_id` is out of lobby `id`: announced, and the lobby stops if it was to stop
    /// when everyone left.
    async fn left(&self, id: &str, session_id: u32) -> std::result::Result<(), LobbyError> {
        tracing::info!(lobby = %id, session = session_id, "session left the lobby");
        self.events.publish(Event::LeaveLobbyEvent { lobby_id: id.to_owned(), moonlight_session_id: session_id });
        if self.empties(id) {
            self.stop_locked(id).await?;
        } else {
            self.save().await?;
        }
        Ok(())
    }

    /// The sessions in lobby `id`: membership is kept only with the sessions (their link).
    pub fn members(&self, id: &str) -> Vec<u32> {
        self.sessions.list().iter().filter(|s| s.lobby.as_ref().is_some_and(|l| l.id == id)).map(|s| s.id).collect()
    }

    /// Lobby `id` has no member left and is to stop so.
    fn empties(&self, id: &str) -> bool {
        self.get(id).is_some_and(|l| l.stop_when_everyone_leaves) && self.members(id).is_empty()
    }

    /// Stop a lobby: its sessions get their own apps back, its app, sink and display stop.
    pub async fn stop(&self, id: &str, pin: Option<&[u8]>) -> std::result::Result<(), LobbyError> {
        let _c = self.changing.lock().await;
        let lobby = self.get(id).ok_or(LobbyError::InvalidLobby)?;
        if lobby.pin.as_deref() != pin {
            return Err(LobbyError::InvalidPin);
        }
        self.stop_locked(id).await
    }

    async fn stop_locked(&self, id: &str) -> std::result::Result<(), LobbyError> {
        let Some(lobby) = self.get(id) else { return Ok(()) };
        let mut restarted = Vec::new();
        for s in self.sessions.list().iter().filter(|s| s.lobby.as_ref().is_some_and(|l| l.id == id)) {
            let _ = self.sessions.update_by_id_saved(s.id, |s| s.lobby = None).await;
            restarted.push(self.switched(s.id));
            self.events.publish(Event::LeaveLobbyEvent { lobby_id: id.to_owned(), moonlight_session_id: s.id });
        }
        // Its display and sink go only once no stream captures them any more (bounded: a sender
        // thread joins within its frame wait).
        for done in restarted {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), done).await;
        }
        if let Err(e) = self.runners.stop_session(lobby.number, &lobby.parts()).await {
            tracing::warn!(lobby = %id, error = %e, "stopping the lobby's app");
        }
        self.lock().remove(id);
        self.save().await?;
        tracing::info!(lobby = %id, "lobby stopped");
        self.events.publish(Event::StopLobbyEvent { lobby_id: id.to_owned() });
        Ok(())
    }

    /// Stop every lobby (shutdown with `stop_apps_on_shutdown`).
    pub async fn stop_all(&self) {
        let _c = self.changing.lock().await;
        for l in self.list() {
            if let Err(e) = self.stop_locked(&l.id).await {
                tracing::warn!(lobby = %l.id, error = %e, "stopping a lobby at shutdown");
            }
        }
    }

    /// The session's sources changed: its streams restart on them, its input follows. The
    /// receiver hears when the old streams are joined.
    fn switched(&self, session_id: u32) -> tokio::sync::oneshot::Receiver<()> {
        let (done, joined) = tokio::sync::oneshot::channel();
        // Its input follows (the session process starts an injector on the new display).
        let _ = self.streams.send(StreamCommand::Restart { session_id, done: Some(done) });
        joined
    }

    /// Once a second: a lobby whose app, display or sink is gone stops (sessions that end leave
    /// their lobby as they end).
    pub async fn watch(&self) {
        for lobby in self.list() {
            if let Some(lost) = self.runners.lost(lobby.number, &lobby.parts()).await {
                tracing::info!(lobby = %lobby.id, ?lost, "a part of the lobby is gone: stopping it");
                let _c = self.changing.lock().await;
                let _ = self.stop_locked(&lobby.id).await;
            }
        }
    }
}

/// Start-up: the saved lobbies whose parts all still run are adopted; the rest are stopped.
pub async fn reconcile(saved: Vec<Lobby>, runners: &Runners) -> Vec<Lobby> {
    let mut adopted = Vec::new();
    for l in saved {
        if runners.lost(l.number, &l.parts()).await.is_none() {
            if let Some(d) = &l.display {
                runners.displays.adopt(d);
            }
            tracing::info!(lobby = %l.id, name = %l.name, "saved lobby adopted: its app still runs");
            adopted.push(l);
        } else {
            if let Err(e) = runners.stop_session(l.number, &l.parts()).await {
                tracing::warn!(lobby = %l.id, error = %e, "cleaning up a saved lobby");
            }
            tracing::info!(lobby = %l.id, "saved lobby's app is gone: cleaned up");
        }
    }
    adopted
}

/// Start-up: a session keeps its lobby only if that lobby was adopted.
pub fn link_adopted(mut sessions: Vec<crate::sessions::Session>, lobbies: &[Lobby]) -> Vec<crate::sessions::Session> {
    for s in &mut sessions {
        if s.lobby.as_ref().is_some_and(|l| !lobbies.iter().any(|a| a.id == l.id)) {
            s.lobby = None;
        }
    }
    sessions
}

/// The lobbies file's path in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}
