//! Virtual gamepads through uinput (evdev): one per client controller, with the layout of the kind
//! the client reports (an Xbox pad unless it says PlayStation), following the Linux gamepad
//! conventions (A south, B east, X west, Y north; sticks -32768..32767 with + down; triggers
//! 0..255; the d-pad as a hat). Force feedback the app uploads and plays comes back as the motor
//! levels to send the client as rumble.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use evdev::uinput::VirtualDevice;
use evdev::{
    AbsInfo, AbsoluteAxisCode, AttributeSet, BusType, EventSummary, EventType, FFEffectCode, FFEffectKind, InputEvent,
    InputId, KeyCode, UInputCode, UinputAbsSetup,
};
use wolf_protocol::input::{ControllerState, ControllerType, buttons};

use crate::runners::DeviceNode;

/// The client's button bits and the keys they press.
pub const BUTTONS: [(u32, KeyCode); 16] = [
    (buttons::A, KeyCode::BTN_SOUTH),
    (buttons::B, KeyCode::BTN_EAST),
    (buttons::X, KeyCode::BTN_WEST),
    (buttons::Y, KeyCode::BTN_NORTH),
    (buttons::LB, KeyCode::BTN_TL),
    (buttons::RB, KeyCode::BTN_TR),
    (buttons::BACK, KeyCode::BTN_SELECT),
    (buttons::START, KeyCode::BTN_START),
    (buttons::HOME, KeyCode::BTN_MODE),
    (buttons::LS_CLICK, KeyCode::BTN_THUMBL),
    (buttons::RS_CLICK, KeyCode::BTN_THUMBR),
    (buttons::PADDLE1, KeyCode::BTN_TRIGGER_HAPPY1),
    (buttons::PADDLE2, KeyCode::BTN_TRIGGER_HAPPY2),
    (buttons::PADDLE3, KeyCode::BTN_TRIGGER_HAPPY3),
    (buttons::PADDLE4, KeyCode::BTN_TRIGGER_HAPPY4),
    (buttons::MISC, KeyCode::KEY_RECORD),
];

/// Axes: (code, minimum, maximum, fuzz, flat).
const AXES: [(AbsoluteAxisCode, i32, i32, i32, i32); 8] = [
    (AbsoluteAxisCode::ABS_X, -32768, 32767, 16, 128),
    (AbsoluteAxisCode::ABS_Y, -32768, 32767, 16, 128),
    (AbsoluteAxisCode::ABS_RX, -32768, 32767, 16, 128),
    (AbsoluteAxisCode::ABS_RY, -32768, 32767, 16, 128),
    (AbsoluteAxisCode::ABS_Z, 0, 255, 0, 0),
    (AbsoluteAxisCode::ABS_RZ, 0, 255, 0, 0),
    (AbsoluteAxisCode::ABS_HAT0X, -1, 1, 0, 0),
    (AbsoluteAxisCode::ABS_HAT0Y, -1, 1, 0, 0),
];

/// A pad's keys (code, down) and axes (code, value), in [`BUTTONS`] and [`AXES`] order.
pub type EvdevState = (Vec<(KeyCode, bool)>, Vec<(AbsoluteAxisCode, i32)>);

/// The evdev values of a controller state.
pub fn evdev_state(s: &ControllerState) -> EvdevState {
    let keys = BUTTONS.iter().map(|(bit, key)| (*key, s.buttons & bit != 0)).collect();
    let dir = |neg: u32, pos: u32| i32::from(s.buttons & pos != 0) - i32::from(s.buttons & neg != 0);
    // The client's stick Y is + up (XInput); evdev's is + down (-32768 flips to 32767, in range).
    let flip = |v: i16| (-i32::from(v)).min(32767);
    let axes = vec![
        (AbsoluteAxisCode::ABS_X, i32::from(s.left_stick.0)),
        (AbsoluteAxisCode::ABS_Y, flip(s.left_stick.1)),
        (AbsoluteAxisCode::ABS_RX, i32::from(s.right_stick.0)),
        (AbsoluteAxisCode::ABS_RY, flip(s.right_stick.1)),
        (AbsoluteAxisCode::ABS_Z, i32::from(s.left_trigger)),
        (AbsoluteAxisCode::ABS_RZ, i32::from(s.right_trigger)),
        (AbsoluteAxisCode::ABS_HAT0X, dir(buttons::DPAD_LEFT, buttons::DPAD_RIGHT)),
        (AbsoluteAxisCode::ABS_HAT0Y, dir(buttons::DPAD_UP, buttons::DPAD_DOWN)),
    ];
    (keys, axes)
}

