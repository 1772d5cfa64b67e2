//! Handshake storms, /health under a storm, and slowloris.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::report::{self, Health, Recorder, Slowloris, Storm};
use super::{LoadArgs, Target};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::gamestream::{GameStreamClient, PairOutcome};
use crate::http::{connect_from, exchange, plain_request};
use crate::identity::ClientIdentity;

/// One request may take this long before it counts as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one loopback source address holds, below the host's per-IP cap (64).
const PER_SOURCE: usize = 32;
/// Idle connections at most: their sources (127.0.0.2 on) stay inside 127.0.0.0/24.
const MAX_IDLE: usize = 200 * PER_SOURCE;

/// A client identity, paired with the target when it is a wolf-rs host we can pair with, and TLS
/// settings that present it and never resume: every connection is a full handshake.
pub async fn storm_identity(target: &Target) -> Result<(Arc<ClientIdentity>, Arc<ClientConfig>)> {
    let identity = Arc::new(generate_identity().await?);
    if let Some(http) = target.http {
        let mut c = GameStreamClient::new(http, target.https, identity.clone());
        c.device_name = "loadtest-storm".into();
        let outcome = c.pair(&target.pin).await?;
        if outcome != PairOutcome::Paired {
            return Err(Error::new(ErrorKind::Pairing, format!("pairing the storm client: {outcome:?}")));
        }
    }
    Ok((identity.clone(), full_handshake_config(&identity)?))
}

pub async fn generate_identity() -> Result<ClientIdentity> {
    tokio::task::spawn_blocking(ClientIdentity::generate)
        .await
        .map_err(|e| Error::with_source(ErrorKind::Identity, "client identity task", e))?
}

pub fn full_handshake_config(identity: &ClientIdentity) -> Result<Arc<ClientConfig>> {
    let mut config = (*crate::tls::tls_config(Some(identity), None)?).clone();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

#[derive(Debug)]
enum Failure {
    Connect,
    Tls,
    Http,
    Timeout,
    Status(u16),
    XmlStatus(u16),
}

impl Failure {
    fn kind(&self) -> String {
        match self {
            Failure::Connect => "connect".into(),
            Failure::Tls => "tls".into(),
            Failure::Http => "http".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Status(s) => format!("status_{s}"),
            Failure::XmlStatus(s) => format!("xml_status_{s}"),
        }
    }
}

/// TCP connect, full TLS handshake, GET `path`: (handshake time, whole time, TLS parameters).
async fn one_request(
    addr: SocketAddr,
    local: Option<IpAddr>,
    tls: Arc<ClientConfig>,
    path: &str,
) -> std::result::Result<(Duration, Duration, String), Failure> {
    let started = Instant::now();
    let work = async {
        let tcp = connect_from(local, addr).await.map_err(|_| Failure::Connect)?;
        let name = ServerName::try_from("wolf-rs").map_err(|_| Failure::Tls)?;
        let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|_| Failure::Tls)?;
        let handshake = started.elapsed();
        let (_, conn) = stream.get_ref();
        let params = format!(
            "{} {} {}",
            conn.protocol_version().map_or("?".into(), |v| format!("{v:?}")),
            conn.negotiated_cipher_suite().map_or("?".into(), |s| format!("{:?}", s.suite())),
            conn.negotiated_key_exchange_group().map_or("?".into(), |g| format!("{:?}", g.name()))
        );
        let reply = exchange(stream, Method::GET, path, None).await.map_err(|_| Failure::Http)?;
        if reply.status != 200 {
            return Err(Failure::Status(reply.status));
        }
        if let Some(s) = reply.xml_status()
            && s != 200
        {
            return Err(Failure::XmlStatus(s));
        }
        Ok((handshake, started.elapsed(), params))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work).await.map_err(|_| Failure::Timeout)?
}

