//! Input from the control channel into the session's display. The control thread hands each event
//! to [`Inputs::submit`], which never blocks: every session with a display has its own injector
//! thread (its own X connection, XTEST) behind a bounded queue, so a flood cannot stall the control
//! thread or its watchdog heartbeat. At the cap the queue gives up the oldest pointer motion (its
//! movement carried into the next relative move, so under a flood of moves the pointer still ends
//! where the client put it), then the oldest scroll; keys, buttons and text are dropped only when nothing else is left,
//! and every drop is counted. When the client's control channel closes or the session ends, the
//! injector releases every key and button still down, and removes its virtual pads, and ends.
//! Controllers become virtual pads through uinput (`gamepad`) where `/dev/uinput` is usable; their
//! device nodes are made in an app's container ([`PadNodes`]), and the force feedback an app plays
//! on one goes back to the client as rumble.

pub mod gamepad;
pub mod keymap;
pub mod x11;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wolf_protocol::input::{ControllerState, ControllerType, InputEvent};

use crate::metrics::Metrics;
use crate::runners::DeviceNode;

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

    /// The next events (all that are waiting; none when `wait` passes first), or `None` once closed.
    fn take(&self, wait: Option<Duration>) -> Option<Vec<InputEvent>> {
        let mut s = self.lock();
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            if s.closed {
                return None;
            }
            if !s.events.is_empty() {
                return Some(s.events.drain(..).collect());
            }
            match deadline {
                None => s = self.ready.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Some(Vec::new());
                    }
                    s = self.ready.wait_timeout(s, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
                }
            }
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

/// One session's injector, held by the session (its `Live`): none until its first event.
#[derive(Default)]
pub struct Slot(SlotState);

#[derive(Default)]
enum SlotState {
    #[default]
    None,
    /// The injector's queue, and whether it has a display (keyboard and mouse go nowhere without).
    Running(Arc<Queue>, bool),
    /// The display could not be reached at this time.
    Failed(Instant),
}

impl Slot {
    /// The injector releases what is held and ends; the next event makes a new one.
    pub fn close(&mut self) {
        if let SlotState::Running(q, _) = std::mem::take(&mut self.0) {
            q.close();
        }
    }

    /// An injector is running.
    pub fn is_running(&self) -> bool {
        matches!(self.0, SlotState::Running(..))
    }
}

/// Why an event was not injected (logged by the injector; the event is counted as dropped).
#[derive(Debug, thiserror::Error)]
enum NotInjected {
    #[error("pad {number}: {source}")]
    Pad { number: u8, source: std::io::Error },
    #[error("making pad {number}: {source}")]
    MakePad { number: u8, source: std::io::Error },
    #[error(transparent)]
    Display(#[from] x11::X11Error),
}

/// Where rumble goes: (session, the client's pad number, low motor, high motor).
pub type Rumble = Arc<dyn Fn(u32, u8, u16, u16) + Send + Sync>;

/// A session's pad came or went, with its device nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PadChange {
    Added(Vec<DeviceNode>),
    Removed(Vec<DeviceNode>),
}

/// Told each [`PadChange`] of a session, on its injector thread (so it may block, and the
/// changes of one session arrive in order): an app in a container gets the nodes made there.
pub type PadNodes = Arc<dyn Fn(u32, PadChange) + Send + Sync>;

/// Where injectors report back.
#[derive(Clone, Default)]
pub struct Hooks {
    pub rumble: Option<Rumble>,
    pub pad_nodes: Option<PadNodes>,
}

/// How often an injector with pads looks for force feedback from the app.
const FEEDBACK_EVERY: Duration = Duration::from_millis(10);

pub struct Inputs {
    metrics: Arc<Metrics>,
    /// `/dev/uinput` can be used: controllers become virtual pads.
    gamepads: bool,
    hooks: Hooks,
}

impl Inputs {
    /// `hooks`: where pads' rumble and device nodes go (the control channel and the runners).
    pub fn new(metrics: Arc<Metrics>, hooks: Hooks) -> Inputs {
        let gamepads = gamepads_state().is_ok();
        Inputs { metrics, gamepads, hooks }
    }

