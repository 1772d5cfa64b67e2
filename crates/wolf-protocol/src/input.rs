//! Input packets: the payload of control message `0x0206`, one event per packet, as
//! moonlight-common-c sends them to a Sunshine-style host (appversion `7.1.431.-1`): a big-endian
//! size, a little-endian magic, then the event. Mouse movement and scroll fields are big-endian;
//! keyboard key codes and everything about controllers, touch and pen little-endian (floats are
//! IEEE-754 binary32, little-endian). [`decode`] reads one, [`encode`] writes one (the client side,
//! and the known-answer tests).

/// Windows virtual-key modifier bits of a keyboard event.
pub const MOD_SHIFT: u8 = 0x01;
pub const MOD_CTRL: u8 = 0x02;
pub const MOD_ALT: u8 = 0x04;
pub const MOD_META: u8 = 0x08;

/// One scroll notch in high-resolution units (Windows' WHEEL_DELTA).
pub const WHEEL_DELTA: i16 = 120;

const KEY_DOWN: u32 = 0x03;
const KEY_UP: u32 = 0x04;
const MOUSE_ABSOLUTE: u32 = 0x05;
const MOUSE_RELATIVE: u32 = 0x07;
const BUTTON_DOWN: u32 = 0x08;
const BUTTON_UP: u32 = 0x09;
const SCROLL: u32 = 0x0A;
const MULTI_CONTROLLER: u32 = 0x0C;
const HAPTICS: u32 = 0x0D;
const TEXT: u32 = 0x17;
const HSCROLL: u32 = 0x5500_0001;
const TOUCH: u32 = 0x5500_0002;
const PEN: u32 = 0x5500_0003;
const ARRIVAL: u32 = 0x5500_0004;
const CONTROLLER_TOUCH: u32 = 0x5500_0005;
const MOTION: u32 = 0x5500_0006;
const BATTERY: u32 = 0x5500_0007;

/// Controller button bits (`buttonFlags | buttonFlags2 << 16`).
pub mod buttons {
    pub const DPAD_UP: u32 = 0x0001;
    pub const DPAD_DOWN: u32 = 0x0002;
    pub const DPAD_LEFT: u32 = 0x0004;
    pub const DPAD_RIGHT: u32 = 0x0008;
    pub const START: u32 = 0x0010;
    pub const BACK: u32 = 0x0020;
    pub const LS_CLICK: u32 = 0x0040;
    pub const RS_CLICK: u32 = 0x0080;
    pub const LB: u32 = 0x0100;
    pub const RB: u32 = 0x0200;
    pub const HOME: u32 = 0x0400;
    pub const A: u32 = 0x1000;
    pub const B: u32 = 0x2000;
    pub const X: u32 = 0x4000;
    pub const Y: u32 = 0x8000;
    pub const PADDLE1: u32 = 0x01_0000;
    pub const PADDLE2: u32 = 0x02_0000;
    pub const PADDLE3: u32 = 0x04_0000;
    pub const PADDLE4: u32 = 0x08_0000;
    pub const TOUCHPAD: u32 = 0x10_0000;
    pub const MISC: u32 = 0x20_0000;
}

/// Controller capability bits of an arrival.
pub mod capabilities {
    pub const ANALOG_TRIGGERS: u16 = 0x01;
    pub const RUMBLE: u16 = 0x02;
    pub const TRIGGER_RUMBLE: u16 = 0x04;
    pub const TOUCHPAD: u16 = 0x08;
    pub const ACCEL: u16 = 0x10;
    pub const GYRO: u16 = 0x20;
    pub const BATTERY: u16 = 0x40;
    pub const RGB_LED: u16 = 0x80;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MouseButton {
    Left,
    Middle,
    Right,
    X1,
    X2,
}

impl MouseButton {
    fn from_wire(b: u8) -> Option<MouseButton> {
        Some(match b {
            1 => MouseButton::Left,
            2 => MouseButton::Middle,
            3 => MouseButton::Right,
            4 => MouseButton::X1,
            5 => MouseButton::X2,
            _ => return None,
        })
    }

