//! `wolf-load <scenario>`: bounded load on loopback against a host of its own (a child
//! `wolf-rs serve` in a temp state dir) or a running TLS endpoint (`--target`). Every loop stops
//! by itself, at a count and at a time, whichever comes first.

mod report;
mod session;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hyper::Method;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::host::HostProcess;
use crate::http::plain_request;
pub use report::{Percentiles, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Concurrent mutual-TLS clients: full handshake + GET, as fast as they can.
    Handshake,
    /// Idle connections (no bytes, or half a ClientHello) next to real clients.
    Slowloris,
    /// /health latency, idle and under a handshake storm.
    Health,
    /// Simultaneous /launch by paired clients.
    Launch,
    /// Concurrent test-pattern streams: host latency per frame, CPU per stream.
    Stream,
    /// All of the above, one after the other, against one host.
    All,
}

/// Bounded load on loopback (handshake storm, slowloris, /health under load, launches, streams)
/// against a host of its own or --target; see BENCHMARKS.md.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "wolf-load", version)]
pub struct LoadArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// The host binary our own host runs (without --target).
    #[arg(long, env = "WOLF_RS_BIN", default_value = "wolf-rs")]
    pub host_bin: std::path::PathBuf,
    /// A running TLS endpoint on loopback, `https://127.0.0.1:PORT` (a wolf-rs HTTPS port or any
    /// TLS server). Default: start a wolf-rs host of our own.
    #[arg(long)]
    pub target: Option<String>,
    /// What to GET after each handshake.
    #[arg(long, default_value = "/serverinfo")]
    pub path: String,
    /// With --target: the host's HTTP port (pairing; needed by launch and stream).
    #[arg(long)]
    pub http_port: Option<u16>,
    /// With --target: the host's health port (/health, /metrics).
    #[arg(long)]
    pub health_port: Option<u16>,
    /// With --target: the host's process id, for CPU per stream from /proc (else the whole seconds
    /// of process_cpu_seconds_total).
    #[arg(long)]
    pub host_pid: Option<i32>,
    /// The host's fixed pairing PIN (our own host is given this one).
    #[arg(long, default_value = "4321")]
    pub pin: String,
    /// Concurrent real clients (handshake, slowloris, health).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds each timed phase runs.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Requests a storm makes at most, all clients together.
    #[arg(long, default_value_t = 200_000)]
    pub max_requests: u64,
    /// Idle connections held open by the slowloris scenario.
    #[arg(long, default_value_t = 200)]
    pub idle: usize,
    /// Simultaneous launches (one paired client each).
    #[arg(long, default_value_t = 16)]
    pub launches: usize,
    /// Concurrent streams.
    #[arg(long, default_value_t = 2)]
    pub streams: usize,
    /// The app the stream clients launch (1: the test pattern; 2: the default config's Desktop).
    #[arg(long, default_value_t = 1)]
    pub app: u32,
    /// Stream mode, WIDTHxHEIGHTxFPS.
    #[arg(long, default_value = "1280x720x60")]
    pub mode: String,
    /// Stream bitrate the clients ask for.
    #[arg(long, default_value_t = 8000)]
    pub bitrate_kbps: u32,
    /// The stream clients enable video encryption (SS_ENC_VIDEO) and open every packet.
    #[arg(long)]
    pub encrypt_video: bool,
    /// Print the report as JSON (for scripts/bench.sh) instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds.clamp(0.1, 600.0))
    }
}

/// Where the load goes.
pub struct Target {
    pub label: String,
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
    pub health: Option<SocketAddr>,
    pub pin: String,
    pub pid: Option<i32>,
    /// Our own host, killed when this is dropped.
    own: Option<OwnHost>,
}

impl Target {
    /// `Some` when the target is a wolf-rs host whose HTTP port we know.
    fn need_http(&self, scenario: &str) -> Result<SocketAddr> {
        self.http.ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("{scenario} needs the host's HTTP port: give --http-port with --target"),
            )
        })
    }
}

/// Our own host and the temp state folder it runs in (removed after the process is killed).
struct OwnHost {
    process: HostProcess,
    _dir: tempfile::TempDir,
}

impl Drop for OwnHost {
    /// Our host stops its sessions' apps, displays and audio server before its state dir goes
    /// (a SIGKILL would leave them running, owned by a folder that no longer exists).
    fn drop(&mut self) {
        self.process.terminate(Duration::from_secs(15));
    }
}

/// Three distinct free loopback ports, held open together while picked so none comes twice.
fn free_ports() -> Result<(u16, u16, u16)> {
    let bind =
        || std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).or_err(ErrorKind::Bind, || "finding a free port");
    let held = [bind()?, bind()?, bind()?];
    let port =
        |l: &std::net::TcpListener| l.local_addr().map(|a| a.port()).or_err(ErrorKind::Bind, || "finding a free port");
    Ok((port(&held[0])?, port(&held[1])?, port(&held[2])?))
}

