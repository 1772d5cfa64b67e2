//! The apps clients can launch: those of config.toml, then those added at run time through the API,
//! which live in `apps.json` (versioned, written atomically, like the other state files) and
//! survive restarts. Each app's icon is read when the app is known (start-up or add), so no
//! request handler touches the disk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::App;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::state::atomic::write_atomic;
use crate::state::versioned::{self, Loaded};

pub const FILE_NAME: &str = "apps.json";
pub const VERSION: u32 = 1;
/// Apps that may be added at run time.
pub const MAX_ADDED: usize = 256;

/// The icon shown for an app without a readable PNG.
pub const DEFAULT_ICON: &[u8] = include_bytes!("../gamestream/default_icon.png");

/// An app added through the API, with the id its adder gave it (Wolf's ids are strings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddedApp {
    pub api_id: String,
    pub app: App,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppsFile {
    version: u32,
    apps: Vec<AddedApp>,
}

/// Why an app could not be added or removed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The app comes from config.toml: change it there.
    FromConfig,
    Full,
}

#[derive(Clone)]
struct Entry {
    app: Arc<App>,
    /// `None` for config.toml's apps.
    api_id: Option<String>,
    icon: Bytes,
}

pub struct AppCatalog {
    path: PathBuf,
    entries: RwLock<Arc<Vec<Entry>>>,
    writer: tokio::sync::Mutex<()>,
}

/// The app's icon (blocking): its PNG, else the built-in one (with a warning).
pub fn load_icon(a: &App) -> Bytes {
    if a.icon_png.is_empty() {
        return Bytes::from_static(DEFAULT_ICON);
    }
    match std::fs::read(&a.icon_png) {
        Ok(b) if b.starts_with(b"\x89PNG") => Bytes::from(b),
        Ok(_) => {
            tracing::warn!(app = %a.title, file = %a.icon_png, "icon is not a PNG; using the built-in one");
            Bytes::from_static(DEFAULT_ICON)
        }
        Err(e) => {
            tracing::warn!(app = %a.title, file = %a.icon_png, error = %e, "icon unreadable; using the built-in one");
            Bytes::from_static(DEFAULT_ICON)
        }
    }
}

impl AppCatalog {
    /// config.toml's apps and the file's (blocking: start-up). A corrupt file is moved aside and
    /// its apps are gone (logged); an added app whose id config.toml now uses is dropped (logged).
    pub fn open(path: &Path, config_apps: &[App]) -> Result<AppCatalog> {
        let added = match versioned::read::<AppsFile>(path, VERSION, "added apps")? {
            Loaded::Read(f) => f.apps,
            Loaded::Missing | Loaded::MovedAside(_) => Vec::new(),
        };
        let mut entries: Vec<Entry> =
            config_apps.iter().map(|a| Entry { app: Arc::new(a.clone()), api_id: None, icon: load_icon(a) }).collect();
        for a in added {
            if entries.iter().any(|e| e.app.id == a.app.id) {
                tracing::warn!(app = %a.app.title, id = a.app.id, "an added app's id is now config.toml's: dropped");
                continue;
            }
            let icon = load_icon(&a.app);
            entries.push(Entry { app: Arc::new(a.app), api_id: Some(a.api_id), icon });
        }
        Ok(AppCatalog { path: path.to_owned(), entries: RwLock::new(Arc::new(entries)), writer: Default::default() })
    }