    pub fn dropped(&self, reason: &str) {
        self.metrics.input_dropped.with_label_values(&[reason]).inc();
    }

    /// Hand `event` of `session_id` (from its authenticated control peer) to its injector in
    /// `slot`, made first if it has none (on `display`, the session's X display when it has one).
    pub fn submit(
        &self,
        session_id: u32,
        slot: &mut Slot,
        display: impl FnOnce() -> Option<String>,
        event: InputEvent,
    ) {
        self.metrics.input_events.with_label_values(&[event.kind()]).inc();
        let pointer = injectable(&event);
        let pad = matches!(event, InputEvent::Controller(_) | InputEvent::ControllerArrival { .. });
        if !(pointer || pad && self.gamepads) {
            // Touch, pen, motion, battery; pads where uinput is missing.
            self.dropped("unsupported");
            return;
        }
        let (queue, has_display) = match &slot.0 {
            SlotState::Running(q, d) => (q.clone(), *d),
            SlotState::Failed(at) if at.elapsed() < RETRY_AFTER => {
                self.dropped("display_unavailable");
                return;
            }
            _ => {
                let display = display();
                if pointer && display.is_none() {
                    self.dropped("no_display");
                    return;
                }
                let has_display = display.is_some();
                match spawn(session_id, display, self.metrics.clone(), self.hooks.clone()) {
                    Ok(q) => {
                        slot.0 = SlotState::Running(q.clone(), has_display);
                        (q, has_display)
                    }
                    Err(e) => {
                        tracing::warn!(session = session_id, error = %e, "input thread did not start");
                        slot.0 = SlotState::Failed(Instant::now());
                        self.dropped("display_unavailable");
                        return;
                    }
                }
            }
        };
        if pointer && !has_display {
            self.dropped("no_display");
            return;
        }
        match queue.push(event) {
            Pushed::Queued => {}
            Pushed::Evicted | Pushed::Refused => self.dropped("queue_full"),
            Pushed::Gone => {
                // The injector ended: its display is gone or was never reachable.
                slot.0 = SlotState::Failed(Instant::now());
                self.dropped("display_unavailable");
            }
        }
    }
}

/// Why virtual gamepads cannot be made on this machine (keyboard and mouse work either way).
#[derive(Debug, thiserror::Error)]
pub enum NoGamepads {
    #[error("/dev/uinput is missing (the kernel has no uinput module loaded)")]
    NoUinput,
    #[error("/dev/uinput: {0}")]
    Unusable(std::io::Error),
}

