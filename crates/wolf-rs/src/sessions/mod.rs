//! Launched sessions, one per paired client certificate. Readers get snapshots; every change is
//! handed to the store's writer thread in order, so `active_sessions.json` follows the map.

pub mod live;
pub mod reconcile;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::runners::RunnerHandle;
pub use store::{SessionPorts, SessionRecord, SessionState};
pub use wolf_protocol::launch::Mode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: u32,
    pub client_fingerprint: String,
    pub client_ip: IpAddr,
    /// The `uniqueid` the client launched with (Wolf's `client_unique_id`; a gateway gives each
    /// of its streams its own).
    pub client_unique_id: String,
    pub app_id: u32,
    pub mode: Mode,
    /// AES key for the control, video, audio and input streams.
    pub rikey: [u8; 16],
    pub rikeyid: i32,
    pub surround_audio_info: u32,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub state: SessionState,
    pub runner: RunnerHandle,
    /// The session's own X display, when its app has one.
    pub display: Option<crate::runners::display::DisplayHandle>,
    /// The session's own audio sink, when its app has one.
    pub sink: Option<crate::runners::audio::SinkHandle>,
    pub ports: SessionPorts,
    /// How far the RTSP negotiation got.
    pub rtsp: RtspProgress,
    /// The lobby the session joined: its client sees and hears the lobby's display and sink, and
    /// its input goes there.
    pub lobby: Option<LobbyLink>,
    /// Its session process, which streams it.
    pub process: Option<crate::session_process::ProcessRecord>,
}

/// A session's place in a lobby: the lobby's display and sink it streams instead of its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LobbyLink {
    pub id: String,
    pub display: Option<crate::runners::display::DisplayHandle>,
    pub sink: Option<crate::runners::audio::SinkHandle>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

impl Session {
    /// Move to `to` if the lifecycle allows it (launching → paused → streaming ⇄ paused, anything
    /// → stopping, never out of stopping); false, and nothing changed, otherwise.
    pub fn enter(&mut self, to: SessionState) -> bool {
        use SessionState::*;
        let allowed = matches!(
            (self.state, to),
            (Launching, Paused)
                | (Paused, Streaming)
                | (Streaming, Paused)
                | (Launching | Paused | Streaming, Stopping)
        );
        if allowed {
            self.state = to;
            self.updated = SystemTime::now();
        } else if self.state != to {
            tracing::debug!(session = self.id, from = self.state.as_str(), to = to.as_str(), "state change refused");
        }
        allowed
    }

    /// A session with nothing but its id: what start-up keeps a lobby's parts as; tests and the
    /// fuzz harness fill in the rest.
    pub fn placeholder(id: u32) -> Session {
        Session {
            id,
            client_fingerprint: String::new(),
            client_ip: IpAddr::from([0, 0, 0, 0]),
            app_id: 0,
            mode: Mode { width: 0, height: 0, fps: 0 },
            rikey: [0; 16],
            rikeyid: 0,
            surround_audio_info: 0,
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
            state: SessionState::Paused,
            runner: RunnerHandle::None,
            display: None,
            sink: None,
            ports: SessionPorts::default(),
            rtsp: RtspProgress::default(),
            lobby: None,
            process: None,
            client_unique_id: String::new(),
        }
    }

    /// The display the session's client sees and types into: its lobby's, else its own.
    pub fn streamed_display(&self) -> Option<&crate::runners::display::DisplayHandle> {
        match &self.lobby {
            Some(l) => l.display.as_ref(),
            None => self.display.as_ref(),
        }
    }

    /// The sink the session's client hears: its lobby's, else its own.
    pub fn streamed_sink(&self) -> Option<&crate::runners::audio::SinkHandle> {
        match &self.lobby {
            Some(l) => l.sink.as_ref(),
            None => self.sink.as_ref(),
        }
    }

    /// What runs for the session: app, display, sink.
    pub fn parts(&self) -> crate::runners::Parts {
        crate::runners::Parts { app: self.runner.clone(), display: self.display.clone(), sink: self.sink.clone() }
    }

    /// The channel count the client asked for at launch (`surroundAudioInfo`'s low 16 bits).
    pub fn channels(&self) -> u8 {
        match self.surround_audio_info & 0xffff {
            6 => 6,
            8 => 8,
            _ => 2,
        }
    }

