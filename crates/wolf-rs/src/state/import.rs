//! Writes what `config::import_wolf` read from a Wolf config into this host's files: config.toml
//! edited in place (its comments kept), paired_clients.json merged. Blocking; the host is stopped.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::import_wolf::import;
use crate::config::{Config, Env};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::state::clients::{self, PairedClient};

/// Import the Wolf config at `wolf` into `config` (which exists) and `clients_file`. Returns the report to print.
pub fn import_wolf(wolf: &Path, config: &Path, clients_file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(wolf).or_err(ErrorKind::Config, || format!("reading {}", wolf.display()))?;
    let imported = import(&text).or_err(ErrorKind::Config, || wolf.display().to_string())?;
    let ours = std::fs::read_to_string(config).or_err(ErrorKind::Config, || format!("reading {}", config.display()))?;
    let before = Config::parse(&ours, &Env::default()).map_err(|issues| {
        Error::new(ErrorKind::Config, format!("{} has {} problem(s); fix them first", config.display(), issues.len()))
    })?;
    let mut doc: toml_edit::DocumentMut =
        ours.parse().or_err(ErrorKind::Config, || format!("parsing {}", config.display()))?;
    let mut report = String::new();
    let mut skipped = Vec::new();
    if let Some(h) = &imported.hostname {
        doc["hostname"] = toml_edit::value(h.as_str());
        let _ = writeln!(report, "hostname: {h}");
    }
    if let Some(u) = imported.uuid.as_deref().filter(|u| uuid::Uuid::parse_str(u).is_ok()) {
        doc["uuid"] = toml_edit::value(u);
        let _ = writeln!(report, "uuid: {u} (clients see the same host)");
    }
    // Without [[apps]] the defaults apply: they are written out first so the imported ones add to them.
    if doc.get("apps").is_none() {
        for a in &before.apps {
            push_app(&mut doc, a)?;
        }
    }
    let mut taken: Vec<(u32, String)> = before.apps.iter().map(|a| (a.id, a.title.clone())).collect();
    for app in &imported.apps {
        if let Some((id, _)) = taken.iter().find(|(id, title)| *id == app.id || *title == app.title) {
            skipped.push(format!("app {:?}: id {} or its title is already in {}", app.title, id, config.display()));
            continue;
        }
        push_app(&mut doc, app)?;
        taken.push((app.id, app.title.clone()));
        let _ = writeln!(report, "app {} {:?} ({:?} runner)", app.id, app.title, app.runner.kind);
    }
    let text = doc.to_string();
    Config::parse(&text, &Env::default()).map_err(|issues| {
        let list: Vec<String> = issues.iter().map(|i| format!("{i:?}")).collect();
        Error::new(ErrorKind::Config, format!("the imported config would not be valid: {}", list.join("; ")))
    })?;

    let mut paired = clients::read_file(clients_file)?;
    let mut added = 0;
    for c in &imported.clients {
        let cert = match wolf_protocol::pairing::CertInfo::from_pem(&c.cert_pem) {
            Ok(cert) => cert,
            Err(e) => {
                skipped.push(format!("client {:?}: its certificate does not parse ({e:?})", c.name));
                continue;
            }
        };
        let fingerprint = cert.fingerprint_hex();
        if paired.iter().any(|p| p.fingerprint == fingerprint) {
            skipped.push(format!("client {:?}: already paired here", c.name));
            continue;
        }
        paired.push(PairedClient {
            fingerprint: fingerprint.clone(),
            cert_pem: c.cert_pem.clone(),
            name: format!("wolf:{}", c.name),
            uniqueid: String::new(),
            ip: String::new(),
            paired_at: crate::metrics::unix_ms() / 1000,
        });
        added += 1;
        let _ = writeln!(report, "client {} (fingerprint {}…): stays paired", c.name, &fingerprint[..16]);
    }
    // Clients first: a config written without them would show apps to clients that cannot pair.
    clients::write_file(clients_file, &paired)?;
    crate::state::atomic::write_atomic(config, text.as_bytes(), 0o644)?;
    let _ = writeln!(
        report,
        "imported {added} client(s) and {} app(s) into {} and {}",
        taken.len() - before.apps.len(),
        config.display(),
        clients_file.display()
    );
    for line in imported.not_carried.iter().chain(&skipped) {
        let _ = writeln!(report, "not carried: {line}");
    }
    Ok(report)
}

fn push_app(doc: &mut toml_edit::DocumentMut, app: &crate::config::App) -> Result<()> {
    let text = toml::to_string(app).or_err(ErrorKind::Config, || format!("encoding app {:?}", app.title))?;
    let table: toml_edit::DocumentMut =
        text.parse().or_err(ErrorKind::Config, || format!("encoding app {:?}", app.title))?;
    // Headers are written in position order: the new tables go after everything there.
    let mut next = max_position(doc.as_table()) + 1;
    let mut table = table.as_table().clone();
    renumber(&mut table, &mut next);
    let apps = doc
        .entry("apps")
        .or_insert(toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| Error::new(ErrorKind::Config, "apps in config.toml is not a list of [[apps]] tables"))?;
    apps.push(table);
    Ok(())
}

fn max_position(t: &toml_edit::Table) -> usize {
    let mut max = t.position().unwrap_or(0);
    for (_, item) in t.iter() {
        match item {
            toml_edit::Item::Table(sub) => max = max.max(max_position(sub)),
            toml_edit::Item::ArrayOfTables(a) => {
                for sub in a.iter() {
                    max = max.max(max_position(sub));
                }
            }
            _ => {}
        }
    }
    max
}

fn renumber(t: &mut toml_edit::Table, next: &mut usize) {
    t.set_position(*next);
    *next += 1;
    for (_, item) in t.iter_mut() {
        if let toml_edit::Item::Table(sub) = item {
            renumber(sub, next);
        }
    }
}
