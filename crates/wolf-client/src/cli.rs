//! `wolf-client`: the Moonlight side from the command line: pair, then serverinfo, applist,
//! launch, cancel, unpair against one host.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use wolf_protocol::pairing::CertInfo;

use crate::error::{Error, ErrorKind, Result};
use crate::gamestream::{GameStreamClient, PairOutcome};
use crate::identity::ClientIdentity;

/// Act as a Moonlight client of a host: pair, then serverinfo, applist, launch, cancel.
#[derive(Debug, Parser)]
#[command(name = "wolf-client", version, about = "A Moonlight-like client of a GameStream host")]
pub struct Cli {
    /// Host address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The host's HTTP port (the HTTPS port is read from its serverinfo).
    #[arg(long, default_value_t = 47989)]
    pub http_port: u16,
    /// Where the client keeps its key, certificate and the host's pinned certificate.
    #[arg(long, default_value = "./client-data")]
    pub client_dir: PathBuf,
    #[command(subcommand)]
    pub action: ClientAction,
}

#[derive(Debug, Subcommand)]
pub enum ClientAction {
    /// The five pairing steps; waits while the host waits for the PIN (type it on the host's PIN
    /// page or run `wolf-rs pair <PIN>` there).
    Pair {
        #[arg(long)]
        pin: String,
    },
    /// HTTPS /serverinfo (HTTP if not paired).
    Serverinfo,
    /// HTTPS /applist.
    Applist,
    /// HTTPS /launch.
    Launch {
        #[arg(long, default_value_t = 1)]
        app: u32,
        #[arg(long, default_value = "1920x1080x60")]
        mode: String,
    },
    /// HTTPS /cancel.
    Cancel,
    /// HTTPS /unpair.
    Unpair,
}

/// Run one action; the reply's XML goes to stdout.
pub async fn run(cli: Cli) -> Result<()> {
    let Cli { host, http_port, client_dir: dir, action } = cli;
    let d = dir.clone();
    let identity = tokio::task::spawn_blocking(move || ClientIdentity::load_or_create(&d))
        .await
        .map_err(|e| Error::with_source(ErrorKind::Io, "client identity task", e))??;
    let http = SocketAddr::new(host, http_port);
    let mut c = GameStreamClient::new(http, http, Arc::new(identity));
    c.timeout = Duration::from_secs(180);
    let info = c.http_get(&c.url("/serverinfo", &[])).await?;
    let https_port = info.field("HttpsPort").and_then(|p| p.parse::<u16>().ok()).unwrap_or(47984);
    c.https = SocketAddr::new(host, https_port);
    let pinned = dir.join("server_cert.pem");
    if let Ok(pem) = std::fs::read_to_string(&pinned) {
        c.server_cert = CertInfo::from_pem(&pem).ok();
    }
    let reply = match action {
        ClientAction::Pair { pin } => {
            println!("pairing with {http} (enter PIN {pin} on the host if it asks)...");
            let outcome = c.pair(&pin).await?;
            if outcome == PairOutcome::Paired
                && let Some(cert) = &c.server_cert
            {
                crate::identity::write_file(&pinned, cert.pem.as_bytes(), 0o644)?;
            }
            println!("{outcome:?}");
            return if outcome == PairOutcome::Paired {
                Ok(())
            } else {
                Err(Error::new(ErrorKind::Pairing, format!("{outcome:?}")))
            };
        }
        ClientAction::Serverinfo => match c.https_get(&c.url("/serverinfo", &[])).await {
            Ok(r) if r.xml_status() == Some(200) => r,
            _ => info,
        },
        ClientAction::Applist => c.https_get(&c.url("/applist", &[])).await?,
        ClientAction::Launch { app, mode } => c.launch(&app.to_string(), &mode).await?.reply,
        ClientAction::Cancel => c.https_get(&c.url("/cancel", &[])).await?,
        ClientAction::Unpair => c.https_get(&c.url("/unpair", &[])).await?,
    };
    println!("{}", reply.text());
    match reply.xml_status() {
        Some(200) => Ok(()),
        s => Err(Error::new(ErrorKind::Protocol, format!("the host answered status_code {s:?}"))),
    }
}
