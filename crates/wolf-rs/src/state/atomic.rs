//! Crash-safe file writes: temp file in the same directory, fsync, rename, fsync the directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result, ResultExt};

/// Replace `path` with `bytes` atomically, with the given unix mode. Blocking: call it from
/// `spawn_blocking` or a dedicated thread, never from an async worker.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).or_err(ErrorKind::Io, || format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .or_err(ErrorKind::Io, || format!("creating a temp file in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .or_err(ErrorKind::Io, || format!("chmod {mode:o} on a temp file in {}", dir.display()))?;
    tmp.write_all(bytes).or_err(ErrorKind::Io, || format!("writing a temp file for {}", path.display()))?;
    tmp.as_file().sync_all().or_err(ErrorKind::Io, || format!("fsync of the temp file for {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| Error::with_source(ErrorKind::Io, format!("renaming into {}", path.display()), e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .or_err(ErrorKind::Io, || format!("fsync of directory {}", dir.display()))?;
    Ok(())
}

/// Remove temp files an interrupted `write_atomic` left in `dir` (blocking; start-up, before
/// anything writes there). Returns how many went.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let stale =
            e.file_name().to_str().is_some_and(|n| n.starts_with(".tmp-")) && e.file_type().is_ok_and(|t| t.is_file());
        if stale && fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "temp files from interrupted writes removed");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temps_go_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for n in [".tmp-abc", ".tmp-def", "paired_clients.json", "tmp-kept"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join(".tmp-dir")).unwrap();
        assert_eq!(remove_stale_temps(dir.path()), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, [".tmp-dir", "paired_clients.json", "tmp-kept"]);
    }

    #[test]
    fn writes_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("f.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }
}
