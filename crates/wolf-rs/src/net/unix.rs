//! The host's local socket (the API): bound once per state dir.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

use crate::error::{Error, ErrorKind, Result, ResultExt};

/// Bind `path` with `mode`. A socket there that answers means another host serves it: an error; a
/// stale one is replaced.
pub async fn bind(path: &Path, mode: u32) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(Error::new(
                ErrorKind::Bind,
                format!("{} answers: another wolf-rs is running with this state directory", path.display()),
            ));
        }
        std::fs::remove_file(path).or_err(ErrorKind::Bind, || format!("removing stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).or_err(ErrorKind::Bind, || format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .or_err(ErrorKind::Bind, || format!("chmod {mode:o} {}", path.display()))?;
    Ok(listener)
}