/// `clients` workers doing [`one_request`] back to back until `duration` or `max_requests`.
pub async fn storm(
    addr: SocketAddr,
    local: Option<IpAddr>,
    tls: Arc<ClientConfig>,
    path: &str,
    clients: usize,
    duration: Duration,
    max_requests: u64,
) -> Storm {
    let started = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..clients.max(1) {
        let (tls, issued, path) = (tls.clone(), issued.clone(), path.to_owned());
        workers.push(tokio::spawn(async move {
            let (mut hs, mut req) = (Recorder::new(), Recorder::new());
            let mut failed: BTreeMap<String, u64> = BTreeMap::new();
            let mut params = String::new();
            while started.elapsed() < duration && issued.fetch_add(1, Ordering::Relaxed) < max_requests {
                match one_request(addr, local, tls.clone(), &path).await {
                    Ok((h, r, p)) => {
                        hs.record(h);
                        req.record(r);
                        if params.is_empty() {
                            params = p;
                        }
                    }
                    Err(f) => {
                        *failed.entry(f.kind()).or_default() += 1;
                        // A refusing target must not turn this into a busy loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (hs, req, failed, params)
        }));
    }
    let (mut hs, mut req) = (Recorder::new(), Recorder::new());
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let mut tls_params = String::new();
    for w in workers {
        match w.await {
            Ok((h, r, f, p)) => {
                hs.merge(&h);
                req.merge(&r);
                for (k, n) in f {
                    *failed.entry(k).or_default() += n;
                }
                if tls_params.is_empty() {
                    tls_params = p;
                }
            }
            Err(_) => *failed.entry("worker_panicked".into()).or_default() += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let ok = req.percentiles().samples;
    Storm {
        clients,
        seconds,
        ok,
        success_rate: report::rate(ok, &failed),
        rate_per_s: if seconds > 0.0 { ok as f64 / seconds } else { 0.0 },
        failed,
        handshake: hs.percentiles(),
        request: req.percentiles(),
        tls: tls_params,
    }
}

/// GET /health every 100 ms until `until` or `limit` requests: latencies, statuses, misses.
async fn poll_health(health: SocketAddr, until: Instant, limit: u32) -> (Recorder, BTreeMap<String, u64>, u64) {
    let (mut lat, mut statuses, mut missed) = (Recorder::new(), BTreeMap::new(), 0u64);
    for _ in 0..limit {
        if Instant::now() >= until {
            break;
        }
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(2), plain_request(health, Method::GET, "/health", None)).await;
        match r {
            Ok(Ok(reply)) => {
                lat.record(t.elapsed());
                let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
                *statuses.entry(v["status"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
            }
            _ => missed += 1,
        }
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(t.elapsed())).await;
    }
    (lat, statuses, missed)
}

/// The handshake storm; with a health port, /health latency idle (2 s) and during the storm.
pub async fn handshake_with_health(target: &Target, args: &LoadArgs) -> Result<(Storm, Option<Health>)> {
    let (_identity, tls) = storm_identity(target).await?;
    let Some(health) = target.health else {
        let s = storm(target.https, None, tls, &args.path, args.clients, args.duration(), args.max_requests).await;
        return Ok((s, None));
    };
    let (idle, _, idle_missed) = poll_health(health, Instant::now() + Duration::from_secs(2), 20).await;
    let until = Instant::now() + args.duration();
    let poller = tokio::spawn(poll_health(health, until, 100_000));
    let s = storm(target.https, None, tls, &args.path, args.clients, args.duration(), args.max_requests).await;
    let (during, statuses, missed) =
        poller.await.map_err(|e| Error::with_source(ErrorKind::Protocol, "health poller", e))?;
    Ok((
        s,
        Some(Health {
            idle: idle.percentiles(),
            storm: during.percentiles(),
            unanswered: idle_missed + missed,
            statuses,
        }),
    ))
}

/// The first half of a real ClientHello: a client that stalls mid-handshake.
fn half_client_hello(tls: Arc<ClientConfig>) -> Result<Vec<u8>> {
    let name = ServerName::try_from("wolf-rs").or_err(ErrorKind::Tls, || "server name")?;
    let mut conn = rustls::ClientConnection::new(tls, name).or_err(ErrorKind::Tls, || "ClientHello")?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).or_err(ErrorKind::Tls, || "ClientHello")?;
    hello.truncate(hello.len() / 2);
    Ok(hello)
}

/// `idle` connections that send nothing or half a ClientHello, reopened when the host closes
/// them, from 127.0.0.2 on (PER_SOURCE each), while `clients` real ones storm from 127.0.0.1.
pub async fn slowloris(target: &Target, args: &LoadArgs) -> Result<Slowloris> {
    let (_identity, tls) = storm_identity(target).await?;
    let hello = Arc::new(half_client_hello(tls.clone())?);
    let duration = args.duration();
    // Idle connections first, so the real clients meet them all.
    let settle = Duration::from_millis(500);
    let until = Instant::now() + settle + duration;
    let (opened, closed, refused) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Each idle slot reopens at most this often: bounded in count as well as time.
    let max_opens_per_slot = 1 + (duration.as_secs() as usize + 1) * 10;
    let idle = args.idle.min(MAX_IDLE);
    let mut idlers = Vec::new();
    for i in 0..idle {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8));
        let (hello, opened, closed, refused) = (hello.clone(), opened.clone(), closed.clone(), refused.clone());
        let addr = target.https;
        idlers.push(tokio::spawn(async move {
            let mut lifetimes = Recorder::new();
            for _ in 0..max_opens_per_slot {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let Ok(Ok(mut tcp)) = tokio::time::timeout(left, connect_from(Some(source), addr)).await else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                if i % 2 == 1 {
                    let _ = tcp.write_all(&hello).await;
                }
                let mut buf = [0u8; 512];
                // Wait for the host to close (read 0 or an error), or for the end.
                let closed_by_host = tokio::time::timeout(left, async {
                    loop {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                })
                .await
                .is_ok();
                if closed_by_host {
                    closed.fetch_add(1, Ordering::Relaxed);
                    lifetimes.record(t.elapsed());
                }
            }
            lifetimes
        }));
    }
    tokio::time::sleep(settle).await;
    let real = storm(target.https, None, tls, &args.path, args.clients, duration, args.max_requests).await;
    let mut lifetimes = Recorder::new();
    for h in idlers {
        if let Ok(l) = h.await {
            lifetimes.merge(&l);
        }
    }
    Ok(Slowloris {
        idle_connections: idle,
        idle_sources: idle.div_ceil(PER_SOURCE),
        opened: opened.load(Ordering::Relaxed),
        closed_by_host: closed.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        idle_lifetime: lifetimes.percentiles(),
        real,
    })
}