    fn wire(self) -> u8 {
        match self {
            MouseButton::Left => 1,
            MouseButton::Middle => 2,
            MouseButton::Right => 3,
            MouseButton::X1 => 4,
            MouseButton::X2 => 5,
        }
    }
}

/// The kind of pad a client reports at arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerType {
    Unknown,
    Xbox,
    PlayStation,
    Nintendo,
    Steam,
}

impl ControllerType {
    fn from_wire(b: u8) -> ControllerType {
        match b {
            1 => ControllerType::Xbox,
            2 => ControllerType::PlayStation,
            3 => ControllerType::Nintendo,
            4 => ControllerType::Steam,
            _ => ControllerType::Unknown,
        }
    }

    fn wire(self) -> u8 {
        match self {
            ControllerType::Unknown => 0,
            ControllerType::Xbox => 1,
            ControllerType::PlayStation => 2,
            ControllerType::Nintendo => 3,
            ControllerType::Steam => 4,
        }
    }
}

/// One pad's whole state (multi-controller packet). Sticks: + is right and up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ControllerState {
    pub number: u8,
    /// Bit n: pad n is there. A packet whose own bit is clear removes the pad.
    pub active_mask: u16,
    pub buttons: u32,
    pub left_trigger: u8,
    pub right_trigger: u8,
    pub left_stick: (i16, i16),
    pub right_stick: (i16, i16),
}

/// Touch, pen and controller-touch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchKind {
    Hover,
    Down,
    Up,
    Move,
    Cancel,
    ButtonOnly,
    HoverLeave,
    CancelAll,
}

impl TouchKind {
    fn from_wire(b: u8) -> Option<TouchKind> {
        Some(match b {
            0 => TouchKind::Hover,
            1 => TouchKind::Down,
            2 => TouchKind::Up,
            3 => TouchKind::Move,
            4 => TouchKind::Cancel,
            5 => TouchKind::ButtonOnly,
            6 => TouchKind::HoverLeave,
            7 => TouchKind::CancelAll,
            _ => return None,
        })
    }

    fn wire(self) -> u8 {
        self as u8
    }
}

/// A touch (or pen) contact: position normalized to the video area, 0..1 from the top left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Touch {
    pub kind: TouchKind,
    pub pointer: u32,
    pub x: f32,
    pub y: f32,
    /// Pressure 0..1 when down, distance when hovering; 0: unknown.
    pub pressure: f32,
    /// Degrees 0..359; `None`: unknown.
    pub rotation: Option<u16>,
    pub contact_major: f32,
    pub contact_minor: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pen {
    pub kind: TouchKind,
    /// 0: unchanged, 1: pen, 2: eraser.
    pub tool: u8,
    pub buttons: u8,
    pub x: f32,
    pub y: f32,
    pub pressure: f32,
    pub rotation: Option<u16>,
    /// Degrees from vertical; `None`: unknown.
    pub tilt: Option<u8>,
    pub contact_major: f32,
    pub contact_minor: f32,
}

/// One input event as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum InputEvent {
    /// A Windows virtual-key code (`vk`, already masked to its low byte: moonlight-qt sets 0x8000).
    Key {
        down: bool,
        vk: u8,
        modifiers: u8,
        flags: u8,
    },
    MouseMove {
        dx: i16,
        dy: i16,
    },
    /// Absolute position in a `width` x `height` reference area (the client's video size).
    MousePosition {
        x: i16,
        y: i16,
        width: u16,
        height: u16,
    },
    MouseButton {
        down: bool,
        button: MouseButton,
    },
    /// Vertical scroll in 1/120 notches; + is away from the user (up).
    Scroll {
        amount: i16,
    },
    /// Horizontal scroll in 1/120 notches; + is right.
    HScroll {
        amount: i16,
    },
    /// Text typed (one code point per packet from current clients).
    Text(String),
    /// The client wants rumble (sent once at the start).
    HapticsEnable,
    Controller(ControllerState),
    ControllerArrival {
        number: u8,
        kind: ControllerType,
        capabilities: u16,
        supported_buttons: u32,
    },
    ControllerTouch {
        number: u8,
        kind: TouchKind,
        pointer: u32,
        x: f32,
        y: f32,
        pressure: f32,
    },
    /// `motion`: 1 accelerometer (m/s²), 2 gyroscope (deg/s).
    ControllerMotion {
        number: u8,
        motion: u8,
        x: f32,
        y: f32,
        z: f32,
    },
    /// `state`: 0 unknown .. 5 full; `percent` 0..100, 255 unknown.
    ControllerBattery {
        number: u8,
        state: u8,
        percent: u8,
    },
    Touch(Touch),
    Pen(Pen),
}

