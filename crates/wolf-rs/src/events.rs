//! What happened on the host, for the API's event stream (`GET /api/v1/events`): pairings,
//! sessions, apps. Publishing never blocks and never fails: events go to a bounded broadcast
//! buffer, and a subscriber that falls behind loses the oldest (counted,
//! `wolf_api_events_dropped_total`). Names and payloads follow Wolf's where Wolf has the event
//! (`wolf::core::events::PairSignal`, `StreamSession`, `StopStreamEvent`); the rest are ours
//! (`wolf_rs::events::…`). A session whose app exits ends with `SessionEnded` reason `app_exited`.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events a subscriber may fall behind by before it loses the oldest.
pub const BUFFER: usize = 256;

/// A session as Wolf's API shows it (`StreamSession`). The AES key is not disclosed (empty); the
/// last fields are wolf-rs's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamSession {
    pub client_ip: String,
    /// Not disclosed: empty.
    pub aes_key: String,
    /// Not disclosed: empty.
    pub aes_iv: String,
    /// Not used by wolf-rs: empty.
    pub rtsp_fake_ip: String,
    pub video_width: u32,
    pub video_height: u32,
    pub video_refresh_rate: u32,
    pub audio_channel_count: u8,
    pub app_id: String,
    /// Wolf's client id (a hash of the client's certificate), also the session's id in Wolf's routes.
    pub client_id: String,
    /// The `uniqueid` its client launched with (a gateway gives each stream its own).
    pub client_unique_id: String,
    /// wolf-rs's own session number (`sessionUrl0`, the metrics, the logs).
    pub id: u32,
    /// launching | paused | streaming | stopping.
    pub state: String,
}

impl StreamSession {
    /// `s` as shown to the API, its client's id given.
    pub fn of(s: &crate::sessions::Session, client_id: String) -> StreamSession {
        StreamSession {
            client_ip: s.client_ip.to_string(),
            aes_key: String::new(),
            aes_iv: String::new(),
            rtsp_fake_ip: String::new(),
            video_width: s.mode.width,
            video_height: s.mode.height,
            video_refresh_rate: s.mode.fps,
            audio_channel_count: s.channels(),
            app_id: s.app_id.to_string(),
            client_id,
            client_unique_id: s.client_unique_id.clone(),
            id: s.id,
            state: s.state.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A client began pairing and waits for its PIN (`GET /api/v1/pair/pending` lists it).
    PairSignal {
        client_ip: String,
        host_ip: String,
    },
    /// A client finished pairing.
    ClientPaired {
        client_id: String,
        name: String,
        client_ip: String,
    },
    /// A client was unpaired.
    ClientUnpaired {
        client_id: String,
        name: String,
    },
    /// An app was added through the API (`id` as its adder gave it).
    AppAdded {
        id: String,
        title: String,
    },
    /// An added app was removed.
    AppRemoved {
        id: String,
        title: String,
    },
    /// A session started (`/launch`).
    StreamSession(StreamSession),
    /// A launch failed: `reason` as in `wolf_session_creation_errors_total`.
    SessionFailed {
        client_id: String,
        app_id: String,
        reason: String,
    },
    /// A session ended (Wolf's stop event).
    StopStreamEvent {
        session_id: String,
    },
    /// Why it ended: `reason` as in `wolf_sessions_ended_total` (`app_exited` when its app did).
    SessionEnded {
        session_id: String,
        id: u32,
        reason: String,
    },
    /// A lobby started (its PIN is not told).
    CreateLobbyEvent {
        id: String,
        name: String,
        profile_id: String,
        multi_user: bool,
        stop_when_everyone_leaves: bool,
    },
    /// A session (wolf-rs's number) joined a lobby.
    JoinLobbyEvent {
        lobby_id: String,
        moonlight_session_id: u32,
    },
    LeaveLobbyEvent {
        lobby_id: String,
        moonlight_session_id: u32,
    },
    StopLobbyEvent {
        lobby_id: String,
    },
}

impl Event {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::PairSignal { .. } => "wolf::core::events::PairSignal",
            Event::StreamSession(_) => "wolf::core::events::StreamSession",
            Event::StopStreamEvent { .. } => "wolf::core::events::StopStreamEvent",
            Event::ClientPaired { .. } => "wolf_rs::events::ClientPaired",
            Event::ClientUnpaired { .. } => "wolf_rs::events::ClientUnpaired",
            Event::AppAdded { .. } => "wolf_rs::events::AppAdded",
            Event::AppRemoved { .. } => "wolf_rs::events::AppRemoved",
            Event::SessionFailed { .. } => "wolf_rs::events::SessionFailed",
            Event::SessionEnded { .. } => "wolf_rs::events::SessionEnded",
            Event::CreateLobbyEvent { .. } => "wolf::core::events::CreateLobbyEvent",
            Event::JoinLobbyEvent { .. } => "wolf::core::events::JoinLobbyEvent",
            Event::LeaveLobbyEvent { .. } => "wolf::core::events::LeaveLobbyEvent",
            Event::StopLobbyEvent { .. } => "wolf::core::events::StopLobbyEvent",
        }
    }

