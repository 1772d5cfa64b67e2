//! Input from the control channel into the session's display. The control thread hands each event
//! to [`Inputs::submit`], which never blocks: every session with a display has its own injector
//! thread (its own X connection, XTEST) behind a bounded queue, so a flood cannot stall the control
//! thread or its watchdog heartbeat. At the cap the queue gives up the oldest pointer motion (its
//! movement carried into the next relative move, so under a flood of moves the pointer still ends
//! where the client put it), then the oldest scroll; keys, buttons and text are dropped only when nothing else is left,
//! and every drop is counted. When the client's control channel closes or the session ends, the
//! injector releases every key and button still down and ends.

pub mod keymap;
pub mod x11;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wolf_protocol::input::InputEvent;

use crate::metrics::Metrics;
use crate::sessions::Sessions;

/// Events waiting for one session's injector at most.
pub const QUEUE: usize = 1024;
/// After an injector could not reach its display, events are dropped this long before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// One session's events on their way to its injector.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<InputEvent>,
    /// The session let go of it: the injector drains nothing more and releases what is held.
    closed: bool,
    /// The injector ended (its display went away).
    gone: bool,
}

/// What [`Queue::push`] did.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    Queued,
    /// Queued, after an older motion or scroll was given up for it.
    Evicted,
    /// Not queued: the queue is full of keys, buttons and text.
    Refused,
    Gone,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, event: InputEvent) -> Pushed {
        let mut s = self.lock();
        if s.gone {
            return Pushed::Gone;
        }
        let mut pushed = Pushed::Queued;
        if s.events.len() >= QUEUE {
            if !evict(&mut s.events) {
                return Pushed::Refused;
            }
            pushed = Pushed::Evicted;
        }
        s.events.push_back(event);
        drop(s);
        self.ready.notify_one();
        pushed
    }

    /// The next events (all that are waiting), or `None` once closed.
    fn take(&self) -> Option<Vec<InputEvent>> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            if !s.events.is_empty() {
                return Some(s.events.drain(..).collect());
            }
            s = self.ready.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    fn gone(&self) {
        self.lock().gone = true;
    }
}

/// Make room by giving up the oldest pointer motion (a relative one's movement goes to the next
/// relative move; an absolute one after it makes it moot), else the oldest scroll.
fn evict(events: &mut VecDeque<InputEvent>) -> bool {
    let motion = |e: &InputEvent| matches!(e, InputEvent::MouseMove { .. } | InputEvent::MousePosition { .. });
    if let Some(i) = events.iter().position(motion) {
        let Some(InputEvent::MouseMove { dx, dy }) = events.remove(i) else { return true };
        for e in events.iter_mut().skip(i) {
            match e {
                InputEvent::MouseMove { dx: nx, dy: ny } => {
                    *nx = nx.saturating_add(dx);
                    *ny = ny.saturating_add(dy);
                    return true;
                }
                InputEvent::MousePosition { .. } => return true,
                _ => {}
            }
        }
        return true;
    }
    let scroll = |e: &InputEvent| matches!(e, InputEvent::Scroll { .. } | InputEvent::HScroll { .. });
    match events.iter().position(scroll) {
        Some(i) => {
            events.remove(i);
            true
        }
        None => false,
    }
}

enum Slot {
    Running(Arc<Queue>),
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
        let queue = match slots.get(&session_id) {
            Some(Slot::Running(q)) => q.clone(),
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
                    Ok(q) => {
                        slots.insert(session_id, Slot::Running(q.clone()));
                        q
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
        match queue.push(event) {
            Pushed::Queued => {}
            Pushed::Evicted | Pushed::Refused => self.dropped("queue_full"),
            Pushed::Gone => {
                // The injector ended: its display is gone or was never reachable.
                slots.insert(session_id, Slot::Failed(Instant::now()));
                self.dropped("display_unavailable");
            }
        }
    }

    /// The session's client left or the session ended: its injector releases what is held and ends.
    pub fn close(&self, session_id: u32) {
        if let Some(Slot::Running(q)) = self.slots().remove(&session_id) {
            q.close();
        }
    }
}

/// Can virtual gamepads be made on this machine (`/dev/uinput` there and writable)? `unavailable:
/// <why>` when not (keyboard and mouse work either way).
pub fn gamepads_state() -> String {
    const UINPUT: &str = "/dev/uinput";
    match std::fs::OpenOptions::new().write(true).open(UINPUT) {
        // The pads themselves are later work: say what is there, not more.
        Ok(_) => "uinput present; gamepad input is not injected yet".to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("unavailable: {UINPUT} is missing (the kernel has no uinput module loaded)")
        }
        Err(e) => format!("unavailable: {UINPUT}: {e}"),
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

/// The injector thread of one session: connects to `screen` (`:N`), applies events in order,
/// flushes after each batch, releases everything when the queue closes.
fn spawn(session_id: u32, screen: String) -> std::io::Result<Arc<Queue>> {
    let queue = Arc::new(Queue::default());
    let q = queue.clone();
    std::thread::Builder::new().name(format!("input-{session_id}")).spawn(move || {
        let _span = tracing::info_span!("input", session = session_id).entered();
        let mut x = match x11::XInjector::connect(&screen) {
            Ok(x) => x,
            Err(e) => {
                q.gone();
                tracing::warn!(error = %e, "input: the session's display cannot be reached");
                return;
            }
        };
        tracing::info!(display = %screen, "input: injecting into the session's display");
        while let Some(batch) = q.take() {
            let applied = batch.iter().try_for_each(|e| x.apply(e).map(drop)).and_then(|()| x.flush());
            if let Err(err) = applied {
                q.gone();
                tracing::warn!(error = %err, "input: the display went away");
                return;
            }
        }
        if let Err(e) = x.release_all() {
            tracing::debug!(error = %e, "input: releasing held keys");
        }
        tracing::info!("input: the client left; every key and button released");
    })?;
    Ok(queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(dx: i16) -> InputEvent {
        InputEvent::MouseMove { dx, dy: 0 }
    }

    #[test]
    fn a_full_queue_gives_up_motion_then_scroll_and_keeps_keys() {
        let q = Queue::default();
        let key = InputEvent::Key { down: true, vk: 0x41, modifiers: 0, flags: 0 };
        q.push(moved(3));
        q.push(InputEvent::Scroll { amount: 120 });
        for _ in 2..QUEUE - 1 {
            q.push(key.clone());
        }
        q.push(moved(4));
        // Full: the oldest move goes, its movement carried into the next move.
        assert_eq!(q.push(key.clone()), Pushed::Evicted);
        let s = q.lock();
        assert_eq!(s.events.len(), QUEUE);
        assert_eq!(s.events.iter().filter(|e| **e == moved(7)).count(), 1, "3 + 4 kept together");
        assert!(!s.events.contains(&moved(3)));
        drop(s);
        // Then the merged move, then the scroll; then nothing but keys is left: a newcomer is refused.
        assert_eq!(q.push(key.clone()), Pushed::Evicted);
        assert!(!q.lock().events.contains(&moved(7)));
        assert_eq!(q.push(key.clone()), Pushed::Evicted);
        assert_eq!(q.push(key.clone()), Pushed::Refused);
        assert!(q.lock().events.iter().all(|e| *e == key));
    }

    #[test]
    fn a_closed_queue_ends_the_injector_and_a_gone_one_refuses() {
        let q = Queue::default();
        q.push(moved(1));
        assert_eq!(q.take(), Some(vec![moved(1)]));
        q.close();
        assert_eq!(q.take(), None);
        q.gone();
        assert_eq!(q.push(moved(1)), Pushed::Gone);
    }
}