impl InputEvent {
    /// A short name for counting (`wolf_input_events_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            InputEvent::Key { .. } => "keyboard",
            InputEvent::MouseMove { .. } => "mouse_move",
            InputEvent::MousePosition { .. } => "mouse_position",
            InputEvent::MouseButton { .. } => "mouse_button",
            InputEvent::Scroll { .. } | InputEvent::HScroll { .. } => "scroll",
            InputEvent::Text(_) => "text",
            InputEvent::HapticsEnable => "haptics",
            InputEvent::Controller(_) => "controller",
            InputEvent::ControllerArrival { .. } => "controller_arrival",
            InputEvent::ControllerTouch { .. } => "controller_touch",
            InputEvent::ControllerMotion { .. } => "controller_motion",
            InputEvent::ControllerBattery { .. } => "controller_battery",
            InputEvent::Touch(_) => "touch",
            InputEvent::Pen(_) => "pen",
        }
    }

    /// Every kind [`InputEvent::kind`] names.
    pub const KINDS: [&'static str; 14] = [
        "keyboard",
        "mouse_move",
        "mouse_position",
        "mouse_button",
        "scroll",
        "text",
        "haptics",
        "controller",
        "controller_arrival",
        "controller_touch",
        "controller_motion",
        "controller_battery",
        "touch",
        "pen",
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("input packet too short ({0} bytes)")]
    Short(usize),
    #[error("input packet size field {size} does not match its {len} bytes")]
    Size { size: usize, len: usize },
    #[error("input packet type {0:#010x} is unknown")]
    Unknown(u32),
    #[error("input packet type {magic:#010x} needs {need} bytes, has {len}")]
    Body { magic: u32, need: usize, len: usize },
    #[error("input packet value out of range: {0}")]
    Value(&'static str),
}

/// Little cursor over an event's body.
struct Body<'a>(&'a [u8]);

impl Body<'_> {
    fn u8(&self, at: usize) -> u8 {
        self.0[at]
    }
    fn be_i16(&self, at: usize) -> i16 {
        i16::from_be_bytes([self.0[at], self.0[at + 1]])
    }
    fn le_i16(&self, at: usize) -> i16 {
        i16::from_le_bytes([self.0[at], self.0[at + 1]])
    }
    fn le_u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }
    fn le_u32(&self, at: usize) -> u32 {
        u32::from_le_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }
    fn le_f32(&self, at: usize) -> f32 {
        f32::from_bits(self.le_u32(at))
    }
}

/// The body length each fixed-size event needs (after the 8-byte header).
fn body_len(magic: u32) -> Option<usize> {
    Some(match magic {
        KEY_DOWN | KEY_UP => 6,
        MOUSE_RELATIVE => 4,
        MOUSE_ABSOLUTE => 10,
        BUTTON_DOWN | BUTTON_UP => 1,
        SCROLL => 6,
        HAPTICS => 2,
        MULTI_CONTROLLER => 26,
        HSCROLL => 2,
        TOUCH | PEN => 28,
        ARRIVAL => 8,
        CONTROLLER_TOUCH => 20,
        MOTION => 16,
        BATTERY => 4,
        TEXT => 1,
        _ => return None,
    })
}

