//! Versioned JSON state files (`{"version": N, ...}`): read with one policy for every store.
//! Missing → nothing. A symbolic link or anything but a regular file → refused with a clear error
//! (never followed, never read: a FIFO would block the start). Not JSON, not an object, no version,
//! or our version with fields or values that do not fit → corrupt: moved aside to
//! `<name>.corrupt-<unix time>` (nothing is lost), logged loudly, and the host starts without it.
//! Another version → refused with a clear error, so nothing a newer wolf-rs wrote is dropped.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result, ResultExt};

#[derive(Debug)]
pub enum Loaded<T> {
    Missing,
    Read(T),
    /// The file was corrupt and now lies at this path.
    MovedAside(PathBuf),
}

/// Read `path` (blocking) as `T` of `version`; `what` names it in messages.
pub fn read<T: DeserializeOwned>(path: &Path, version: u32, what: &str) -> Result<Loaded<T>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(Error::with_source(ErrorKind::Store, format!("inspecting {}", path.display()), e)),
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::new(
                ErrorKind::Store,
                format!(
                    "{} ({what}) is a symbolic link; wolf-rs keeps its state in regular files it writes itself. \
                     Put the file it points to in its place (or remove the link to start without it)",
                    path.display()
                ),
            ));
        }
        Ok(m) if !m.is_file() => {
            return Err(Error::new(
                ErrorKind::Store,
                format!(
                    "{} ({what}) is not a regular file (a directory, FIFO, socket or device); move it away",
                    path.display()
                ),
            ));
        }
        Ok(_) => {}
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(Error::with_source(ErrorKind::Store, format!("reading {}", path.display()), e)),
    };
    match parse(&bytes, version) {
        Parsed::Read(v) => Ok(Loaded::Read(v)),
        Parsed::Corrupt(why) => move_aside(path, what, &why),
        Parsed::OtherVersion(found) => Err(Error::new(
            ErrorKind::Store,
            format!(
                "{} ({what}) has version {found}; this wolf-rs reads version {version}. Run the wolf-rs that wrote \
                 it, or move the file away to start without it",
                path.display()
            ),
        )),
    }
}

/// What a state file's bytes are, by the policy above.
#[derive(Debug)]
pub enum Parsed<T> {
    Read(T),
    /// Why it is corrupt (it is moved aside).
    Corrupt(Corrupt),
    /// The version it has: another wolf-rs wrote it, it is refused.
    OtherVersion(u64),
}

/// Why a state file is corrupt.
#[derive(Debug, thiserror::Error)]
pub enum Corrupt {
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error(transparent)]
    Json(serde_json::Error),
    #[error("no numeric \"version\"")]
    NoVersion,
    #[error("version {version} but not its shape: {source}")]
    Shape { version: u32, source: serde_json::Error },
}

/// The file's contents as `T` of `version`: pure, so the policy can be tested (and fuzzed)
/// without files.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], version: u32) -> Parsed<T> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Parsed::Corrupt(Corrupt::NotUtf8);
    };
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Parsed::Corrupt(Corrupt::Json(e)),
    };
    let Some(found) = value.get("version").and_then(serde_json::Value::as_u64) else {
        return Parsed::Corrupt(Corrupt::NoVersion);
    };
    if found != u64::from(version) {
        return Parsed::OtherVersion(found);
    }
    match serde_json::from_value(value) {
        Ok(v) => Parsed::Read(v),
        // Our version, but not our shape: as corrupt as any.
        Err(source) => Parsed::Corrupt(Corrupt::Shape { version, source }),
    }
}

fn move_aside<T>(path: &Path, what: &str, why: &Corrupt) -> Result<Loaded<T>> {
    let aside = aside_name(path);
    std::fs::rename(path, &aside)
        .or_err(ErrorKind::Store, || format!("{} is corrupt ({why}) and could not be moved aside", path.display()))?;
    tracing::error!(
        file = %path.display(), moved_to = %aside.display(), error = %why,
        "{what} file is corrupt: moved aside, starting without it"
    );
    Ok(Loaded::MovedAside(aside))
}

fn aside_name(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".corrupt-{secs}"));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct F {
        version: u32,
        items: Vec<u32>,
    }

    fn load(text: Option<&str>) -> (tempfile::TempDir, Result<Loaded<F>>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        if let Some(t) = text {
            std::fs::write(&p, t).unwrap();
        }
        let r = read::<F>(&p, 1, "test");
        (dir, r)
    }

    #[test]
    fn policy() {
        assert!(matches!(load(None).1, Ok(Loaded::Missing)));
        assert!(matches!(load(Some(r#"{"version":1,"items":[3]}"#)).1, Ok(Loaded::Read(F { version: 1, .. }))));
        for corrupt in ["{not json", "[1,2]", r#"{"items":[]}"#, "\u{0}\u{1}garbage"] {
            let (dir, r) = load(Some(corrupt));
            assert!(matches!(r, Ok(Loaded::MovedAside(_))), "{corrupt}: {r:?}");
            let names: Vec<String> =
                std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            assert!(names.len() == 1 && names[0].starts_with("s.json.corrupt-"), "{names:?}");
        }
        // Our version but not our shape: corrupt too.
        for misshapen in [
            r#"{"version":1,"items":null}"#,
            r#"{"version":1,"items":["x"]}"#,
            r#"{"version":1}"#,
            r#"{"version":1,"items":[],"extra":1}"#,
        ] {
            let (_dir, r) = load(Some(misshapen));
            assert!(matches!(r, Ok(Loaded::MovedAside(_))), "{misshapen}: {r:?}");
        }
        let newer = load(Some(r#"{"version":2,"items":[]}"#)).1.unwrap_err().to_string();
        assert!(newer.contains("version 2"), "{newer}");
    }

    #[test]
    fn links_and_special_files_are_refused_never_followed_or_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &p).unwrap();
        let e = read::<F>(&p, 1, "test").unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_file(&p).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(&p).status().unwrap().success());
        let e = read::<F>(&p, 1, "test").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
