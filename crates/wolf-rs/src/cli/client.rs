//! The CLI's side of the API socket: one HTTP request to the running host. Every command that
//! talks to a host (`pair`, `clients`, `sessions`, `apps`, `lobbies`) goes through `call`.

use std::path::Path;
use std::time::Duration;

use hyper::{Method, StatusCode};
use tokio::net::UnixStream;

use crate::error::{Error, ErrorKind, Result};

/// How long the host gets to answer one request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One request to the API socket `sock`: (status, body). `Ok(None)` when no host listens there.
pub async fn call(
    sock: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Option<(StatusCode, String)>> {
    let stream = match UnixStream::connect(sock).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => {
            return Err(Error::with_source(ErrorKind::Admin, format!("connecting to {}", sock.display()), e));
        }
    };
    let exchange = crate::net::http1::request(stream, method, path, body, ErrorKind::Admin, "api");
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Admin,
                format!("the host did not answer on the API socket within {} s", TIMEOUT.as_secs()),
            )
        })?
        .map(Some)
}
