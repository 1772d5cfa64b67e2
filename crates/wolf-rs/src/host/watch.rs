//! What ends sessions on its own: an app that exited, a display or sink that went away, a client
//! that went quiet. Processes are looked at once a second (an exit is not announced to us).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Host;
use crate::commands::EndReason;
use crate::runners::Lost;
use crate::sessions::SessionState;

impl Host {
    /// Ends sessions whose app exited or whose display or sink went away, stops lobbies whose
    /// parts went, and rotates app logs.
    pub async fn watch_apps(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut turns = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            turns += 1;
            let running: Vec<_> = self
                .sessions
                .list()
                .into_iter()
                .filter(|s| !s.parts().is_empty() && s.state != SessionState::Stopping)
                .collect();
            for s in &running {
                let reason = match self.planes.runners.lost(s.id, &s.parts()).await {
                    None => continue,
                    Some(Lost::App) => EndReason::AppExited,
                    Some(Lost::Display) => EndReason::DisplayLost,
                    Some(Lost::Audio) => EndReason::AudioLost,
                };
                tracing::info!(
                    session = s.id,
                    app = s.app_id,
                    reason = reason.as_str(),
                    "a part of the session is gone: ending it"
                );
                self.end(s.id, reason).await;
            }
            self.lobbies.watch().await;
            if turns % 10 == 0 {
                let ids: Vec<u32> = running.iter().map(|s| s.id).collect();
                let p = self.planes.runners.process.clone();
                let _ = tokio::task::spawn_blocking(move || p.rotate_logs(&ids)).await;
            }
        }
    }

    /// Check for idle sessions a few times per timeout (at most every 5 s).
    pub async fn stop_idle_sessions(self: Arc<Self>, idle: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval((idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    self.stop_idle(idle).await;
                }
            }
        }
    }
}
