//! Keyboard and mouse into a session's X display through XTEST (x11rb: pure Rust, so an X server
//! that goes away is an error here, never an exit). Keys are found in the server's keyboard map by
//! keysym; a keysym the map lacks (a character to type, a media key) is bound to a spare keycode
//! first, as xdotool does. Every key and button still down is released on [`XInjector::release_all`].

use std::collections::BTreeSet;

use wolf_protocol::input::{InputEvent, MouseButton, WHEEL_DELTA};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xproto::{self, ConnectionExt as _};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;

use super::keymap;

#[derive(Debug, thiserror::Error)]
pub enum X11Error {
    #[error("connecting to {display}: {source}")]
    Connect { display: String, source: x11rb::errors::ConnectError },
    #[error("connecting to {display}: {source}")]
    Query { display: String, source: x11rb::errors::ConnectionError },
    #[error("connecting to {display}: no screen {screen}")]
    NoScreen { display: String, screen: usize },
    #[error("the X server of {0} has no XTEST extension")]
    NoXtest(String),
    #[error("X request: {0}")]
    Request(#[from] x11rb::errors::ConnectionError),
    #[error("X request: {0}")]
    Reply(#[from] x11rb::errors::ReplyError),
}

const SHIFT_L: u32 = 0xffe1;

pub struct XInjector {
    conn: RustConnection,
    root: xproto::Window,
    width: u16,
    height: u16,
    min_keycode: u8,
    per_keycode: u8,
    /// The server's keyboard map: `per_keycode` keysyms for each keycode from `min_keycode`.
    map: Vec<u32>,
    /// Keycodes with no keysym, lent to keysyms the map lacks (round robin).
    spare: Vec<u8>,
    next_spare: usize,
    keys_down: BTreeSet<u8>,
    buttons_down: BTreeSet<u8>,
    /// Scroll not yet a whole notch (vertical, horizontal), in 1/120 notches.
    scroll: (i32, i32),
}

impl XInjector {
    /// Connect to `display` (`:N`) (blocking).
    pub fn connect(display: &str) -> Result<XInjector, X11Error> {
        let display_name = || display.to_owned();
        let (conn, screen) =
            x11rb::connect(Some(display)).map_err(|source| X11Error::Connect { display: display_name(), source })?;
        if conn
            .extension_information(x11rb::protocol::xtest::X11_EXTENSION_NAME)
            .map_err(|source| X11Error::Query { display: display_name(), source })?
            .is_none()
        {
            return Err(X11Error::NoXtest(display.to_owned()));
        }
        let s = conn.setup().roots.get(screen).ok_or_else(|| X11Error::NoScreen { display: display_name(), screen })?;
        let (root, width, height) = (s.root, s.width_in_pixels, s.height_in_pixels);
        let (min_keycode, max_keycode) = (conn.setup().min_keycode, conn.setup().max_keycode);
        let mut x = XInjector {
            conn,
            root,
            width,
            height,
            min_keycode,
            per_keycode: 0,
            map: Vec::new(),
            spare: Vec::new(),
            next_spare: 0,
            keys_down: BTreeSet::new(),
            buttons_down: BTreeSet::new(),
            scroll: (0, 0),
        };
        x.load_map(max_keycode)?;
        // Clients repeat held keys themselves; the server's own repeat would double them.
        let no_repeat = xproto::ChangeKeyboardControlAux::new().auto_repeat_mode(xproto::AutoRepeatMode::OFF);
        x.conn.change_keyboard_control(&no_repeat)?;
        Ok(x)
    }

    fn load_map(&mut self, max_keycode: u8) -> Result<(), X11Error> {
        let count = max_keycode - self.min_keycode + 1;
        let reply = self.conn.get_keyboard_mapping(self.min_keycode, count)?.reply()?;
        self.per_keycode = reply.keysyms_per_keycode.max(1);
        self.map = reply.keysyms;
        let per = usize::from(self.per_keycode);
        self.spare = (0..usize::from(count))
            .filter(|i| self.map[i * per..(i + 1) * per].iter().all(|k| *k == 0))
            .map(|i| self.min_keycode + i as u8)
            .collect();
        Ok(())
    }

    /// The keycode and column (0: plain, 1: with Shift) of `keysym` in the map.
    fn find(&self, keysym: u32) -> Option<(u8, usize)> {
        let per = usize::from(self.per_keycode);
        for column in 0..per.min(2) {
            for (i, chunk) in self.map.chunks(per).enumerate() {
                if chunk.get(column) == Some(&keysym) {
                    return Some((self.min_keycode + i as u8, column));
                }
            }
        }
        None
    }

    /// Lend a spare keycode to `keysym` (both columns, so Shift does not change it).
    fn bind(&mut self, keysym: u32) -> Result<Option<u8>, X11Error> {
        if self.spare.is_empty() {
            return Ok(None);
        }
        // A spare not held down right now.
        let Some(code) = (0..self.spare.len())
            .map(|i| self.spare[(self.next_spare + i) % self.spare.len()])
            .find(|c| !self.keys_down.contains(c))
        else {
            return Ok(None);
        };
        self.next_spare = (self.next_spare + 1) % self.spare.len();
        let per = usize::from(self.per_keycode);
        let mut syms = vec![0u32; per];
        syms[0] = keysym;
        if per > 1 {
            syms[1] = keysym;
        }
        self.conn.change_keyboard_mapping(1, code, self.per_keycode, &syms)?;
        let at = usize::from(code - self.min_keycode) * per;
        self.map[at..at + per].copy_from_slice(&syms);
        Ok(Some(code))
    }

    fn keycode(&mut self, keysym: u32) -> Result<Option<(u8, usize)>, X11Error> {
        match self.find(keysym) {
            Some(found) => Ok(Some(found)),
            None => Ok(self.bind(keysym)?.map(|c| (c, 0))),
        }
    }

    fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) -> Result<(), X11Error> {
        self.conn.xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, x, y, 0)?;
        Ok(())
    }