/// What the device says it is: name, USB vendor and product of the pad it imitates.
fn identity(kind: ControllerType) -> (&'static str, u16, u16) {
    match kind {
        ControllerType::PlayStation => ("Sony Interactive Entertainment Wireless Controller (wolf-rs)", 0x054c, 0x0ce6),
        _ => ("Microsoft X-Box One pad (wolf-rs)", 0x045e, 0x02ea),
    }
}

pub struct Pad {
    dev: VirtualDevice,
    pub number: u8,
    pub kind: ControllerType,
    /// Its device nodes, once known (for containers).
    pub device_nodes: Vec<DeviceNode>,
    last: Option<ControllerState>,
    /// Effects the app uploaded: id → (strong, weak) magnitude.
    effects: HashMap<i16, (u16, u16)>,
    /// What the client was last told: (low, high) motor.
    rumble: (u16, u16),
}

impl Pad {
    /// A new virtual pad for the client's controller `number` (blocking: uinput ioctls).
    pub fn create(number: u8, kind: ControllerType) -> io::Result<Pad> {
        let (name, vendor, product) = identity(kind);
        let keys = AttributeSet::from_iter(BUTTONS.iter().map(|(_, k)| *k));
        let mut b = VirtualDevice::builder()?
            .name(name)
            .input_id(InputId::new(BusType::BUS_USB, vendor, product, 0x0110))
            .with_keys(&keys)?;
        for (axis, min, max, fuzz, flat) in AXES {
            b = b.with_absolute_axis(&UinputAbsSetup::new(axis, AbsInfo::new(0, min, max, fuzz, flat, 0)))?;
        }
        let dev = b.with_ff(&AttributeSet::from_iter([FFEffectCode::FF_RUMBLE]))?.with_ff_effects_max(16).build()?;
        // Feedback is polled between input events: never wait on it.
        // SAFETY: fcntl on the device's own open descriptor; no memory is involved.
        let fd = dev.as_raw_fd();
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Pad { dev, number, kind, device_nodes: Vec::new(), last: None, effects: HashMap::new(), rumble: (0, 0) })
    }

    /// The pad's device nodes (`/dev/input/eventN`, and `jsN` where joydev is loaded), from sysfs,
    /// for apps in containers.
    pub fn nodes(&mut self) -> io::Result<Vec<DeviceNode>> {
        let sys = self.dev.get_syspath()?;
        let mut nodes = Vec::new();
        for entry in std::fs::read_dir(&sys)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str().filter(|n| n.starts_with("event") || n.starts_with("js")) else {
                continue;
            };
            // "13:67"
            let dev = std::fs::read_to_string(sys.join(name).join("dev"))?;
            let Some((major, minor)) = dev.trim().split_once(':') else { continue };
            let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else { continue };
            nodes.push(DeviceNode { path: PathBuf::from("/dev/input").join(name), major, minor });
        }
        nodes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(nodes)
    }

    /// Emit what changed since the last state (everything, the first time).
    pub fn apply(&mut self, s: &ControllerState) -> io::Result<()> {
        let (keys, axes) = evdev_state(s);
        let (old_keys, old_axes) = self.last.as_ref().map(evdev_state).unzip();
        let mut events = Vec::new();
        for (i, (key, down)) in keys.iter().enumerate() {
            if old_keys.as_ref().is_none_or(|o| o[i].1 != *down) {
                events.push(InputEvent::new(EventType::KEY.0, key.0, i32::from(*down)));
            }
        }
        for (i, (axis, value)) in axes.iter().enumerate() {
            if old_axes.as_ref().is_none_or(|o| o[i].1 != *value) {
                events.push(InputEvent::new(EventType::ABSOLUTE.0, axis.0, *value));
            }
        }
        self.last = Some(*s);
        if events.is_empty() { Ok(()) } else { self.dev.emit(&events) }
    }

    /// Answer the app's force-feedback requests; the new (low, high) motor levels when they
    /// changed, for the client's rumble.
    pub fn feedback(&mut self) -> io::Result<Option<(u16, u16)>> {
        let events: Vec<InputEvent> = match self.dev.fetch_events() {
            Ok(e) => e.collect(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut level = self.rumble;
        for e in events {
            match e.destructure() {
                EventSummary::UInput(ev, UInputCode::UI_FF_UPLOAD, ..) => {
                    let mut up = self.dev.process_ff_upload(ev)?;
                    let id = up.effect_id();
                    match up.effect().kind {
                        FFEffectKind::Rumble { strong_magnitude, weak_magnitude } => {
                            self.effects.insert(id, (strong_magnitude, weak_magnitude));
                            up.set_retval(0);
                        }
                        // Only rumble is offered (FF_RUMBLE).
                        _ => up.set_retval(-libc::EINVAL),
                    }
                }
                EventSummary::UInput(ev, UInputCode::UI_FF_ERASE, ..) => {
                    let mut erase = self.dev.process_ff_erase(ev)?;
                    self.effects.remove(&(erase.effect_id() as i16));
                    erase.set_retval(0);
                }
                EventSummary::ForceFeedback(_, FFEffectCode(id), value) => {
                    let id = id as i16;
                    level = match self.effects.get(&id) {
                        Some(&(strong, weak)) if value > 0 => (strong, weak),
                        _ => (0, 0),
                    };
                }
                _ => {}
            }
        }
        if level == self.rumble {
            return Ok(None);
        }
        self.rumble = level;
        Ok(Some(level))
    }

    /// Every button up, sticks centred (the pad leaves or the client is gone).
    pub fn release(&mut self) -> io::Result<()> {
        let number = self.number;
        self.apply(&ControllerState { number, ..ControllerState::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_state_maps_to_linux_gamepad_events() {
        let s = ControllerState {
            number: 0,
            active_mask: 1,
            buttons: buttons::A | buttons::Y | buttons::DPAD_UP | buttons::DPAD_RIGHT | buttons::PADDLE1,
            left_trigger: 200,
            right_trigger: 0,
            left_stick: (1000, 32767),
            right_stick: (-32768, -32768),
        };
        let (keys, axes) = evdev_state(&s);
        let down: Vec<KeyCode> = keys.iter().filter(|(_, d)| *d).map(|(k, _)| *k).collect();
        assert_eq!(down, vec![KeyCode::BTN_SOUTH, KeyCode::BTN_NORTH, KeyCode::BTN_TRIGGER_HAPPY1]);
        let axis = |c| axes.iter().find(|(a, _)| *a == c).map(|(_, v)| *v);
        assert_eq!(axis(AbsoluteAxisCode::ABS_X), Some(1000));
        assert_eq!(axis(AbsoluteAxisCode::ABS_Y), Some(-32767), "up is negative in evdev");
        assert_eq!(axis(AbsoluteAxisCode::ABS_RY), Some(32767), "full down stays in range");
        assert_eq!(axis(AbsoluteAxisCode::ABS_Z), Some(200));
        assert_eq!(axis(AbsoluteAxisCode::ABS_HAT0X), Some(1));
        assert_eq!(axis(AbsoluteAxisCode::ABS_HAT0Y), Some(-1));
    }
}
