//! Paired clients: a JSON file written atomically by one writer, read through immutable snapshots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::state::atomic::write_atomic;
use crate::state::versioned::{self, Loaded};

pub(crate) const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairedClient {
    /// Hex SHA-256 of the certificate's DER.
    pub fingerprint: String,
    pub cert_pem: String,
    /// `devicename` from the pairing request.
    pub name: String,
    pub uniqueid: String,
    pub ip: String,
    /// Unix seconds.
    pub paired_at: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientsFile {
    pub(crate) version: u32,
    pub(crate) clients: Vec<PairedClient>,
}

type Snapshot = Arc<BTreeMap<String, PairedClient>>;

/// Read the file (blocking). Missing → empty; corrupt → moved aside, empty; see `versioned`.
pub fn read_file(path: &Path) -> Result<Vec<PairedClient>> {
    Ok(match versioned::read::<ClientsFile>(path, VERSION, "paired clients")? {
        Loaded::Read(f) => f.clients,
        Loaded::Missing | Loaded::MovedAside(_) => Vec::new(),
    })
}

/// Write the whole list atomically (blocking).
pub fn write_file(path: &Path, clients: &[PairedClient]) -> Result<()> {
    let file = ClientsFile { version: VERSION, clients: clients.to_vec() };
    let json = serde_json::to_vec_pretty(&file).or_err(ErrorKind::Store, || "encoding paired clients")?;
    write_atomic(path, &json, 0o600)
}

/// The paired clients of a running host.
pub struct ClientStore {
    path: PathBuf,
    snapshot: Arc<RwLock<Snapshot>>,
    /// Serializes writers so the file and the snapshot change together.
    writer: tokio::sync::Mutex<()>,
}

impl ClientStore {
    /// Blocking: call before the runtime serves requests, or from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<ClientStore> {
        let clients = read_file(path)?;
        let map = clients.into_iter().map(|c| (c.fingerprint.clone(), c)).collect();
        Ok(ClientStore {
            path: path.to_owned(),
            snapshot: Arc::new(RwLock::new(Arc::new(map))),
            writer: Default::default(),
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        match self.snapshot.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn get(&self, fingerprint_hex: &str) -> Option<PairedClient> {
        self.snapshot().get(fingerprint_hex).cloned()
    }

    pub fn list(&self) -> Vec<PairedClient> {
        self.snapshot().values().cloned().collect()
    }

    /// Write, then publish. Both happen on the blocking thread, so a cancelled caller cannot leave
    /// the file and memory disagreeing.
    async fn commit(&self, next: BTreeMap<String, PairedClient>) -> Result<()> {
        let path = self.path.clone();
        let snapshot = self.snapshot.clone();
        tokio::task::spawn_blocking(move || {
            let list: Vec<PairedClient> = next.values().cloned().collect();
            write_file(&path, &list)?;
            let next = Arc::new(next);
            match snapshot.write() {
                Ok(mut g) => *g = next,
                Err(poisoned) => *poisoned.into_inner() = next,
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::with_source(ErrorKind::Store, "the store writer task failed", e))?
    }

    /// Persist a new pairing; memory changes only once the file is on disk.
    pub async fn add(&self, client: PairedClient) -> Result<()> {
        let _w = self.writer.lock().await;
        let mut next = (*self.snapshot()).clone();
        next.insert(client.fingerprint.clone(), client);
        self.commit(next).await
    }

    /// Remove every client `pred` selects; returns them.
    pub async fn remove_where(&self, pred: impl Fn(&PairedClient) -> bool) -> Result<Vec<PairedClient>> {
        let _w = self.writer.lock().await;
        let current = self.snapshot();
        let (gone, kept): (Vec<_>, Vec<_>) = current.values().cloned().partition(|c| pred(c));
        if gone.is_empty() {
            return Ok(gone);
        }
        self.commit(kept.into_iter().map(|c| (c.fingerprint.clone(), c)).collect()).await?;
        Ok(gone)
    }
}

/// Does `selector` (a fingerprint prefix of at least 8 hex chars, or an exact name) pick `c`?
pub fn matches_selector(c: &PairedClient, selector: &str) -> bool {
    selector_matches(&c.fingerprint, &c.name, selector)
}

/// `matches_selector` on a client's fingerprint and name (as the API lists them).
pub fn selector_matches(fingerprint: &str, name: &str, selector: &str) -> bool {
    let s = selector.to_ascii_lowercase();
    (s.len() >= 8 && fingerprint.starts_with(&s)) || name == selector
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(fp: &str) -> PairedClient {
        PairedClient {
            fingerprint: fp.into(),
            cert_pem: "pem".into(),
            name: "roth".into(),
            uniqueid: "0123456789ABCDEF".into(),
            ip: "127.0.0.1".into(),
            paired_at: 1,
        }
    }

    #[tokio::test]
    async fn add_remove_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paired_clients.json");
        let store = ClientStore::open(&path).unwrap();
        store.add(client("aa")).await.unwrap();
        store.add(client("bb")).await.unwrap();
        assert_eq!(ClientStore::open(&path).unwrap().list().len(), 2);
        let gone = store.remove_where(|c| c.fingerprint == "aa").await.unwrap();
        assert_eq!(gone.len(), 1);
        let reopened = ClientStore::open(&path).unwrap();
        assert!(reopened.get("aa").is_none() && reopened.get("bb").is_some());
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        // The store's path is a directory: every write fails.
        let path = dir.path().join("is_a_dir");
        std::fs::create_dir(&path).unwrap();
        let store = ClientStore { path, snapshot: Arc::default(), writer: Default::default() };
        assert!(store.add(client("aa")).await.is_err());
        assert!(store.list().is_empty());
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paired_clients.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(read_file(&path).unwrap().is_empty());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with("paired_clients.json.corrupt-"), "{names:?}");
    }
}