    fn snapshot(&self) -> Arc<Vec<Entry>> {
        match self.entries.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn list(&self) -> Vec<Arc<App>> {
        self.snapshot().iter().map(|e| e.app.clone()).collect()
    }

    pub fn get(&self, id: u32) -> Option<Arc<App>> {
        self.snapshot().iter().find(|e| e.app.id == id).map(|e| e.app.clone())
    }

    pub fn icon(&self, id: u32) -> Option<Bytes> {
        self.snapshot().iter().find(|e| e.app.id == id).map(|e| e.icon.clone())
    }

    /// The id the API shows: the adder's for an added app, the number for config.toml's.
    pub fn api_id(&self, id: u32) -> String {
        self.snapshot().iter().find(|e| e.app.id == id).and_then(|e| e.api_id.clone()).unwrap_or(id.to_string())
    }

    /// Add `app` under the API's `api_id` (replacing an added app with that id); its number is
    /// `api_id` when that is a free number, else one derived from it. Returns the number.
    pub async fn add(&self, api_id: String, mut app: App) -> std::result::Result<u32, AddError> {
        let _w = self.writer.lock().await;
        let current = self.snapshot();
        let mut next: Vec<Entry> = current.iter().filter(|e| e.api_id.as_deref() != Some(&api_id)).cloned().collect();
        if next.iter().any(|e| e.api_id.is_none() && e.app.id.to_string() == api_id) {
            return Err(AddError::Refused(Refused::FromConfig));
        }
        if next.iter().filter(|e| e.api_id.is_some()).count() >= MAX_ADDED {
            return Err(AddError::Refused(Refused::Full));
        }
        app.id = free_id(&api_id, |n| next.iter().any(|e| e.app.id == n));
        let a = app.clone();
        let icon = tokio::task::spawn_blocking(move || load_icon(&a))
            .await
            .map_err(|e| AddError::Store(Error::with_source(ErrorKind::Store, "reading the icon", e)))?;
        let id = app.id;
        next.push(Entry { app: Arc::new(app), api_id: Some(api_id), icon });
        self.commit(next).await.map_err(AddError::Store)?;
        Ok(id)
    }

    /// Remove the added app `api_id` (or numbered so); the app removed, `None` if there was none.
    pub async fn remove(&self, api_id: &str) -> std::result::Result<Option<Arc<App>>, AddError> {
        let _w = self.writer.lock().await;
        let current = self.snapshot();
        let hit = |e: &Entry| e.api_id.as_deref() == Some(api_id) || e.app.id.to_string() == api_id;
        let Some(gone) = current.iter().find(|e| hit(e)) else { return Ok(None) };
        if gone.api_id.is_none() {
            return Err(AddError::Refused(Refused::FromConfig));
        }
        let app = gone.app.clone();
        let next = current.iter().filter(|e| !hit(e)).cloned().collect();
        self.commit(next).await.map_err(AddError::Store)?;
        Ok(Some(app))
    }

    /// Write the added apps, then publish all (on a blocking thread: a cancelled caller cannot
    /// leave the file and memory disagreeing).
    async fn commit(&self, next: Vec<Entry>) -> Result<()> {
        let (path, entries) = (self.path.clone(), Arc::new(next));
        let published = entries.clone();
        let file = AppsFile {
            version: VERSION,
            apps: entries
                .iter()
                .filter_map(|e| Some(AddedApp { api_id: e.api_id.clone()?, app: (*e.app).clone() }))
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&file).or_err(ErrorKind::Store, || "encoding the added apps")?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &json, 0o600))
            .await
            .map_err(|e| Error::with_source(ErrorKind::Store, "the apps writer task failed", e))??;
        match self.entries.write() {
            Ok(mut g) => *g = published,
            Err(p) => *p.into_inner() = published,
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum AddError {
    Refused(Refused),
    Store(Error),
}

/// `api_id` as a number when it is one and free, else a number derived from it (Wolf's own app-id
/// hash of the string), moved on while taken. Never 0.
fn free_id(api_id: &str, taken: impl Fn(u32) -> bool) -> u32 {
    let mut n = match api_id.parse::<u32>() {
        Ok(n) if n > 0 && n <= i32::MAX as u32 => n,
        _ => crate::config::import_wolf::wolf_app_id("", api_id),
    };
    while taken(n) {
        n = n.checked_add(1).filter(|n| *n <= i32::MAX as u32).unwrap_or(1);
    }
    n
}

impl std::fmt::Display for AddError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddError::Refused(r) => write!(f, "Refused({r:?})"),
            AddError::Store(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(title: &str) -> App {
        App { title: title.into(), ..App::default() }
    }

    #[tokio::test]
    async fn added_apps_survive_a_reopen_and_config_apps_cannot_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let config = [App::test_pattern()];
        let c = AppCatalog::open(&p, &config).unwrap();
        assert_eq!(c.add("7".into(), app("Seven")).await.unwrap(), 7, "a free number is kept");
        let uuid = c.add("2f4e-uuid".into(), app("Named")).await.unwrap();
        assert!(uuid > 1 && uuid != 7);
        assert_eq!(c.add("1".into(), app("Clash")).await.unwrap_err().to_string(), "Refused(FromConfig)");
        let again = AppCatalog::open(&p, &config).unwrap();
        assert_eq!(
            again.list().iter().map(|a| a.title.as_str()).collect::<Vec<_>>(),
            ["Test pattern", "Seven", "Named"]
        );
        assert_eq!(again.api_id(uuid), "2f4e-uuid");
        assert!(matches!(again.remove("1").await, Err(AddError::Refused(Refused::FromConfig))));
        assert_eq!(again.remove("2f4e-uuid").await.unwrap().unwrap().title, "Named");
        assert!(again.remove("2f4e-uuid").await.unwrap().is_none());
        assert_eq!(AppCatalog::open(&p, &config).unwrap().list().len(), 2);
    }

    #[test]
    fn derived_ids_are_wolfs_and_move_on_when_taken() {
        assert_eq!(free_id("42", |_| false), 42);
        assert_eq!(free_id("42", |n| n == 42), 43);
        assert_eq!(free_id("0", |_| false), free_id("0", |_| false));
        assert!(free_id("-5", |_| false) > 0);
        // Wolf's id of its Firefox app (icon path + title).
        assert_eq!(free_id("firefox.pngFirefox", |_| false), 304_556_286);
    }
}