/// Start `wolf-rs serve` (`--host-bin`) with a fixed PIN on free loopback ports, and wait
/// (bounded) until it is ready.
async fn spawn_host(bin: &std::path::Path, pin: &str) -> Result<Target> {
    let (http, https, health) = free_ports()?;
    // On disk, not tmpfs: launches fsync the sessions file, and that cost is part of the result.
    let dir = tempfile::Builder::new()
        .prefix("wolf-loadtest-")
        .tempdir_in(std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir()))
        .or_err(ErrorKind::Io, || "creating the host's state directory")?;
    // This tool never links the host, so its few settings are written here rather than serialised.
    let config = format!(
        "hostname = \"wolf-loadtest\"\nbind_address = \"127.0.0.1\"\n\n[network]\nlocal_ip = \"127.0.0.1\"\n\
         mac = \"02:00:00:aa:bb:cc\"\n\n[ports]\nhttp = {http}\nhttps = {https}\nrtsp = 0\nvideo = 0\naudio = 0\n\
         control = 0\n\n[mdns]\nenabled = false\n\n[health]\nport = {health}\n\n[pairing]\npin = [\"{pin}\"]\n\n\
         [sessions]\nstop_apps_on_shutdown = true\n"
    );
    let cfg_path = dir.path().join("config.toml");
    std::fs::write(&cfg_path, config).or_err(ErrorKind::Io, || format!("writing {}", cfg_path.display()))?;
    let level = std::env::var("WOLF_LOADTEST_HOST_LOG").unwrap_or_else(|_| "warn".into());
    let mut process =
        HostProcess::spawn(bin, dir.path(), &[("WOLF_MDNS", "false"), ("WOLF_LOG_LEVEL", level.as_str())])?;
    let health_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, health));
    process.wait_ready(health_addr, Duration::from_secs(60)).await?;
    let pid = process.pid();
    Ok(Target {
        label: format!("wolf-rs {} (own host, pid {pid})", env!("CARGO_PKG_VERSION")),
        https: (Ipv4Addr::LOCALHOST, https).into(),
        http: Some((Ipv4Addr::LOCALHOST, http).into()),
        health: Some(health_addr),
        pin: pin.to_owned(),
        pid: i32::try_from(pid).ok(),
        own: Some(OwnHost { process, _dir: dir }),
    })
}

/// `https://HOST:PORT[/...]` on loopback → the address. Anything off loopback is refused: this tool
/// must never load someone else's machine.
fn parse_target(url: &str) -> Result<SocketAddr> {
    let bad = |why: &str| Error::new(ErrorKind::Config, format!("--target {url:?}: {why}"));
    let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("expected https://127.0.0.1:PORT"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host == "localhost" {
        Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse().map_err(|_| bad("host is not an IP"))?
    };
    if !ip.is_loopback() {
        return Err(bad("only loopback targets are allowed"));
    }
    Ok(SocketAddr::new(ip, uri.port_u16().unwrap_or(443)))
}

async fn target(args: &LoadArgs) -> Result<Target> {
    match &args.target {
        None => spawn_host(&args.host_bin, &args.pin).await,
        Some(url) => {
            let https = parse_target(url)?;
            Ok(Target {
                label: url.clone(),
                https,
                http: args.http_port.map(|p| SocketAddr::new(https.ip(), p)),
                health: args.health_port.map(|p| SocketAddr::new(https.ip(), p)),
                pin: args.pin.clone(),
                pid: args.host_pid,
                own: None,
            })
        }
    }
}

/// Run the scenario; the report, whatever the numbers say. Errors are set-up failures only.
pub async fn run(args: &LoadArgs) -> Result<Report> {
    let mut target = target(args).await?;
    let mut report = Report::new(&target.label);
    let s = args.scenario;
    let all = s == Scenario::All;
    if s == Scenario::Handshake || s == Scenario::Health || all {
        let (storm, health) = tls::handshake_with_health(&target, args).await?;
        report.handshake = Some(storm);
        report.health = health;
    }
    if s == Scenario::Slowloris || all {
        report.slowloris = Some(tls::slowloris(&target, args).await?);
    }
    if s == Scenario::Launch || all {
        report.launch = Some(session::launch(&target, args).await?);
    }
    if s == Scenario::Stream || all {
        report.stream = Some(session::stream(&target, args).await?);
    }
    if let Some(own) = &mut target.own
        && let Some(status) = own.process.exited()
    {
        return Err(Error::new(
            ErrorKind::Io,
            format!("the host exited during the run ({status}):\n{}", own.process.log_tail(20)),
        ));
    }
    report.finish();
    Ok(report)
}

/// `wolf-load ...`: run, print; exit code 0 when it ran.
pub async fn cli(args: LoadArgs) -> Result<()> {
    let report = run(&args).await?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).or_err(ErrorKind::Protocol, || "encoding the report")?;
        println!("{text}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// One scrape of the host's /metrics.
async fn scrape(health: SocketAddr) -> Result<prometheus_parse::Scrape> {
    let r = tokio::time::timeout(Duration::from_secs(5), plain_request(health, Method::GET, "/metrics", None))
        .await
        .map_err(|_| Error::new(ErrorKind::Protocol, "/metrics: no answer within 5 s"))??;
    let text = r.text();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .or_err(ErrorKind::Protocol, || "parsing /metrics")
}

/// A scalar metric (counter, gauge, untyped) without labels, or with `label` = `value`.
fn scalar(s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    s.samples.iter().find_map(|x| {
        if x.metric != name || label.is_some_and(|(k, v)| x.labels.get(k) != Some(v)) {
            return None;
        }
        match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        }
    })
}

/// A histogram's cumulative buckets: (upper bound, count).
fn buckets(s: &prometheus_parse::Scrape, name: &str) -> Vec<(f64, f64)> {
    s.samples
        .iter()
        .find_map(|x| match (&x.value, x.metric == name) {
            (prometheus_parse::Value::Histogram(h), true) => Some(h.iter().map(|b| (b.less_than, b.count)).collect()),
            _ => None,
        })
        .unwrap_or_default()
}
