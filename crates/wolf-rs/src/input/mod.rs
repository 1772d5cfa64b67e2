//! Input from the control channel into the session's display. The control thread hands each event
//! to [`Inputs::submit`], which never blocks: every session with a display has its own injector
//! thread (its own X connection, XTEST) behind a bounded queue; a full queue drops the event and
//! counts it, so a flood cannot stall the control thread or its watchdog heartbeat. When the
//! client's control channel closes or the session ends, the injector releases every key and button
//! still down and ends.

pub mod keymap;
pub mod x11;

use std::collections::HashMap;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wolf_protocol::input::InputEvent;

use crate::metrics::Metrics;
use crate::sessions::Sessions;

/// Events waiting for one session's injector at most.
pub const QUEUE: usize = 1024;
/// After an injector could not reach its display, events are dropped this long before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

enum Slot {
    Running(SyncSender<InputEvent>),
    /// The display could not be reached at this time.
    Failed(Instant),
}

pub struct Inputs {
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    slots: Mutex<HashMap<u32, Slot>>,
}

impl Inputs {
    pub fn new(sessions: Arc<Sessions>, metrics: Arc<Metrics>) -> Inputs {
        Inputs { sessions, metrics, slots: Mutex::new(HashMap::new()) }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Slot>> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn dropped(&self, reason: &str) {
        self.metrics.input_dropped.with_label_values(&[reason]).inc();
    }

    /// Hand `event` of `session_id` (from its authenticated control peer) to its injector.
    pub fn submit(&self, session_id: u32, event: InputEvent) {
        self.metrics.input_events.with_label_values(&[event.kind()]).inc();
        if !injectable(&event) {
            // Gamepads, touch and pen: not injected here.
            self.dropped("unsupported");
            return;
        }
        let mut slots = self.slots();
        let sender = match slots.get(&session_id) {
            Some(Slot::Running(tx)) => tx.clone(),
            Some(Slot::Failed(at)) if at.elapsed() < RETRY_AFTER => {
                self.dropped("display_unavailable");
                return;
            }
            _ => {
                let Some(display) = self.sessions.by_id(session_id).and_then(|s| s.display) else {
                    self.dropped("no_display");
                    return;
                };
                match spawn(session_id, display.name()) {
                    Ok(tx) => {
                        slots.insert(session_id, Slot::Running(tx.clone()));
                        tx
                    }
                    Err(e) => {
                        tracing::warn!(session = session_id, error = %e, "input thread did not start");
                        slots.insert(session_id, Slot::Failed(Instant::now()));
                        self.dropped("display_unavailable");
                        return;
                    }
                }
            }
        };
        match sender.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped("queue_full"),
            Err(TrySendError::Disconnected(_)) => {
                // The injector ended: its display is gone or was never reachable.
                slots.insert(session_id, Slot::Failed(Instant::now()));
                self.dropped("display_unavailable");
            }
        }
    }

    /// The session's client left or the session ended: its injector releases what is held and ends.
    pub fn close(&self, session_id: u32) {
        self.slots().remove(&session_id);
    }
}

fn injectable(event: &InputEvent) -> bool {
    matches!(
        event,
        InputEvent::Key { .. }
            | InputEvent::Text(_)
            | InputEvent::MouseMove { .. }
            | InputEvent::MousePosition { .. }
            | InputEvent::MouseButton { .. }
            | InputEvent::Scroll { .. }
            | InputEvent::HScroll { .. }
    )
}

/// The injector thread of one session: connects to `screen` (`:N`), applies events in order, flushes
/// when the queue is empty, releases everything when the queue closes.
fn spawn(session_id: u32, screen: String) -> std::io::Result<SyncSender<InputEvent>> {
    let (tx, rx) = sync_channel::<InputEvent>(QUEUE);
    std::thread::Builder::new().name(format!("input-{session_id}")).spawn(move || {
        let _span = tracing::info_span!("input", session = session_id).entered();
        let mut x = match x11::XInjector::connect(&screen) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "input: the session's display cannot be reached");
                return;
            }
        };
        tracing::info!(display = %screen, "input: injecting into the session's display");
        while let Ok(event) = rx.recv() {
            let mut next = Some(event);
            while let Some(e) = next.take() {
                if let Err(err) = x.apply(&e) {
                    tracing::warn!(error = %err, "input: the display went away");
                    return;
                }
                next = rx.try_recv().ok();
            }
            if let Err(err) = x.flush() {
                tracing::warn!(error = %err, "input: the display went away");
                return;
            }
        }
        if let Err(e) = x.release_all() {
            tracing::debug!(error = %e, "input: releasing held keys");
        }
        tracing::info!("input: the client left; every key and button released");
    })?;
    Ok(tx)
}