    pub fn record(&self, last_activity: Option<SystemTime>) -> SessionRecord {
        SessionRecord {
            id: self.id,
            client_fingerprint: self.client_fingerprint.clone(),
            client_ip: self.client_ip,
            app_id: self.app_id,
            mode: self.mode.to_string(),
            codec: self.rtsp.stream.as_ref().map(|s| if s.video_format == 1 { "hevc" } else { "h264" }.to_owned()),
            ports: self.ports,
            runner: self.runner.clone(),
            display: self.display.clone(),
            sink: self.sink.clone(),
            lobby: self.lobby.clone(),
            process: self.process.clone(),
            client_unique_id: self.client_unique_id.clone(),
            state: self.state,
            surround_audio_info: self.surround_audio_info,
            created_unix_ms: unix_ms(self.created),
            updated_unix_ms: unix_ms(self.updated),
            last_activity_unix_ms: last_activity.map(unix_ms),
        }
    }

    /// A session read back from the store: no keys (the client resumes with new ones), no RTSP.
    pub fn from_record(r: &SessionRecord) -> Option<Session> {
        Some(Session {
            id: r.id,
            client_fingerprint: r.client_fingerprint.clone(),
            client_ip: r.client_ip,
            app_id: r.app_id,
            mode: Mode::parse(&r.mode)?,
            rikey: [0; 16],
            rikeyid: 0,
            surround_audio_info: r.surround_audio_info,
            created: from_unix_ms(r.created_unix_ms),
            updated: from_unix_ms(r.updated_unix_ms),
            state: r.state,
            runner: r.runner.clone(),
            display: r.display.clone(),
            sink: r.sink.clone(),
            ports: r.ports,
            rtsp: RtspProgress::default(),
            lobby: r.lobby.clone(),
            process: r.process.clone(),
            client_unique_id: r.client_unique_id.clone(),
        })
    }
}

/// The RTSP handshake of one session, in the order the client runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtspProgress {
    /// The client speaks encrypted RTSP (it sent `corever`, so `sessionUrl0` said `rtspenc://`):
    /// its messages are found by the rikey that opens them, never by its address.
    pub encrypted: bool,
    /// The `Session:` id handed out at the first SETUP.
    pub rtsp_session: Option<String>,
    /// `X-SS-Ping-Payload`: the client puts it in its UDP pings so we know them.
    pub ping_payload: String,
    /// `X-SS-Connect-Data`: the client passes it as its ENet connect data.
    pub connect_data: u32,
    pub setup_audio: bool,
    pub setup_video: bool,
    pub setup_control: bool,
    /// What the client's ANNOUNCE asked for.
    pub stream: Option<wolf_protocol::rtsp::StreamConfig>,
    pub playing: bool,
    /// A plain-RTSP client reached the session's own port: the shared port no longer finds the
    /// session by address.
    pub own_port_used: bool,
}

/// The sessions by client, and the indexes every plane looks them up by: rebuilt with each change
/// (the table is copied on write anyway), so no lookup scans.
#[derive(Default)]
struct Table {
    by_client: BTreeMap<String, Session>,
    by_id: HashMap<u32, String>,
    /// What each session has while it lives, carried from table to table while it is in one.
    live: HashMap<u32, Arc<live::Live>>,
}

impl Table {
    /// The table after a change; a session no longer in it has ended (its `Live` is told).
    fn new(by_client: BTreeMap<String, Session>, before: &Table) -> Table {
        let mut t = Table { by_client, ..Table::default() };
        for (fp, s) in &t.by_client {
            t.live.insert(s.id, before.live.get(&s.id).cloned().unwrap_or_default());
            t.by_id.insert(s.id, fp.clone());
        }
        for (id, l) in &before.live {
            if !t.live.contains_key(id) {
                l.end();
            }
        }
        t
    }

    fn by_id(&self, id: u32) -> Option<&Session> {
        self.by_client.get(self.by_id.get(&id)?)
    }
}

#[derive(Default)]
pub struct Sessions {
    by_client: RwLock<Arc<Table>>,
    next_id: AtomicU32,
    /// Where every change is persisted; without one (tests of parts) nothing is.
    store: Option<store::Writer>,
}

/// A session that [`Sessions::begin_end`] ended in the table.
#[derive(Debug)]
pub struct Ending {
    /// As it was before.
    pub session: Session,
    /// Nothing ran for it: it is out of the table already.
    pub removed: bool,
    /// Whether the change reached the file.
    pub written: store::WriteResult,
    /// What it had (ended now), when it had any.
    pub live: Option<Arc<live::Live>>,
}