    fn key(&mut self, code: u8, down: bool) -> Result<(), X11Error> {
        if down {
            self.keys_down.insert(code);
            self.fake(xproto::KEY_PRESS_EVENT, code, 0, 0)
        } else {
            self.keys_down.remove(&code);
            self.fake(xproto::KEY_RELEASE_EVENT, code, 0, 0)
        }
    }

    fn button(&mut self, button: u8, down: bool) -> Result<(), X11Error> {
        if down {
            self.buttons_down.insert(button);
            self.fake(xproto::BUTTON_PRESS_EVENT, button, 0, 0)
        } else {
            self.buttons_down.remove(&button);
            self.fake(xproto::BUTTON_RELEASE_EVENT, button, 0, 0)
        }
    }

    fn click(&mut self, button: u8) -> Result<(), X11Error> {
        self.button(button, true)?;
        self.button(button, false)
    }

    /// Type one character: press and release its key, with Shift when it is on the shifted column.
    fn type_char(&mut self, c: char) -> Result<(), X11Error> {
        let Some((code, column)) = self.keycode(keymap::char_keysym(c))? else { return Ok(()) };
        let shift = if column == 1 { self.find(SHIFT_L).map(|(s, _)| s) } else { None };
        if let Some(s) = shift {
            self.key(s, true)?;
        }
        self.key(code, true)?;
        self.key(code, false)?;
        if let Some(s) = shift {
            self.key(s, false)?;
        }
        Ok(())
    }

    /// Add `amount` (1/120 notches) to scroll axis `axis` and click `plus` or `minus` once per
    /// whole notch; the remainder waits for the next event.
    fn notches(&mut self, axis: usize, amount: i16, plus: u8, minus: u8) -> Result<(), X11Error> {
        let acc = if axis == 0 { &mut self.scroll.0 } else { &mut self.scroll.1 };
        *acc += i32::from(amount);
        let notch = i32::from(WHEEL_DELTA);
        let clicks = *acc / notch;
        *acc -= clicks * notch;
        let button = if clicks > 0 { plus } else { minus };
        for _ in 0..clicks.unsigned_abs() {
            self.click(button)?;
        }
        Ok(())
    }

    /// Apply one event. `false`: it is not keyboard or mouse input (nothing done).
    pub fn apply(&mut self, event: &InputEvent) -> Result<bool, X11Error> {
        match event {
            InputEvent::Key { down, vk, .. } => {
                // Modifiers come as their own key events; the byte only repeats them.
                if let Some(keysym) = keymap::keysym(*vk)
                    && let Some((code, _)) = self.keycode(keysym)?
                    && (*down || self.keys_down.contains(&code))
                {
                    self.key(code, *down)?;
                }
            }
            InputEvent::Text(text) => {
                for c in text.chars() {
                    self.type_char(c)?;
                }
            }
            InputEvent::MouseMove { dx, dy } => self.fake(xproto::MOTION_NOTIFY_EVENT, 1, *dx, *dy)?,
            InputEvent::MousePosition { x, y, width, height } => {
                let scale = |v: i16, of: u16, to: u16| {
                    let v = i64::from(v).clamp(0, i64::from(of));
                    (v * i64::from(to) / i64::from(of.max(1))).min(i64::from(to.saturating_sub(1))) as i16
                };
                let (sx, sy) = (scale(*x, *width, self.width), scale(*y, *height, self.height));
                self.fake(xproto::MOTION_NOTIFY_EVENT, 0, sx, sy)?;
            }
            InputEvent::MouseButton { down, button } => {
                let b = match button {
                    MouseButton::Left => 1,
                    MouseButton::Middle => 2,
                    MouseButton::Right => 3,
                    MouseButton::X1 => 8,
                    MouseButton::X2 => 9,
                };
                if *down || self.buttons_down.contains(&b) {
                    self.button(b, *down)?;
                }
            }
            // Away from the user (+) is X button 4 (up), towards 5; right (+) is 7, left 6.
            InputEvent::Scroll { amount } => self.notches(0, *amount, 4, 5)?,
            InputEvent::HScroll { amount } => self.notches(1, *amount, 7, 6)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Release every key and button still down (the client left mid-press).
    pub fn release_all(&mut self) -> Result<(), X11Error> {
        for code in std::mem::take(&mut self.keys_down) {
            self.fake(xproto::KEY_RELEASE_EVENT, code, 0, 0)?;
        }
        for b in std::mem::take(&mut self.buttons_down) {
            self.fake(xproto::BUTTON_RELEASE_EVENT, b, 0, 0)?;
        }
        // A round trip: the server has handled the releases before this connection closes.
        self.conn.get_input_focus()?.reply()?;
        self.flush()
    }

    /// Send what is queued; drop errors the server reported (requests are unchecked).
    pub fn flush(&self) -> Result<(), X11Error> {
        self.conn.flush()?;
        while let Ok(Some(_)) = self.conn.poll_for_event() {}
        Ok(())
    }
}