/// Can virtual gamepads be made on this machine (`/dev/uinput` there and writable)?
pub fn gamepads_state() -> Result<(), NoGamepads> {
    match std::fs::OpenOptions::new().write(true).open("/dev/uinput") {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NoGamepads::NoUinput),
        Err(e) => Err(NoGamepads::Unusable(e)),
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

/// The injector thread of one session: connects to `screen` (`:N`) when the session has one,
/// applies events in order (pads made as controllers arrive), flushes after each batch, relays
/// the pads' force feedback as rumble, and releases everything when the queue closes.
fn spawn(session_id: u32, screen: Option<String>, metrics: Arc<Metrics>, hooks: Hooks) -> std::io::Result<Arc<Queue>> {
    let queue = Arc::new(Queue::default());
    let q = queue.clone();
    std::thread::Builder::new().name(format!("input-{session_id}")).spawn(move || {
        let _span = tracing::info_span!("input", session = session_id).entered();
        let mut x = match screen.as_deref().map(x11::XInjector::connect) {
            Some(Ok(x)) => {
                tracing::info!(display = ?screen, "input: injecting into the session's display");
                Some(x)
            }
            Some(Err(e)) => {
                q.gone();
                tracing::warn!(error = %e, "input: the session's display cannot be reached");
                return;
            }
            None => None,
        };
        let mut pads = Pads { session_id, pads: BTreeMap::new(), nodes: hooks.pad_nodes };
        while let Some(batch) = q.take((!pads.pads.is_empty()).then_some(FEEDBACK_EVERY)) {
            for e in &batch {
                let applied = match e {
                    InputEvent::Controller(s) => pads.state(s),
                    InputEvent::ControllerArrival { number, kind, .. } => pads.arrival(*number, *kind),
                    other => match x.as_mut() {
                        Some(x) => x.apply(other).map(drop).map_err(NotInjected::from),
                        None => Ok(()),
                    },
                };
                if let Err(err) = applied {
                    metrics.input_dropped.with_label_values(&["display_unavailable"]).inc();
                    tracing::warn!(error = %err, "input: not injected");
                }
            }
            if let Some(x) = &x
                && let Err(err) = x.flush()
            {
                q.gone();
                tracing::warn!(error = %err, "input: the display went away");
                return;
            }
            for pad in pads.pads.values_mut() {
                match pad.feedback() {
                    Ok(Some((low, high))) => {
                        if let Some(r) = &hooks.rumble {
                            r(session_id, pad.number, low, high);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(pad = pad.number, error = %e, "input: force feedback"),
                }
            }
        }
        if let Some(x) = x.as_mut()
            && let Err(e) = x.release_all()
        {
            tracing::debug!(error = %e, "input: releasing held keys");
        }
        pads.remove_all();
        tracing::info!("input: the client left; every key, button and pad released");
    })?;
    Ok(queue)
}

/// One session's virtual pads by the client's controller number.
struct Pads {
    session_id: u32,
    pads: BTreeMap<u8, gamepad::Pad>,
    nodes: Option<PadNodes>,
}

impl Pads {
    /// A controller's state: its pad is made if new (Xbox layout), removed when its bit is clear.
    fn state(&mut self, s: &ControllerState) -> Result<(), NotInjected> {
        if s.active_mask & (1 << s.number) == 0 {
            if self.remove(s.number) {
                tracing::info!(pad = s.number, "input: controller left; its virtual pad removed");
            }
            return Ok(());
        }
        if !self.pads.contains_key(&s.number) {
            self.arrival(s.number, ControllerType::Unknown)?;
        }
        match self.pads.get_mut(&s.number) {
            Some(pad) => pad.apply(s).map_err(|source| NotInjected::Pad { number: s.number, source }),
            None => Ok(()),
        }
    }

    /// A controller arrived: a pad of its kind (made again if it had another).
    fn arrival(&mut self, number: u8, kind: ControllerType) -> Result<(), NotInjected> {
        if self.pads.get(&number).is_some_and(|p| p.kind == kind || kind == ControllerType::Unknown) {
            return Ok(());
        }
        self.remove(number);
        let mut pad = gamepad::Pad::create(number, kind).map_err(|source| NotInjected::MakePad { number, source })?;
        let nodes = pad.nodes().unwrap_or_else(|e| {
            tracing::warn!(pad = number, error = %e, "input: the virtual pad's device nodes are not known");
            Vec::new()
        });
        tracing::info!(pad = number, ?kind, nodes = ?nodes, "input: controller arrived; virtual pad made");
        if let Some(hook) = &self.nodes {
            hook(self.session_id, PadChange::Added(nodes.clone()));
        }
        pad.device_nodes = nodes;
        self.pads.insert(number, pad);
        Ok(())
    }

    /// Release and remove pad `number`; false when there was none.
    fn remove(&mut self, number: u8) -> bool {
        let Some(mut pad) = self.pads.remove(&number) else { return false };
        let _ = pad.release();
        if let Some(hook) = &self.nodes {
            hook(self.session_id, PadChange::Removed(std::mem::take(&mut pad.device_nodes)));
        }
        true
    }

    fn remove_all(&mut self) {
        let numbers: Vec<u8> = self.pads.keys().copied().collect();
        for n in numbers {
            self.remove(n);
        }
    }
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
        assert_eq!(q.take(None), Some(vec![moved(1)]));
        assert_eq!(q.take(Some(Duration::from_millis(1))), Some(Vec::new()), "nothing within the wait");
        q.close();
        assert_eq!(q.take(None), None);
        q.gone();
        assert_eq!(q.push(moved(1)), Pushed::Gone);
    }
}
