//! Session starts and streams, by paired clients.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::report::{self, Launch, Recorder, Stream, StreamClient};
use super::{LoadArgs, Target, buckets, scalar, scrape};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::gamestream::{GameStreamClient, Launched, PairOutcome};
use crate::rtsp::{RtspReply, RtspSession};
use crate::video::{SS_ENC_CONTROL_V2, SS_ENC_VIDEO, VideoOpener, announce_sdp};

/// Pairings in flight at once: the host keeps at most 4 pending per address.
const PAIR_CONCURRENCY: usize = 3;
/// How long a started stream may take to deliver its first packet.
const FIRST_PACKET: Duration = Duration::from_secs(30);

/// `n` new clients (own key each, own uniqueid, from `source(i)`), paired with the target's PIN.
async fn paired_clients(
    target: &Target,
    n: usize,
    source: impl Fn(usize) -> Option<IpAddr>,
) -> Result<Vec<GameStreamClient>> {
    let http = target.need_http("pairing")?;
    let gate = Arc::new(tokio::sync::Semaphore::new(PAIR_CONCURRENCY));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (gate, pin, https, local) = (gate.clone(), target.pin.clone(), target.https, source(i));
        tasks.push(tokio::spawn(async move {
            let identity = Arc::new(super::tls::generate_identity().await?);
            let _permit =
                gate.acquire_owned().await.map_err(|_| Error::new(ErrorKind::Pairing, "pairing gate closed"))?;
            let mut c = GameStreamClient::new(http, https, identity);
            c.uniqueid = format!("LOADTEST{i:08X}");
            c.device_name = format!("loadtest-{i}");
            c.local_ip = local;
            match c.pair(&pin).await? {
                PairOutcome::Paired => Ok(c),
                o => Err(Error::new(ErrorKind::Pairing, format!("client {i} did not pair: {o:?}"))),
            }
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.map_err(|e| Error::with_source(ErrorKind::Pairing, "pairing task", e))??);
    }
    Ok(out)
}

/// The RTSP address from a successful launch reply.
/// The launch's RTSP endpoint, or why there is none (as the report counts it).
fn launched_rtsp(l: &Launched) -> std::result::Result<RtspSession, String> {
    match l.reply.xml_status() {
        Some(200) => {}
        s => return Err(format!("xml_status_{}", s.unwrap_or(l.reply.status))),
    }
    l.rtsp().map_err(|_| "no_session_url".to_owned())
}

/// /cancel for each client; how many failed.
async fn cancel_all(clients: &[GameStreamClient]) -> u64 {
    let mut failed = 0;
    for c in clients {
        match c.https_get(&c.url("/cancel", &[])).await {
            Ok(r) if r.xml_status() == Some(200) => {}
            _ => failed += 1,
        }
    }
    failed
}

/// K paired clients launch at the same instant.
pub async fn launch(target: &Target, args: &LoadArgs) -> Result<Launch> {
    let k = args.launches.clamp(1, 1000);
    let clients = Arc::new(paired_clients(target, k, |_| None).await?);
    let barrier = Arc::new(tokio::sync::Barrier::new(k));
    let mode = args.mode.clone();
    let mut tasks = Vec::new();
    for i in 0..k {
        let (clients, barrier, mode) = (clients.clone(), barrier.clone(), mode.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let t = Instant::now();
            let r = match clients[i].launch("1", &mode).await {
                Ok(launched) => launched_rtsp(&launched).map(|_| ()),
                Err(e) => Err(format!("error_{}", e.kind.as_str())),
            };
            (t.elapsed(), r)
        }));
    }
    let (mut latency, mut ok, mut failed) = (Recorder::new(), 0u64, BTreeMap::<String, u64>::new());
    for t in tasks {
        match t.await {
            Ok((d, Ok(()))) => {
                latency.record(d);
                ok += 1;
            }
            Ok((_, Err(kind))) => *failed.entry(kind).or_default() += 1,
            Err(_) => *failed.entry("task_panicked".into()).or_default() += 1,
        }
    }
    let cancel_failed = cancel_all(&clients).await;
    Ok(Launch {
        launches: k,
        ok,
        success_rate: report::rate(ok, &failed),
        failed,
        latency: latency.percentiles(),
        cancel_failed,
    })
}

fn header_port(r: &RtspReply, what: &str) -> Result<u16> {
    r.header("Transport")
        .and_then(|t| t.trim_start_matches("server_port=").parse().ok())
        .ok_or_else(|| Error::new(ErrorKind::Protocol, format!("RTSP SETUP {what}: no server_port")))
}

