//! App runners: how a session's app is started, watched and stopped. The handle is persisted with
//! the session so a restarted host can find the app again.

use serde::{Deserialize, Serialize};

/// What identifies a running app across host restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RunnerHandle {
    /// The app only streams its sources; nothing runs.
    #[default]
    None,
    /// A process group led by `pid`; `start_time` (clock ticks after boot, /proc/<pid>/stat field
    /// 22) tells it apart from a later process that reused the pid.
    Process {
        pid: i32,
        start_time: u64,
    },
    Docker {
        container_id: String,
    },
}
