//! The `/launch` and `/resume` query parameters the host reads as more than strings.

/// `WxHxFPS` from `/launch` (and `/resume`): the client's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.width, self.height, self.fps)
    }
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
