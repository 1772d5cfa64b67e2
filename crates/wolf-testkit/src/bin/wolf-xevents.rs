//! wolf-xevents: an X client for the input tests. It covers the screen with a window that has the
//! keyboard focus and writes every key, button and pointer event it receives to the file named by
//! its argument, one line each, flushed at once:
//! `key_press 0x<keysym> state=0x<mask>`, `key_release ...`, `button_press <n>`, `button_release <n>`,
//! `motion <x> <y>`; `ready` once it listens. Keysyms are read with the server's current map
//! (reloaded on MappingNotify, as the host binds spare keycodes for characters).

use std::io::Write;

use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{ConnectionExt, CreateWindowAux, EventMask, InputFocus, KeyButMask, WindowClass};
use x11rb::wrapper::ConnectionExt as _;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Keymap {
    min: u8,
    per: usize,
    syms: Vec<u32>,
}

impl Keymap {
    fn load(conn: &impl Connection) -> Res<Keymap> {
        let (min, max) = (conn.setup().min_keycode, conn.setup().max_keycode);
        let r = conn.get_keyboard_mapping(min, max - min + 1)?.reply()?;
        Ok(Keymap { min, per: usize::from(r.keysyms_per_keycode.max(1)), syms: r.keysyms })
    }

    fn keysym(&self, code: u8, shift: bool) -> u32 {
        let at = usize::from(code.saturating_sub(self.min)) * self.per;
        let col = |c: usize| self.syms.get(at + c).copied().unwrap_or(0);
        match (shift, col(1)) {
            (true, 0) => col(0),
            (true, s) => s,
            (false, _) => col(0),
        }
    }
}

fn main() -> Res<()> {
    let path = std::env::args().nth(1).ok_or("usage: wolf-xevents OUTPUT_FILE")?;
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let (conn, screen) = x11rb::connect(None)?;
    let s = &conn.setup().roots[screen];
    let win = conn.generate_id()?;
    let mask = EventMask::KEY_PRESS
        | EventMask::KEY_RELEASE
        | EventMask::BUTTON_PRESS
        | EventMask::BUTTON_RELEASE
        | EventMask::POINTER_MOTION
        | EventMask::EXPOSURE;
    let aux = CreateWindowAux::new().event_mask(mask).background_pixel(s.white_pixel).override_redirect(1);
    conn.create_window(
        s.root_depth,
        win,
        s.root,
        0,
        0,
        s.width_in_pixels,
        s.height_in_pixels,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &aux,
    )?;
    conn.map_window(win)?;
    conn.flush()?;
    let mut map = Keymap::load(&conn)?;
    let mut ready = false;
    loop {
        let line = match conn.wait_for_event()? {
            Event::Expose(_) if !ready => {
                conn.set_input_focus(InputFocus::POINTER_ROOT, win, x11rb::CURRENT_TIME)?;
                conn.sync()?;
                ready = true;
                "ready".to_owned()
            }
            Event::MappingNotify(_) => {
                map = Keymap::load(&conn)?;
                continue;
            }
            Event::KeyPress(e) | Event::KeyRelease(e) => {
                let shift = e.state.contains(KeyButMask::SHIFT);
                let kind = if e.response_type & 0x7f == x11rb::protocol::xproto::KEY_PRESS_EVENT {
                    "key_press"
                } else {
                    "key_release"
                };
                format!("{kind} {:#x} state={:#x}", map.keysym(e.detail, shift), u16::from(e.state))
            }
            Event::ButtonPress(e) => format!("button_press {}", e.detail),
            Event::ButtonRelease(e) => format!("button_release {}", e.detail),
            Event::MotionNotify(e) => format!("motion {} {}", e.root_x, e.root_y),
            _ => continue,
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
}