    /// The SSE `data:` payload (one line of JSON).
    pub fn data(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Event::PairSignal { client_ip, host_ip } => json!({ "client_ip": client_ip, "host_ip": host_ip }),
            Event::ClientPaired { client_id, name, client_ip } => {
                json!({ "client_id": client_id, "name": name, "client_ip": client_ip })
            }
            Event::ClientUnpaired { client_id, name } => json!({ "client_id": client_id, "name": name }),
            Event::AppAdded { id, title } | Event::AppRemoved { id, title } => json!({ "id": id, "title": title }),
            Event::StreamSession(s) => serde_json::to_value(s).unwrap_or_default(),
            Event::SessionFailed { client_id, app_id, reason } => {
                json!({ "client_id": client_id, "app_id": app_id, "reason": reason })
            }
            Event::StopStreamEvent { session_id } => json!({ "session_id": session_id }),
            Event::SessionEnded { session_id, id, reason } => {
                json!({ "session_id": session_id, "id": id, "reason": reason })
            }
            Event::CreateLobbyEvent { id, name, profile_id, multi_user, stop_when_everyone_leaves } => json!({
                "id": id, "name": name, "profile_id": profile_id, "multi_user": multi_user,
                "stop_when_everyone_leaves": stop_when_everyone_leaves,
            }),
            Event::JoinLobbyEvent { lobby_id, moonlight_session_id }
            | Event::LeaveLobbyEvent { lobby_id, moonlight_session_id } => {
                json!({ "lobby_id": lobby_id, "moonlight_session_id": moonlight_session_id.to_string() })
            }
            Event::StopLobbyEvent { lobby_id } => json!({ "lobby_id": lobby_id }),
        }
    }

    /// The event as one SSE frame.
    pub fn frame(&self) -> String {
        format!("event: {}\ndata: {}\n\n", self.name(), self.data())
    }
}

/// The hub every part of the host publishes to.
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events { tx: broadcast::channel(BUFFER).0 }
    }
}

impl Events {
    /// Never blocks; with no subscriber the event is simply not kept.
    pub fn publish(&self, e: Event) {
        tracing::debug!(event = e.name(), "event");
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// Wolf's client id: libstdc++'s `std::hash<std::string>` (64-bit MurmurHash2 variant, seed
/// 0xc70f6907) of the client's PEM certificate, in decimal, so ids match a Wolf host's.
pub fn wolf_client_id(cert_pem: &str) -> String {
    const MUL: u64 = 0xc6a4_a793_5bd1_e995;
    let shift_mix = |v: u64| v ^ (v >> 47);
    let bytes = cert_pem.as_bytes();
    let mut h: u64 = 0xc70f_6907 ^ (bytes.len() as u64).wrapping_mul(MUL);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut d = [0u8; 8];
        d.copy_from_slice(c);
        h ^= shift_mix(u64::from_le_bytes(d).wrapping_mul(MUL)).wrapping_mul(MUL);
        h = h.wrapping_mul(MUL);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut d = [0u8; 8];
        d[..rest.len()].copy_from_slice(rest);
        h ^= u64::from_le_bytes(d);
        h = h.wrapping_mul(MUL);
    }
    h = shift_mix(h).wrapping_mul(MUL);
    shift_mix(h).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_the_ones_wolf_computes() {
        // Wolf's own API tests pair a client whose certificate text is this.
        assert_eq!(wolf_client_id("A VERY VALID CERTIFICATE"), "10594003729173467913");
        assert_eq!(wolf_client_id(""), "6142509188972423790");
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_loses_the_oldest_not_the_host() {
        let events = Events::default();
        let mut rx = events.subscribe();
        for i in 0..BUFFER as u32 + 10 {
            events.publish(Event::StopStreamEvent { session_id: i.to_string() });
        }
        assert!(matches!(rx.recv().await, Err(broadcast::error::RecvError::Lagged(10))));
        let next = rx.recv().await.unwrap();
        assert_eq!(next, Event::StopStreamEvent { session_id: "10".into() });
        assert_eq!(next.frame(), "event: wolf::core::events::StopStreamEvent\ndata: {\"session_id\":\"10\"}\n\n");
    }
}