/// Read one input packet (the whole payload of a `0x0206` message).
pub fn decode(packet: &[u8]) -> Result<InputEvent, InputError> {
    if packet.len() < 8 {
        return Err(InputError::Short(packet.len()));
    }
    let size = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]) as usize;
    if size.checked_add(4) != Some(packet.len()) {
        return Err(InputError::Size { size, len: packet.len() });
    }
    let magic = u32::from_le_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    let need = body_len(magic).ok_or(InputError::Unknown(magic))?;
    if body.len() < need {
        return Err(InputError::Body { magic, need, len: body.len() });
    }
    let b = Body(body);
    let rotation = |r: u16| (r != 0xFFFF).then_some(r % 360);
    Ok(match magic {
        KEY_DOWN | KEY_UP => InputEvent::Key {
            down: magic == KEY_DOWN,
            flags: b.u8(0),
            vk: (b.le_u16(1) & 0xFF) as u8,
            modifiers: b.u8(3),
        },
        MOUSE_RELATIVE => InputEvent::MouseMove { dx: b.be_i16(0), dy: b.be_i16(2) },
        MOUSE_ABSOLUTE => {
            // The client sends the reference size minus one.
            let (w, h) = (b.be_i16(6), b.be_i16(8));
            if w <= 0 || h <= 0 {
                return Err(InputError::Value("absolute mouse reference size"));
            }
            InputEvent::MousePosition { x: b.be_i16(0), y: b.be_i16(2), width: w as u16 + 1, height: h as u16 + 1 }
        }
        BUTTON_DOWN | BUTTON_UP => InputEvent::MouseButton {
            down: magic == BUTTON_DOWN,
            button: MouseButton::from_wire(b.u8(0)).ok_or(InputError::Value("mouse button"))?,
        },
        SCROLL => InputEvent::Scroll { amount: b.be_i16(0) },
        HSCROLL => InputEvent::HScroll { amount: b.be_i16(0) },
        HAPTICS => InputEvent::HapticsEnable,
        TEXT => {
            let text = std::str::from_utf8(body).map_err(|_| InputError::Value("text is not UTF-8"))?;
            InputEvent::Text(text.to_owned())
        }
        MULTI_CONTROLLER => InputEvent::Controller(ControllerState {
            number: (b.le_i16(2) & 0x0F) as u8,
            active_mask: b.le_u16(4),
            buttons: u32::from(b.le_u16(8)) | u32::from(b.le_u16(22)) << 16,
            left_trigger: b.u8(10),
            right_trigger: b.u8(11),
            left_stick: (b.le_i16(12), b.le_i16(14)),
            right_stick: (b.le_i16(16), b.le_i16(18)),
        }),
        ARRIVAL => InputEvent::ControllerArrival {
            number: b.u8(0) & 0x0F,
            kind: ControllerType::from_wire(b.u8(1)),
            capabilities: b.le_u16(2),
            supported_buttons: b.le_u32(4),
        },
        CONTROLLER_TOUCH => InputEvent::ControllerTouch {
            number: b.u8(0) & 0x0F,
            kind: TouchKind::from_wire(b.u8(1)).ok_or(InputError::Value("touch event type"))?,
            pointer: b.le_u32(4),
            x: b.le_f32(8),
            y: b.le_f32(12),
            pressure: b.le_f32(16),
        },
        MOTION => InputEvent::ControllerMotion {
            number: b.u8(0) & 0x0F,
            motion: b.u8(1),
            x: b.le_f32(4),
            y: b.le_f32(8),
            z: b.le_f32(12),
        },
        BATTERY => InputEvent::ControllerBattery { number: b.u8(0) & 0x0F, state: b.u8(1), percent: b.u8(2) },
        TOUCH => InputEvent::Touch(Touch {
            kind: TouchKind::from_wire(b.u8(0)).ok_or(InputError::Value("touch event type"))?,
            rotation: rotation(b.le_u16(2)),
            pointer: b.le_u32(4),
            x: b.le_f32(8),
            y: b.le_f32(12),
            pressure: b.le_f32(16),
            contact_major: b.le_f32(20),
            contact_minor: b.le_f32(24),
        }),
        PEN => InputEvent::Pen(Pen {
            kind: TouchKind::from_wire(b.u8(0)).ok_or(InputError::Value("touch event type"))?,
            tool: b.u8(1),
            buttons: b.u8(2),
            x: b.le_f32(4),
            y: b.le_f32(8),
            pressure: b.le_f32(12),
            rotation: rotation(b.le_u16(16)),
            tilt: (b.u8(18) != 0xFF).then_some(b.u8(18)),
            contact_major: b.le_f32(20),
            contact_minor: b.le_f32(24),
        }),
        other => return Err(InputError::Unknown(other)),
    })
}