/// Why a new session was not added to the table.
#[derive(Debug)]
pub enum AddError {
    AlreadyRunning {
        app_id: u32,
    },
    /// The session could not be saved.
    Store(store::WriteError),
}

impl Sessions {
    fn snapshot(&self) -> Arc<Table> {
        match self.by_client.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A table persisted through `writer`.
    pub fn with_store(writer: store::Writer) -> Sessions {
        Sessions { store: Some(writer), ..Sessions::default() }
    }

    /// The records to persist: `t`'s sessions in `m` (called under the table's lock, so activity
    /// is read from `t`, never through a new snapshot).
    fn records_of(m: &BTreeMap<String, Session>, t: &Table) -> Vec<SessionRecord> {
        m.values().map(|s| s.record(t.live.get(&s.id).and_then(|l| l.last_activity()))).collect()
    }

    /// Change the map; a change to what is persisted is queued for the writer while the lock is
    /// held, so snapshots reach it in order. With `wait`, the receiver reports that write.
    fn update_inner<R>(
        &self,
        wait: bool,
        f: impl FnOnce(&mut BTreeMap<String, Session>) -> R,
    ) -> (R, Option<tokio::sync::oneshot::Receiver<store::WriteResult>>) {
        let mut guard = match self.by_client.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut next = guard.by_client.clone();
        let r = f(&mut next);
        let mut done = None;
        if let Some(w) = &self.store {
            let after = Self::records_of(&next, &guard);
            if wait || after != Self::records_of(&guard.by_client, &guard) {
                done = w.submit(after, wait);
            }
        }
        let table = Table::new(next, &guard);
        *guard = Arc::new(table);
        (r, done)
    }

    fn update<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Session>) -> R) -> R {
        self.update_inner(false, f).0
    }

    /// Put sessions read back from the store (start-up).
    pub fn restore(&self, sessions: Vec<Session>) {
        let top = sessions.iter().map(|s| s.id).max().unwrap_or(0);
        self.next_id.fetch_max(top, Ordering::Relaxed);
        self.update(|m| {
            for s in sessions {
                m.insert(s.client_fingerprint.clone(), s);
            }
        });
    }

    /// Write the current state now and wait for it: after start-up's reconcile, so a saved session
    /// that was not adopted is not read back from the file as running.
    pub async fn flush(&self) -> store::WriteResult {
        let ((), done) = self.update_inner(true, |_| ());
        match done {
            Some(done) => done.await.unwrap_or(Err(store::WriteError::Gone)),
            None => Ok(()),
        }
    }

    /// Write the current state now and wait for it (blocking; shutdown).
    pub fn flush_blocking(&self) -> store::WriteResult {
        match &self.store {
            Some(w) => {
                let t = self.snapshot();
                w.flush_blocking(Self::records_of(&t.by_client, &t))
            }
            None => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        self.snapshot().by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn for_client(&self, fingerprint: &str) -> Option<Session> {
        self.snapshot().by_client.get(fingerprint).cloned()
    }

    pub fn for_ip(&self, ip: IpAddr) -> Option<Session> {
        self.snapshot().by_client.values().find(|s| s.client_ip == ip).cloned()
    }

    pub fn list(&self) -> Vec<Session> {
        self.snapshot().by_client.values().cloned().collect()
    }

    pub fn by_id(&self, id: u32) -> Option<Session> {
        self.snapshot().by_id(id).cloned()
    }

    /// A new session for this client; the id is filled in here. Returns once the store has it
    /// on disk; if it cannot be written the session is taken back out and the error returned.
    pub async fn launch(&self, mut s: Session) -> Result<Session, AddError> {
        let (r, done) = self.update_inner(true, |m| {
            if let Some(existing) = m.get(&s.client_fingerprint) {
                return Err(AddError::AlreadyRunning { app_id: existing.app_id });
            }
            s.id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            m.insert(s.client_fingerprint.clone(), s.clone());
            Ok(s)
        });
        let s = r?;
        if let Some(done) = done {
            let written = done.await.unwrap_or(Err(store::WriteError::Gone));
            if let Err(e) = written {
                self.remove_by_id(s.id);
                return Err(AddError::Store(e));
            }
        }
        Ok(s)
    }

    /// New keys for an existing session (`/resume`), whether its client encrypts RTSP, the mode it
    /// asked for, and its display when that was resized to it.
    pub fn resume(
        &self,
        fingerprint: &str,
        rikey: [u8; 16],
        rikeyid: i32,
        rtsp_encrypted: bool,
        mode: Option<Mode>,
        display: Option<crate::runners::display::DisplayHandle>,
    ) -> Option<Session> {
        self.update(|m| {
            let s = m.get_mut(fingerprint)?;
            s.rikey = rikey;
            s.rikeyid = rikeyid;
            s.rtsp.encrypted = rtsp_encrypted;
            if let Some(mode) = mode {
                s.mode = mode;
            }
            if display.is_some() {
                s.display = display;
            }
            Some(s.clone())
        })
    }

    /// (id, rikey) of every session whose client encrypts RTSP: an encrypted message belongs to the
    /// one whose key opens it.
    pub fn rtsp_keys(&self) -> Vec<(u32, [u8; 16])> {
        self.snapshot().by_client.values().filter(|s| s.rtsp.encrypted).map(|s| (s.id, s.rikey)).collect()
    }

    /// Change the session of the plain-RTSP client at `ip` that has not reached its own RTSP port
    /// (on the shared port plain RTSP carries nothing else to know it by); sessions whose client
    /// encrypts RTSP are never found this way. Returns the result.
    pub fn update_plain_rtsp<R>(
        &self,
        ip: IpAddr,
        eligible: impl Fn(&Session) -> bool,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Option<R> {
        self.update(|m| {
            m.values_mut()
                .find(|s| s.client_ip == ip && !s.rtsp.encrypted && !s.rtsp.own_port_used && eligible(s))
                .map(f)
        })
    }

    pub fn contains_id(&self, id: u32) -> bool {
        self.snapshot().by_id.contains_key(&id)
    }

    /// The key of session `id` (checked again under the write lock: it may have gone since).
    fn key_of(&self, id: u32) -> Option<String> {
        self.snapshot().by_id.get(&id).cloned()
    }

    pub fn update_by_id<R>(&self, id: u32, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        let key = self.key_of(id)?;
        self.update(|m| m.get_mut(&key).filter(|s| s.id == id).map(f))
    }

    /// As `update_by_id`, returning once the change is on disk.
    pub async fn update_by_id_saved<R>(
        &self,
        id: u32,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Result<Option<R>, store::WriteError> {
        let Some(key) = self.key_of(id) else { return Ok(None) };
        let (r, done) = self.update_inner(true, |m| m.get_mut(&key).filter(|s| s.id == id).map(f));
        if let Some(done) = done {
            done.await.unwrap_or(Err(store::WriteError::Gone))?;
        }
        Ok(r)
    }

    /// What session `id` has while it lives.
    pub fn live(&self, id: u32) -> Option<Arc<live::Live>> {
        self.snapshot().live.get(&id).cloned()
    }

    /// Every session's live part (the stream manager stops what still runs at shutdown).
    pub fn lives(&self) -> Vec<(u32, Arc<live::Live>)> {
        self.snapshot().live.iter().map(|(id, l)| (*id, l.clone())).collect()
    }

    /// The client of session `id` was heard from. (Control-channel pings arrive every 100 ms: the
    /// time is kept in the session's `Live`, apart from the copy-on-write table.)
    pub fn touch(&self, id: u32) {
        if let Some(l) = self.snapshot().live.get(&id) {
            l.touch();
        }
    }

    pub fn last_activity(&self, id: u32) -> Option<SystemTime> {
        self.snapshot().live.get(&id)?.last_activity()
    }

    pub fn remove_by_id(&self, id: u32) -> Option<Session> {
        let key = self.key_of(id)?;
        self.update(|m| if m.get(&key).is_some_and(|s| s.id == id) { m.remove(&key) } else { None })
    }

    /// End session `id` in the table: removed when nothing runs for it, else marked stopping (a
    /// crash mid-stop finishes the stop at the next start). Returns once that is on disk; `None`
    /// when the session is gone or already stopping (another end has it).
    pub async fn begin_end(&self, id: u32) -> Option<Ending> {
        let key = self.key_of(id)?;
        let live = self.live(id);
        let (r, done) = self.update_inner(true, |m| {
            let s = m.get_mut(&key).filter(|s| s.id == id && s.state != SessionState::Stopping)?;
            let before = s.clone();
            if let Some(l) = live.as_ref() {
                l.end();
            }
            if before.parts().is_empty() {
                m.remove(&key);
            } else {
                s.enter(SessionState::Stopping);
            }
            Some(before)
        });
        let session = r?;
        let written = match done {
            Some(done) => done.await.unwrap_or_else(|_| Err(store::WriteError::Gone)),
            None => Ok(()),
        };
        let removed = session.parts().is_empty();
        Some(Ending { session, removed, written, live })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(fp: &str) -> Session {
        Session {
            client_fingerprint: fp.into(),
            client_ip: "10.0.0.1".parse().unwrap(),
            app_id: 1,
            mode: Mode { width: 1280, height: 720, fps: 60 },
            rikeyid: 1,
            state: SessionState::Launching,
            ports: SessionPorts { rtsp: 1, video: 2, audio: 3, control: 4 },
            ..Session::placeholder(0)
        }
    }

    #[tokio::test]
    async fn lookups_by_id_follow_every_change() {
        let sessions = Sessions::default();
        let a = sessions.launch(session("a")).await.unwrap();
        let b = sessions.launch(session("b")).await.unwrap();
        assert_eq!(sessions.by_id(b.id).map(|s| s.client_fingerprint), Some("b".into()));
        sessions.remove_by_id(a.id);
        assert!(sessions.by_id(a.id).is_none());
        // A new session of the same client is not reached through the old id.
        let a2 = sessions.launch(session("a")).await.unwrap();
        assert_ne!(a2.id, a.id);
        assert_eq!(sessions.update_by_id(a.id, |_| ()), None);
        assert!(sessions.update_by_id(a2.id, |_| ()).is_some());
    }

    #[tokio::test]
    async fn ending_a_session_releases_what_it_has_once() {
        let sessions = Sessions::default();
        let mut with_app = session("a");
        with_app.runner = RunnerHandle::Process { pid: 1, start_time: 1 };
        let a = sessions.launch(with_app).await.unwrap();
        let b = sessions.launch(session("b")).await.unwrap();
        let (la, lb) = (sessions.live(a.id).unwrap(), sessions.live(b.id).unwrap());
        for l in [&la, &lb] {
            l.touch();
            assert_eq!(l.rtsp_port_or(|| Some(4242)), Some(4242));
        }
        assert!(sessions.last_activity(a.id).is_some());
        // A session whose app runs is marked stopping; what it had is released now.
        let ending = sessions.begin_end(a.id).await.unwrap();
        assert!(!ending.removed && ending.written.is_ok());
        assert!(la.ended().is_cancelled());
        assert!(ending.live.as_ref().is_some_and(|l| Arc::ptr_eq(l, &la)), "the host gets its Live to finish it");
        assert_eq!(la.rtsp_port_or(|| Some(1)), Some(4242), "no new RTSP port once ended (the old one closes)");
        assert!(!lb.ended().is_cancelled(), "the other session's parts are untouched");
        assert!(sessions.begin_end(a.id).await.is_none(), "a second end is a no-op");
        // A session with nothing running leaves the table at once, its Live told.
        assert!(sessions.begin_end(b.id).await.unwrap().removed);
        assert!(lb.ended().is_cancelled() && sessions.by_id(b.id).is_none() && sessions.live(b.id).is_none());
        assert!(sessions.begin_end(b.id).await.is_none());
        // The other session is untouched until it leaves the table.
        let c = sessions.launch(session("c")).await.unwrap();
        let lc = sessions.live(c.id).unwrap();
        sessions.remove_by_id(c.id);
        assert!(lc.ended().is_cancelled(), "leaving the table any way ends it");
    }

    #[test]
    fn the_lifecycle_allows_only_its_transitions() {
        use SessionState::*;
        let mut s = session("a");
        assert!(!s.enter(Streaming), "no stream before the app runs");
        assert!(s.enter(Paused) && s.enter(Streaming) && s.enter(Paused) && s.enter(Streaming));
        assert!(s.enter(Stopping));
        for to in [Launching, Paused, Streaming] {
            assert!(!s.enter(to), "never out of stopping: {to:?}");
        }
        assert_eq!(s.state, Stopping);
    }

    #[test]
    fn end_reasons_map_to_the_termination_codes_once() {
        use crate::commands::EndReason;
        use wolf_protocol::control::{TERMINATION_ENCODER_ERROR, TERMINATION_GRACEFUL};
        assert_eq!(EndReason::StreamFailed.termination(), TERMINATION_ENCODER_ERROR);
        for r in [EndReason::Cancelled, EndReason::AppExited, EndReason::Idle, EndReason::Shutdown] {
            assert_eq!(r.termination(), TERMINATION_GRACEFUL, "{r:?}");
        }
        let names: std::collections::HashSet<_> = EndReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), EndReason::ALL.len());
    }
}
