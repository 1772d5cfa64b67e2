//! Networking building blocks: TLS (verifier, handshake gate), connection limits, interface facts,
//! the accept loop, the local unix sockets, and one HTTP/1.1 request for the CLI.

pub mod http1;
pub mod iface;
pub mod limit;
pub mod tls;
pub mod unix;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How often a waiting accept loop beats for the watchdog.
const ACCEPT_BEAT: Duration = Duration::from_millis(250);

/// The next connection, or `None` once `shutdown` fires. A failed accept (e.g. out of file
/// descriptors) is logged and retried after a short pause instead of spinning. While it waits it
/// beats `beat`, so a loop that stops being scheduled shows up in the watchdog.
pub async fn accept_next(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
    beat: Option<&crate::watchdog::Heartbeat>,
) -> Option<(TcpStream, SocketAddr)> {
    let mut tick = tokio::time::interval(ACCEPT_BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tick.tick() => {
                if let Some(b) = beat {
                    b.beat();
                }
                continue;
            }
            a = listener.accept() => a,
        };
        match accepted {
            Ok(a) => return Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