/// Write one input packet as moonlight-common-c does for a Sunshine-style host.
pub fn encode(event: &InputEvent) -> Vec<u8> {
    let mut body = Vec::with_capacity(28);
    let magic = match event {
        InputEvent::Key { down, vk, modifiers, flags } => {
            body.push(*flags);
            body.extend_from_slice(&u16::from(*vk).to_le_bytes());
            body.push(*modifiers);
            body.extend_from_slice(&[0, 0]);
            if *down { KEY_DOWN } else { KEY_UP }
        }
        InputEvent::MouseMove { dx, dy } => {
            body.extend_from_slice(&dx.to_be_bytes());
            body.extend_from_slice(&dy.to_be_bytes());
            MOUSE_RELATIVE
        }
        InputEvent::MousePosition { x, y, width, height } => {
            body.extend_from_slice(&x.to_be_bytes());
            body.extend_from_slice(&y.to_be_bytes());
            body.extend_from_slice(&[0, 0]);
            body.extend_from_slice(&(width.saturating_sub(1) as i16).to_be_bytes());
            body.extend_from_slice(&(height.saturating_sub(1) as i16).to_be_bytes());
            MOUSE_ABSOLUTE
        }
        InputEvent::MouseButton { down, button } => {
            body.push(button.wire());
            if *down { BUTTON_DOWN } else { BUTTON_UP }
        }
        InputEvent::Scroll { amount } => {
            body.extend_from_slice(&amount.to_be_bytes());
            body.extend_from_slice(&amount.to_be_bytes());
            body.extend_from_slice(&[0, 0]);
            SCROLL
        }
        InputEvent::HScroll { amount } => {
            body.extend_from_slice(&amount.to_be_bytes());
            HSCROLL
        }
        InputEvent::Text(t) => {
            body.extend_from_slice(t.as_bytes());
            TEXT
        }
        InputEvent::HapticsEnable => {
            body.extend_from_slice(&1u16.to_le_bytes());
            HAPTICS
        }
        InputEvent::Controller(c) => {
            for v in [0x001A, i16::from(c.number), c.active_mask as i16, 0x0014] {
                body.extend_from_slice(&v.to_le_bytes());
            }
            body.extend_from_slice(&(c.buttons as u16).to_le_bytes());
            body.extend_from_slice(&[c.left_trigger, c.right_trigger]);
            for v in [c.left_stick.0, c.left_stick.1, c.right_stick.0, c.right_stick.1, 0x009C] {
                body.extend_from_slice(&v.to_le_bytes());
            }
            body.extend_from_slice(&((c.buttons >> 16) as u16).to_le_bytes());
            body.extend_from_slice(&0x0055i16.to_le_bytes());
            MULTI_CONTROLLER
        }
        InputEvent::ControllerArrival { number, kind, capabilities, supported_buttons } => {
            body.extend_from_slice(&[*number, kind.wire()]);
            body.extend_from_slice(&capabilities.to_le_bytes());
            body.extend_from_slice(&supported_buttons.to_le_bytes());
            ARRIVAL
        }
        InputEvent::ControllerTouch { number, kind, pointer, x, y, pressure } => {
            body.extend_from_slice(&[*number, kind.wire(), 0, 0]);
            body.extend_from_slice(&pointer.to_le_bytes());
            for f in [x, y, pressure] {
                body.extend_from_slice(&f.to_le_bytes());
            }
            CONTROLLER_TOUCH
        }
        InputEvent::ControllerMotion { number, motion, x, y, z } => {
            body.extend_from_slice(&[*number, *motion, 0, 0]);
            for f in [x, y, z] {
                body.extend_from_slice(&f.to_le_bytes());
            }
            MOTION
        }
        InputEvent::ControllerBattery { number, state, percent } => {
            body.extend_from_slice(&[*number, *state, *percent, 0]);
            BATTERY
        }
        InputEvent::Touch(t) => {
            body.extend_from_slice(&[t.kind.wire(), 0]);
            body.extend_from_slice(&t.rotation.unwrap_or(0xFFFF).to_le_bytes());
            body.extend_from_slice(&t.pointer.to_le_bytes());
            for f in [t.x, t.y, t.pressure, t.contact_major, t.contact_minor] {
                body.extend_from_slice(&f.to_le_bytes());
            }
            TOUCH
        }
        InputEvent::Pen(p) => {
            body.extend_from_slice(&[p.kind.wire(), p.tool, p.buttons, 0]);
            for f in [p.x, p.y, p.pressure] {
                body.extend_from_slice(&f.to_le_bytes());
            }
            body.extend_from_slice(&p.rotation.unwrap_or(0xFFFF).to_le_bytes());
            body.extend_from_slice(&[p.tilt.unwrap_or(0xFF), 0]);
            for f in [p.contact_major, p.contact_minor] {
                body.extend_from_slice(&f.to_le_bytes());
            }
            PEN
        }
    };
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&((4 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Host → client rumble (control message `0x010B`): the pad's two motors, 0..0xFFFF (0/0 stops).
pub const MSG_RUMBLE: u16 = 0x010B;

/// The payload of a rumble message for the client's pad `number`.
pub fn rumble_payload(number: u16, low: u16, high: u16) -> [u8; 10] {
    let mut p = [0u8; 10];
    p[..4].copy_from_slice(&0x00C0_FFEEu32.to_le_bytes());
    p[4..6].copy_from_slice(&number.to_le_bytes());
    p[6..8].copy_from_slice(&low.to_le_bytes());
    p[8..10].copy_from_slice(&high.to_le_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Bytes moonlight-common-c's InputStream.c sends for each event (captured from the real client
    /// code against a Sunshine-style host), and what they mean.
    fn vectors() -> Vec<(&'static str, InputEvent)> {
        use InputEvent::*;
        vec![
            ("000000060d0000000100", HapticsEnable),
            ("0000000a03000000004100010000", Key { down: true, vk: 0x41, modifiers: MOD_SHIFT, flags: 0 }),
            ("0000000a04000000014100000000", Key { down: false, vk: 0x41, modifiers: 0, flags: 1 }),
            ("0000000807000000000afffb", MouseMove { dx: 10, dy: -5 }),
            ("0000000e05000000006400c8000004ff02cf", MousePosition { x: 100, y: 200, width: 1280, height: 720 }),
            ("000000050800000001", MouseButton { down: true, button: super::MouseButton::Left }),
            ("000000050900000001", MouseButton { down: false, button: super::MouseButton::Left }),
            ("000000050800000005", MouseButton { down: true, button: super::MouseButton::X2 }),
            ("0000000a0a000000007800780000", Scroll { amount: 120 }),
            ("0000000a0a000000ffc4ffc40000", Scroll { amount: -60 }),
            ("00000006010000550078", HScroll { amount: 120 }),
            ("0000000617000000c3a9", Text("é".into())),
            ("0000000717000000e282ac", Text("€".into())),
            (
                "0000001e0c0000001a0000000100140000100000e80318fc000000009c0000005500",
                Controller(ControllerState {
                    number: 0,
                    active_mask: 1,
                    buttons: buttons::A,
                    left_stick: (1000, -1000),
                    ..ControllerState::default()
                }),
            ),
            (
                "0000001e0c0000001a000100030014000010ff80000000000080ff7f9c0021005500",
                Controller(ControllerState {
                    number: 1,
                    active_mask: 3,
                    buttons: buttons::A | buttons::PADDLE1 | buttons::MISC,
                    left_trigger: 255,
                    right_trigger: 128,
                    left_stick: (0, 0),
                    right_stick: (-32768, 32767),
                }),
            ),
            (
                "0000000c040000550002fb00fff73000",
                ControllerArrival {
                    number: 0,
                    kind: ControllerType::PlayStation,
                    capabilities: 0xFB,
                    supported_buttons: 0x30F7FF,
                },
            ),
            (
                "000000180500005500010000000000000000003f0000803e0000803f",
                ControllerTouch { number: 0, kind: TouchKind::Down, pointer: 0, x: 0.5, y: 0.25, pressure: 1.0 },
            ),
            (
                "0000001406000055000200000000803f000000c00000003f",
                ControllerMotion { number: 0, motion: 2, x: 1.0, y: -2.0, z: 0.5 },
            ),
            ("000000080700005500025000", ControllerBattery { number: 0, state: 2, percent: 80 }),
            (
                "00000020020000550100ffff010000000000003f0000003f0000803f0000000000000000",
                Touch(super::Touch {
                    kind: TouchKind::Down,
                    pointer: 1,
                    x: 0.5,
                    y: 0.5,
                    pressure: 1.0,
                    rotation: None,
                    contact_major: 0.0,
                    contact_minor: 0.0,
                }),
            ),
            (
                "0000002003000055010100000000003f0000003f0000003f5a002d000000000000000000",
                Pen(super::Pen {
                    kind: TouchKind::Down,
                    tool: 1,
                    buttons: 0,
                    x: 0.5,
                    y: 0.5,
                    pressure: 0.5,
                    rotation: Some(90),
                    tilt: Some(45),
                    contact_major: 0.0,
                    contact_minor: 0.0,
                }),
            ),
        ]
    }

    #[test]
    fn every_packet_the_client_sends_decodes_to_its_event_and_encodes_back() {
        for (bytes, event) in vectors() {
            let wire = hex(bytes);
            assert_eq!(decode(&wire), Ok(event.clone()), "{bytes}");
            assert_eq!(encode(&event), wire, "{event:?}");
        }
    }

    #[test]
    fn kinds_are_listed_once_each() {
        let from_events: std::collections::BTreeSet<_> = vectors().iter().map(|(_, e)| e.kind()).collect();
        let listed: std::collections::BTreeSet<_> = InputEvent::KINDS.into_iter().collect();
        assert_eq!(listed.len(), InputEvent::KINDS.len());
        assert_eq!(from_events, listed, "every kind has a vector");
    }

    #[test]
    fn moonlight_qt_key_codes_carry_0x8000_and_are_masked() {
        let e = decode(&hex("0000000a03000000004180010000")).unwrap();
        assert_eq!(e, InputEvent::Key { down: true, vk: 0x41, modifiers: MOD_SHIFT, flags: 0 });
    }

    #[test]
    fn bad_packets_are_errors() {
        assert_eq!(decode(&[]), Err(InputError::Short(0)));
        // Size field that does not match the length, either way.
        assert!(matches!(decode(&hex("0000000907000000000afffb")), Err(InputError::Size { .. })));
        assert!(matches!(decode(&hex("0000000807000000000aff")), Err(InputError::Size { .. })));
        assert!(matches!(decode(&hex("0000000707000000000aff")), Err(InputError::Body { .. })));
        // A body shorter than its type needs.
        assert!(matches!(decode(&hex("0000000607000000000a")), Err(InputError::Body { .. })));
        assert!(matches!(decode(&hex("0000000499000000")), Err(InputError::Unknown(0x99))));
        assert!(matches!(decode(&hex("000000050800000009")), Err(InputError::Value(_))));
        assert!(matches!(decode(&hex("0000000617000000c328")), Err(InputError::Value(_))));
        // A zero reference size would divide by zero later.
        assert!(matches!(decode(&hex("0000000e05000000006400c8000000000000")), Err(InputError::Value(_))));
    }

    #[test]
    fn the_rumble_payload_is_what_clients_read() {
        assert_eq!(rumble_payload(0, 0x8000, 0x4000).to_vec(), hex("eeffc000000000800040"));
    }
}