/// Launch and RTSP through PLAY from the client's address: (video, audio, ping payload, what opens
/// the video datagrams).
async fn start_stream(c: &GameStreamClient, args: &LoadArgs) -> Result<(SocketAddr, SocketAddr, Vec<u8>, VideoOpener)> {
    let mut dims = args.mode.split('x').map(|v| v.parse::<u32>().ok());
    let (Some(Some(w)), Some(Some(h)), Some(Some(fps))) = (dims.next(), dims.next(), dims.next()) else {
        return Err(Error::new(ErrorKind::Config, format!("--mode {:?}: expected WIDTHxHEIGHTxFPS", args.mode)));
    };
    let launched = c.launch(&args.app.to_string(), &args.mode).await?;
    let mut rtsp = launched_rtsp(&launched).map_err(|e| Error::new(ErrorKind::Protocol, format!("launch: {e}")))?;
    rtsp.local = c.local_ip;
    let ok = |r: &RtspReply, what: &str| {
        if r.code == 200 { Ok(()) } else { Err(Error::new(ErrorKind::Protocol, format!("RTSP {what}: {}", r.code))) }
    };
    let d = rtsp.request("DESCRIBE", "/", 1, &[], "").await?;
    ok(&d, "DESCRIBE")?;
    let a = rtsp.request("SETUP", "streamid=audio/0/0", 2, &[], "").await?;
    ok(&a, "SETUP audio")?;
    let session = a.header("Session").and_then(|s| s.split(';').next()).unwrap_or("").to_owned();
    let ping = a.header("X-SS-Ping-Payload").unwrap_or("").as_bytes().to_vec();
    let audio = header_port(&a, "audio")?;
    let sh = [("Session", session.as_str())];
    let v = rtsp.request("SETUP", "streamid=video/0/0", 3, &sh, "").await?;
    ok(&v, "SETUP video")?;
    let video = header_port(&v, "video")?;
    let ctl = rtsp.request("SETUP", "streamid=control/13/0", 4, &sh, "").await?;
    ok(&ctl, "SETUP control")?;
    // Encrypted control always, as Moonlight; sealed video when asked for.
    let encryption = SS_ENC_CONTROL_V2 | if args.encrypt_video { SS_ENC_VIDEO } else { 0 };
    let opener = VideoOpener::new(encryption, &launched.rikey)?;
    let sdp = announce_sdp(w, h, fps, args.bitrate_kbps, encryption);
    ok(&rtsp.request("ANNOUNCE", "streamid=control/13/0", 5, &sh, &sdp).await?, "ANNOUNCE")?;
    ok(&rtsp.request("PLAY", "/", 6, &sh, "").await?, "PLAY")?;
    Ok((SocketAddr::new(rtsp.addr.ip(), video), SocketAddr::new(rtsp.addr.ip(), audio), ping, opener))
}

/// What one receiving client counts while `measuring` is set.
#[derive(Default)]
struct Counts {
    first: AtomicBool,
    packets: AtomicU64,
    bytes: AtomicU64,
    frames: AtomicU64,
}

