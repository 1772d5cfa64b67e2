//! Windows virtual-key codes (what Moonlight sends, meaning keys of a US layout) to X keysyms, and
//! the keysym of a typed character.

/// The keysym of the key a virtual-key code names (its unshifted symbol); `None`: no such key.
pub fn keysym(vk: u8) -> Option<u32> {
    Some(match vk {
        // Letters: the key, not the case (Shift comes as its own key).
        0x41..=0x5A => u32::from(vk - 0x41) + 0x61,
        0x30..=0x39 => u32::from(vk),
        0x08 => 0xff08,                               // BackSpace
        0x09 => 0xff09,                               // Tab
        0x0C => 0xff0b,                               // Clear
        0x0D => 0xff0d,                               // Return
        0x10 | 0xA0 => 0xffe1,                        // Shift_L
        0xA1 => 0xffe2,                               // Shift_R
        0x11 | 0xA2 => 0xffe3,                        // Control_L
        0xA3 => 0xffe4,                               // Control_R
        0x12 | 0xA4 => 0xffe9,                        // Alt_L
        0xA5 => 0xffea,                               // Alt_R
        0x13 => 0xff13,                               // Pause
        0x14 => 0xffe5,                               // Caps_Lock
        0x1B => 0xff1b,                               // Escape
        0x20 => 0x0020,                               // space
        0x21 => 0xff55,                               // Prior
        0x22 => 0xff56,                               // Next
        0x23 => 0xff57,                               // End
        0x24 => 0xff50,                               // Home
        0x25 => 0xff51,                               // Left
        0x26 => 0xff52,                               // Up
        0x27 => 0xff53,                               // Right
        0x28 => 0xff54,                               // Down
        0x29 => 0xff60,                               // Select
        0x2A | 0x2C => 0xff61,                        // Print
        0x2B => 0xff62,                               // Execute
        0x2D => 0xff63,                               // Insert
        0x2E => 0xffff,                               // Delete
        0x2F => 0xff6a,                               // Help
        0x5B => 0xffeb,                               // Super_L
        0x5C => 0xffec,                               // Super_R
        0x5D => 0xff67,                               // Menu
        0x60..=0x69 => 0xffb0 + u32::from(vk - 0x60), // KP_0..KP_9
        0x6A => 0xffaa,                               // KP_Multiply
        0x6B => 0xffab,                               // KP_Add
        0x6C => 0xffac,                               // KP_Separator
        0x6D => 0xffad,                               // KP_Subtract
        0x6E => 0xffae,                               // KP_Decimal
        0x6F => 0xffaf,                               // KP_Divide
        0x70..=0x87 => 0xffbe + u32::from(vk - 0x70), // F1..F24
        0x90 => 0xff7f,                               // Num_Lock
        0x91 => 0xff14,                               // Scroll_Lock
        0xAD => 0x1008_ff12,                          // XF86AudioMute
        0xAE => 0x1008_ff11,                          // XF86AudioLowerVolume
        0xAF => 0x1008_ff13,                          // XF86AudioRaiseVolume
        0xB0 => 0x1008_ff17,                          // XF86AudioNext
        0xB1 => 0x1008_ff16,                          // XF86AudioPrev
        0xB2 => 0x1008_ff15,                          // XF86AudioStop
        0xB3 => 0x1008_ff14,                          // XF86AudioPlay
        0xBA => 0x003b,                               // semicolon
        0xBB => 0x003d,                               // equal
        0xBC => 0x002c,                               // comma
        0xBD => 0x002d,                               // minus
        0xBE => 0x002e,                               // period
        0xBF => 0x002f,                               // slash
        0xC0 => 0x0060,                               // grave
        0xDB => 0x005b,                               // bracketleft
        0xDC => 0x005c,                               // backslash
        0xDD => 0x005d,                               // bracketright
        0xDE => 0x0027,                               // apostrophe
        0xE2 => 0x003c,                               // less (the ISO key between left Shift and Z)
        _ => return None,
    })
}

/// The keysym of a character: Latin-1 as itself, the rest as `0x0100_0000 + code point`.
pub fn char_keysym(c: char) -> u32 {
    match u32::from(c) {
        // Control characters a client may type as text.
        0x0A | 0x0D => 0xff0d,
        0x09 => 0xff09,
        0x08 => 0xff08,
        cp @ (0x20..=0x7E | 0xA0..=0xFF) => cp,
        cp => 0x0100_0000 + cp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_us_keyboard() {
        assert_eq!(keysym(0x41), Some(u32::from('a')));
        assert_eq!(keysym(0x5A), Some(u32::from('z')));
        assert_eq!(keysym(0x30), Some(u32::from('0')));
        assert_eq!(keysym(0x0D), Some(0xff0d));
        assert_eq!(keysym(0x70), Some(0xffbe), "F1");
        assert_eq!(keysym(0x87), Some(0xffbe + 23), "F24");
        assert_eq!(keysym(0x25), Some(0xff51), "Left");
        assert_eq!(keysym(0xBD), Some(u32::from('-')));
        assert_eq!(keysym(0x07), None);
        assert_eq!(keysym(0xFF), None);
    }

    #[test]
    fn characters() {
        assert_eq!(char_keysym('a'), 0x61);
        assert_eq!(char_keysym('é'), 0xe9);
        assert_eq!(char_keysym('✓'), 0x0100_2713);
        assert_eq!(char_keysym('\n'), 0xff0d);
    }
}
