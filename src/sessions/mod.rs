//! Launched sessions, one per paired client certificate. In memory for now; readers get snapshots.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// `WxHxFPS` from `/launch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        let mut it = s.split('x').map(|p| p.parse::<u32>().ok());
        let (w, h, f) = (it.next()??, it.next()??, it.next()??);
        if it.next().is_some() || w == 0 || h == 0 || f == 0 || w > 16384 || h > 16384 || f > 1000 {
            return None;
        }
        Some(Mode { width: w, height: h, fps: f })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: u32,
    pub client_fingerprint: String,
    pub client_ip: IpAddr,
    pub app_id: u32,
    pub mode: Mode,
    /// AES key for the control, video, audio and input streams.
    pub rikey: [u8; 16],
    pub rikeyid: i32,
    pub surround_audio_info: u32,
    pub created: SystemTime,
    /// How far the RTSP negotiation got.
    pub rtsp: RtspProgress,
}

/// The RTSP handshake of one session, in the order the client runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtspProgress {
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
    pub stream: Option<crate::protocol::rtsp::StreamConfig>,
    pub playing: bool,
}

#[derive(Default)]
pub struct Sessions {
    by_client: RwLock<Arc<BTreeMap<String, Session>>>,
    next_id: AtomicU32,
    /// Last message from each session's client (control-channel pings arrive every 100 ms, so this
    /// is kept apart from the copy-on-write session map).
    activity: std::sync::Mutex<std::collections::HashMap<u32, SystemTime>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LaunchError {
    AlreadyRunning { app_id: u32 },
}

impl Sessions {
    fn snapshot(&self) -> Arc<BTreeMap<String, Session>> {
        match self.by_client.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Session>) -> R) -> R {
        let mut guard = match self.by_client.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut next = (**guard).clone();
        let r = f(&mut next);
        *guard = Arc::new(next);
        r
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn for_client(&self, fingerprint: &str) -> Option<Session> {
        self.snapshot().get(fingerprint).cloned()
    }

    pub fn for_ip(&self, ip: IpAddr) -> Option<Session> {
        self.snapshot().values().find(|s| s.client_ip == ip).cloned()
    }

    pub fn list(&self) -> Vec<Session> {
        self.snapshot().values().cloned().collect()
    }

    /// A new session for this client; the id is filled in here.
    pub fn launch(&self, mut s: Session) -> Result<Session, LaunchError> {
        self.update(|m| {
            if let Some(existing) = m.get(&s.client_fingerprint) {
                return Err(LaunchError::AlreadyRunning { app_id: existing.app_id });
            }
            s.id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            m.insert(s.client_fingerprint.clone(), s.clone());
            Ok(s)
        })
    }

    /// New keys for an existing session (`/resume`).
    pub fn resume(&self, fingerprint: &str, rikey: [u8; 16], rikeyid: i32) -> Option<Session> {
        self.update(|m| {
            let s = m.get_mut(fingerprint)?;
            s.rikey = rikey;
            s.rikeyid = rikeyid;
            Some(s.clone())
        })
    }

    /// Change the session of the client at `ip` (RTSP knows clients by address); returns the result.
    pub fn update_by_ip<R>(&self, ip: IpAddr, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        self.update(|m| m.values_mut().find(|s| s.client_ip == ip).map(f))
    }

    pub fn update_by_id<R>(&self, id: u32, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        self.update(|m| m.values_mut().find(|s| s.id == id).map(f))
    }

    /// The client of session `id` was heard from.
    pub fn touch(&self, id: u32) {
        if let Ok(mut a) = self.activity.lock() {
            a.insert(id, SystemTime::now());
        }
    }

    pub fn last_activity(&self, id: u32) -> Option<SystemTime> {
        self.activity.lock().ok()?.get(&id).copied()
    }

    fn forget_activity(&self, id: u32) {
        if let Ok(mut a) = self.activity.lock() {
            a.remove(&id);
        }
    }

    pub fn remove_by_id(&self, id: u32) -> Option<Session> {
        self.forget_activity(id);
        self.update(|m| {
            let key = m.iter().find(|(_, s)| s.id == id).map(|(k, _)| k.clone())?;
            m.remove(&key)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("1920x1080x60"), Some(Mode { width: 1920, height: 1080, fps: 60 }));
        for bad in ["", "1920x1080", "1920x1080x60x1", "0x1080x60", "ax1x1", "1920x1080x-60"] {
            assert_eq!(Mode::parse(bad), None, "{bad}");
        }
    }
}
