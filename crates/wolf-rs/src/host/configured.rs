//! Connections configured before they arrive (`POST /api/v1/sessions/configure`): the next launch
//! with a given `uniqueid` goes straight into a lobby, as a web gateway attaches a browser to an
//! agent's desktop. Each entry is used once, or dropped after [`TTL`]; at [`MAX`] the oldest goes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an entry waits for its client's launch.
pub const TTL: Duration = Duration::from_secs(300);
/// Entries kept at once.
pub const MAX: usize = 1024;

struct Entry {
    unique_id: String,
    lobby_id: String,
    at: Instant,
}

#[derive(Default)]
pub struct Configured {
    entries: Mutex<VecDeque<Entry>>,
}

impl Configured {
    /// The next launch by `unique_id` joins `lobby_id` (replacing what was configured for it).
    pub fn set(&self, unique_id: &str, lobby_id: &str) {
        let mut e = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        e.retain(|x| x.unique_id != unique_id && x.at.elapsed() < TTL);
        while e.len() >= MAX {
            e.pop_front();
        }
        e.push_back(Entry { unique_id: unique_id.to_owned(), lobby_id: lobby_id.to_owned(), at: Instant::now() });
    }

    /// The lobby configured for `unique_id`, taken (used once); none once expired.
    pub fn take(&self, unique_id: &str) -> Option<String> {
        if unique_id.is_empty() {
            return None;
        }
        let mut e = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let i = e.iter().position(|x| x.unique_id == unique_id)?;
        let entry = e.remove(i)?;
        (entry.at.elapsed() < TTL).then_some(entry.lobby_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_used_once_replaced_by_a_newer_one_and_the_oldest_goes_at_the_cap() {
        let c = Configured::default();
        c.set("a", "lobby-1");
        c.set("a", "lobby-2");
        assert_eq!(c.take("a").as_deref(), Some("lobby-2"));
        assert_eq!(c.take("a"), None, "used once");
        assert_eq!(c.take(""), None);
        for i in 0..=MAX {
            c.set(&i.to_string(), "l");
        }
        assert_eq!(c.take("0"), None, "the oldest went at the cap");
        assert_eq!(c.take(&MAX.to_string()).as_deref(), Some("l"));
    }
}