/// Receive on one port from `local`, pinging `to` every 500 ms as Moonlight does, until `stop`.
/// Video (`video` is what opens its datagrams) is counted; audio only kept flowing.
async fn receive(
    local: IpAddr,
    to: SocketAddr,
    ping: Vec<u8>,
    video: Option<VideoOpener>,
    counts: Arc<Counts>,
    measuring: Arc<AtomicBool>,
    stop: CancellationToken,
) -> Result<()> {
    let sock = UdpSocket::bind((local, 0)).await.or_err(ErrorKind::Bind, || format!("UDP on {local}"))?;
    let mut seq = 0u32;
    let mut buf = vec![0u8; 4096];
    let mut last_frame = None;
    let mut last_ping: Option<Instant> = None;
    while !stop.is_cancelled() {
        if last_ping.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
            let mut p = ping.clone();
            p.extend_from_slice(&seq.to_be_bytes());
            seq += 1;
            let _ = sock.send_to(&p, to).await;
            last_ping = Some(Instant::now());
        }
        let got = tokio::select! {
            _ = stop.cancelled() => break,
            r = tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)) => r,
        };
        let Ok(Ok((n, _))) = got else { continue };
        let Some(opener) = &video else { continue };
        counts.first.store(true, Ordering::Relaxed);
        if measuring.load(Ordering::Relaxed) {
            counts.packets.fetch_add(1, Ordering::Relaxed);
            counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
            // Opened before depacketizing, as the client does; one that does not open is not counted.
            if let Ok(plain) = opener.open(&buf[..n])
                && let Ok(info) = wolf_protocol::video::parse_packet(&plain)
                && last_frame != Some(info.frame_index)
            {
                last_frame = Some(info.frame_index);
                counts.frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// CPU seconds of `pid` and every process below it (a desktop session's X server, display capture
/// and app are the host's children), from /proc.
fn tree_cpu_seconds(pid: i32) -> Option<f64> {
    let all: Vec<_> = procfs::process::all_processes().ok()?.filter_map(|p| p.ok()?.stat().ok()).collect();
    let mut tree = vec![pid];
    let mut ticks = 0u64;
    let mut i = 0;
    while let Some(&p) = tree.get(i) {
        for s in &all {
            if s.pid == p {
                ticks += s.utime + s.stime;
            }
            if s.ppid == p {
                tree.push(s.pid);
            }
        }
        i += 1;
    }
    (tree.len() > 1 || all.iter().any(|s| s.pid == pid)).then(|| ticks as f64 / procfs::ticks_per_second() as f64)
}

/// Host CPU seconds (its processes below it included), from /proc when we know its pid (clock
/// ticks), else from /metrics (whole seconds, the host process alone); with a scrape of /metrics
/// taken at the same moment.
async fn cpu_seconds(health: SocketAddr, pid: Option<i32>) -> Result<(f64, Instant, prometheus_parse::Scrape)> {
    let s = scrape(health).await?;
    let from_proc = pid.and_then(tree_cpu_seconds);
    let cpu = from_proc.or_else(|| scalar(&s, "process_cpu_seconds_total", None)).ok_or_else(|| {
        Error::new(ErrorKind::Protocol, "no CPU time: no /proc entry and no process_cpu_seconds_total")
    })?;
    Ok((cpu, Instant::now(), s))
}

fn cpu_percent(a: (f64, Instant), b: (f64, Instant)) -> f64 {
    let secs = b.1.duration_since(a.1).as_secs_f64();
    if secs > 0.0 { (b.0 - a.0) / secs * 100.0 } else { 0.0 }
}

/// S concurrent streams of `--app`, each client on its own loopback address (the host knows
/// RTSP clients by address): host latency per frame and host CPU per stream.
pub async fn stream(target: &Target, args: &LoadArgs) -> Result<Stream> {
    let health = target.health.ok_or_else(|| {
        Error::new(ErrorKind::Config, "stream reads the host's /metrics: give --health-port with --target")
    })?;
    let s = args.streams.clamp(1, 200);
    let (c0, t0, _) = cpu_seconds(health, target.pid).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c1, t1, _) = cpu_seconds(health, target.pid).await?;
    let idle_cpu_percent = cpu_percent((c0, t0), (c1, t1));

    let source = |i: usize| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + i as u8)));
    let clients = paired_clients(target, s, source).await?;
    let stop = CancellationToken::new();
    let measuring = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    let mut counts = Vec::new();
    let result = async {
        for c in &clients {
            let (video, audio, ping, opener) = start_stream(c, args).await?;
            let local = c.local_ip.unwrap_or(Ipv4Addr::LOCALHOST.into());
            let n = Arc::new(Counts::default());
            counts.push(n.clone());
            for (to, opener) in [(video, Some(opener)), (audio, None)] {
                let (n, m, st, p) = (n.clone(), measuring.clone(), stop.child_token(), ping.clone());
                receivers.push(tokio::spawn(receive(local, to, p, opener, n, m, st)));
            }
        }
        let waited = Instant::now();
        while counts.iter().any(|n| !n.first.load(Ordering::Relaxed)) {
            if waited.elapsed() > FIRST_PACKET {
                return Err(Error::new(ErrorKind::Protocol, format!("a stream sent no video within {FIRST_PACKET:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Past the encoder's start (first IDR, queues filling).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (ca, ta, before) = cpu_seconds(health, target.pid).await?;
        measuring.store(true, Ordering::Relaxed);
        tokio::time::sleep(args.duration()).await;
        measuring.store(false, Ordering::Relaxed);
        let (cb, tb, after) = cpu_seconds(health, target.pid).await?;
        let secs = tb.duration_since(ta).as_secs_f64();
        let name = "wolf_video_frame_send_seconds";
        Ok(Stream {
            streams: s,
            app: args.app,
            mode: args.mode.clone(),
            bitrate_kbps: args.bitrate_kbps,
            encrypted_video: args.encrypt_video,
            seconds: secs,
            frame_send: report::bucket_percentiles(&buckets(&before, name), &buckets(&after, name)),
            cpu_percent_per_stream: cpu_percent((ca, ta), (cb, tb)) / s as f64,
            idle_cpu_percent,
            clients: counts
                .iter()
                .map(|n| {
                    let (packets, frames, bytes) = (
                        n.packets.load(Ordering::Relaxed),
                        n.frames.load(Ordering::Relaxed),
                        n.bytes.load(Ordering::Relaxed),
                    );
                    StreamClient {
                        packets,
                        frames,
                        fps: frames as f64 / secs.max(1e-9),
                        mbps: bytes as f64 * 8.0 / secs.max(1e-9) / 1e6,
                    }
                })
                .collect(),
        })
    }
    .await;
    stop.cancel();
    for r in receivers {
        let _ = r.await;
    }
    let cancel_failed = cancel_all(&clients).await;
    if cancel_failed > 0 {
        tracing::warn!(cancel_failed, "some stream sessions did not cancel");
    }
    result
}
