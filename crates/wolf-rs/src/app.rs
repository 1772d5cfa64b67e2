//! Builds the host in order (state, identity, listeners, the host layer, API, mDNS), runs it, and drains it on
//! shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError, Env, TEMPLATE};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::gamestream::{Context, GameStreamServer, Listeners};
use crate::health::{HealthServer, HealthState};
use crate::host::pairing::PairingManager;
use crate::host::{Host, Planes, Ports};
use crate::lifecycle::{Entry, Lifecycle};
use crate::metrics::Metrics;
use crate::net::iface;
use crate::net::tls::HandshakeGate;
use crate::sessions::Sessions;
use crate::state::clients::ClientStore;
use crate::state::identity;
use crate::status::{Health, Phase};
use crate::watchdog::{CrashMarker, Heartbeats, Watchdog, WatchdogConfig, Watched as Watched_};

/// How long connection tasks get to finish after shutdown is asked for.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub config: PathBuf,
    /// The `wolf-rs` binary session processes run (`None`: this one; a test host names it).
    pub session_exe: Option<PathBuf>,
}

impl Paths {
    pub fn new(state_dir: PathBuf, config: Option<PathBuf>) -> Paths {
        let config = config.unwrap_or_else(|| state_dir.join("config.toml"));
        Paths { state_dir, config, session_exe: None }
    }

    /// Where session processes listen.
    pub fn run_dir(&self) -> PathBuf {
        self.state_dir.join("run")
    }

    pub fn clients(&self) -> PathBuf {
        self.state_dir.join("paired_clients.json")
    }

    /// Apps added through the API.
    pub fn apps(&self) -> PathBuf {
        self.state_dir.join(crate::state::apps::FILE_NAME)
    }

    pub fn crash_marker(&self) -> PathBuf {
        self.state_dir.join(crate::watchdog::MARKER_FILE)
    }
}

/// Write the template where the config should be, when it is absent (blocking).
pub fn ensure_config(path: &Path) -> Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    crate::state::atomic::write_atomic(path, TEMPLATE.as_bytes(), 0o644)?;
    tracing::info!(file = %path.display(), "wrote the default config from the template");
    Ok(true)
}

fn resolve(state_dir: &Path, file: &str, default: &str) -> PathBuf {
    if file.is_empty() { state_dir.join(default) } else { PathBuf::from(file) }
}

/// A host that is up: its ports, and the handles to stop it.
pub struct Running {
    pub http_port: u16,
    pub https_port: u16,
    pub rtsp_port: u16,
    pub health_port: u16,
    /// The API's TCP address, when `[api] tcp` is set.
    pub api_tcp: Option<std::net::SocketAddr>,
    pub host: Arc<Host>,
    /// What the GameStream handlers read (identity, encoder, config).
    pub gamestream: Arc<Context>,
    pub gate: Arc<HandshakeGate>,
    pub health: Arc<Health>,
    /// `events.log`: what this control plane and its sessions did.
    pub lifecycle: Lifecycle,
    /// Set before the shutdown of a restart in place: the drain keeps every session.
    keep_sessions: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Threads outside the runtime, stopped after the drain.
    threads: (HealthServer, Watchdog),
}

impl Running {
    /// Stop for a restart in place: the drain stops the servers but keeps every session (and
    /// lobby) running for the next control plane to adopt, whatever `stop_apps_on_shutdown` says.
    pub fn restart_in_place(&self) {
        self.keep_sessions.store(true, std::sync::atomic::Ordering::Relaxed);
        self.shutdown.cancel();
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Ask for shutdown and wait for the drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    pub async fn wait(self) {
        let _ = self.task.await;
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || drop(threads)).await;
    }
}

/// Everything up to accepting connections, step by step. Blocking steps run off the async workers.
pub async fn start(paths: Paths, env: Env) -> Result<Running> {
    let started = Instant::now();
    match crate::net::limit::raise_nofile_limit() {
        Ok(n) => tracing::debug!(limit = n, "open-file limit raised to the hard limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let (config, marker, last_exit) = blocking(read_config(paths.clone(), env)).await?;
    let lifecycle = open_lifecycle(&paths, last_exit.clone()).await;
    match start_with(paths, config, marker, last_exit, lifecycle.clone(), started).await {
        Ok(r) => Ok(r),
        Err(e) => {
            exited(&lifecycle, e.exit_code()).await;
            Err(e)
        }
    }
}

async fn start_with(
    paths: Paths,
    config: Config,
    marker: CrashMarker,
    last_exit: Option<String>,
    lifecycle: Lifecycle,
    started: Instant,
) -> Result<Running> {
    let sessions_file = resolve(&paths.state_dir, &config.sessions.file, crate::sessions::store::FILE_NAME);
    let watched = watch_start_up(&config, marker, last_exit, &sessions_file)?;
    let (steps, cfg, p, sf) = (watched.beats.clone(), config.clone(), paths.clone(), sessions_file.clone());
    let loaded = blocking(move || load_state(&p, &cfg, &sf, &steps)).await?;
    report(&config, &loaded, &watched.health);
    let config = Arc::new(config);
    let listeners = Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let ports = bound_ports(&listeners)?;
    let planes = start_planes(&paths, &config, &watched, &loaded, &shutdown, &tracker)?;
    let lobbies = adopt(&config, &paths, &watched, loaded.saved, loaded.saved_lobbies, &planes, &lifecycle).await;
    let host = Arc::new(Host {
        sessions: watched.sessions.clone(),
        apps: planes.apps.clone(),
        clients: loaded.clients,
        pairing: PairingManager::new((&config.pairing).into()),
        lobbies,
        events: planes.events.clone(),
        metrics: watched.metrics.clone(),
        ports,
        stream: config.stream.clone(),
        configured: Default::default(),
        planes: Planes {
            runners: planes.runners.clone(),
            rtsp_ports: planes.rtsp_ports.clone(),
            spawner: planes.spawner.clone(),
            planner: crate::host::plan::Planner {
                config: config.clone(),
                apps: planes.apps.clone(),
                encoder: loaded.encoder.clone(),
                runners: planes.runners.clone(),
            },
            health: watched.health.clone(),
            lifecycle: lifecycle.clone(),
        },
        shutdown: shutdown.clone(),
    });
    host.attach_adopted().await;
    let gamestream = Arc::new(Context {
        host: host.clone(),
        config: config.clone(),
        uuid: loaded.uuid,
        net: loaded.net.clone(),
        identity: loaded.identity,
        encoder: loaded.encoder,
        trusted: crate::net::limit::TrustedProxies::new(config.pairing.trusted_proxy_nets()),
        beats: watched.beats.clone(),
    });
    let server = GameStreamServer::new(gamestream.clone(), listeners)?;
    let gate = server.gate.clone();
    let api = match config.api.enabled {
        true => Some(crate::api::ApiServer::bind(&config.api, &paths.state_dir).await?),
        false => None,
    };
    let api_tcp = api.as_ref().and_then(crate::api::ApiServer::tcp_addr);
    let mdns = advertise(&config, &loaded.net, ports.http);
    let keep_sessions = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = Tasks {
        server,
        api,
        mdns,
        planes,
        health: watched.health.clone(),
        lifecycle: lifecycle.clone(),
        keep_sessions: keep_sessions.clone(),
    };
    let task = tokio::spawn(run(host.clone(), gamestream.clone(), tasks, shutdown.clone(), tracker, started));
    watched.health.set_phase(Phase::Ready);
    let ready_ms = started.elapsed().as_millis() as u64;
    tracing::info!(ready_ms, "wolf-rs ready in {ready_ms} ms");
    lifecycle.record(Entry::ControlPlaneReady);
    Ok(Running {
        http_port: ports.http,
        https_port: ports.https,
        rtsp_port: ports.rtsp,
        health_port: watched.health_server.port,
        api_tcp,
        host,
        gamestream,
        gate,
        health: watched.health,
        lifecycle,
        keep_sessions,
        shutdown,
        task,
        threads: (watched.health_server, watched.watchdog),
    })
}

/// Run blocking start-up work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::with_source(ErrorKind::Io, "start-up task failed", e))?
}

/// The state directory, the config (the template written where there is none) and the watchdog's
/// marker of the last run.
fn read_config(p: Paths, env: Env) -> impl FnOnce() -> Result<(Config, CrashMarker, Option<String>)> {
    move || {
        std::fs::create_dir_all(&p.state_dir)
            .or_err(ErrorKind::Io, || format!("creating the state directory {}", p.state_dir.display()))?;
        ensure_config(&p.config)?;
        let config = Config::load(&p.config, &env).map_err(|e| match e {
            ConfigError::Read { .. } => Error::with_source(ErrorKind::Config, "reading the config", e),
            ConfigError::Invalid { .. } => Error::new(ErrorKind::Config, e.to_string()),
        })?;
        let (marker, last_exit) = CrashMarker::open(&p.crash_marker())
            .or_err(ErrorKind::Io, || format!("opening the watchdog marker {}", p.crash_marker().display()))?;
        Ok((config, marker, last_exit))
    }
}

/// What watches the host from its first moments: metrics, heartbeats, the health model and port,
/// the watchdog, and the session table with its writer.
struct Watched {
    metrics: Arc<Metrics>,
    beats: Arc<Heartbeats>,
    health: Arc<Health>,
    sessions: Arc<Sessions>,
    health_server: HealthServer,
    watchdog: Watchdog,
}

/// Health and the watchdog come first, so a slow start-up is visible and watched.
fn watch_start_up(
    config: &Config,
    marker: CrashMarker,
    last_exit: Option<String>,
    sessions_file: &Path,
) -> Result<Watched> {
    if let Some(line) = &last_exit {
        tracing::warn!(marker = %line, "the previous run was ended by the watchdog");
    }
    let metrics = Metrics::new().map_err(|e| Error::new(ErrorKind::Config, format!("metrics registry: {e}")))?;
    metrics.last_exit_by_watchdog.set(i64::from(last_exit.is_some()));
    if let Some((restarts, pauses)) = crate::supervisor::counts_from_env() {
        metrics.control_plane_restarts.set(restarts);
        metrics.control_plane_crash_loops.set(pauses);
    }
    let beats = Heartbeats::new();
    let watchdog_cfg = WatchdogConfig::from(&config.watchdog);
    let health = Health::new(watchdog_cfg.warn_after, last_exit);
    let (store_errors, store_health) = (metrics.session_store_errors.clone(), health.clone());
    let writer = crate::sessions::store::Writer::spawn(sessions_file.to_path_buf(), move |written| match written {
        Ok(()) => store_health.set_store(None),
        Err(e) => {
            store_errors.inc();
            store_health.set_store(Some(e.to_string()));
        }
    })?;
    let sessions = Arc::new(Sessions::with_store(writer));
    let ip =
        config.bind_address.parse().map_err(|_| Error::new(ErrorKind::Config, "bind_address is not an IP address"))?;
    let health_addr = SocketAddr::new(ip, config.health.port);
    let health_server = HealthServer::start(
        health_addr,
        HealthState {
            health: health.clone(),
            metrics: metrics.clone(),
            sessions: sessions.clone(),
            beats: beats.clone(),
            runtime: tokio::runtime::Handle::current(),
            fault_injection: config.debug.fault_injection,
        },
    )
    .or_err(ErrorKind::Bind, || format!("binding the health port {health_addr}"))?;
    tracing::info!(port = health_server.port, "health port ready (/health /livez /readyz /metrics)");
    if config.debug.fault_injection {
        tracing::warn!("debug.fault_injection is on: POST /debug/hang on the health port can hang this host");
    }
    let watchdog = Watchdog::spawn(Watched_ {
        runtime: tokio::runtime::Handle::current(),
        cfg: watchdog_cfg,
        health: health.clone(),
        beats: beats.clone(),
        metrics: metrics.clone(),
        marker: Some(marker),
    })
    .or_err(ErrorKind::Io, || "starting the watchdog thread")?;
    Ok(Watched { metrics, beats, health, sessions, health_server, watchdog })
}

/// What start-up reads from disk and the machine.
struct Loaded {
    identity: Arc<crate::state::identity::Identity>,
    uuid: uuid::Uuid,
    clients: Arc<ClientStore>,
    net: iface::NetInfo,
    apps: Arc<crate::state::apps::AppCatalog>,
    encoder: crate::media::EncoderChoice,
    saved: crate::sessions::store::LoadedSessions,
    saved_lobbies: Vec<crate::lobbies::Lobby>,
}

/// Each blocking step is watched: one that hangs (a state file on a hung network mount) is named
/// by the watchdog, which exits so the supervisor restarts the host.
fn load_state(p: &Paths, config: &Config, sessions_file: &Path, beats: &Arc<Heartbeats>) -> Result<Loaded> {
    let step = |name: &str| beats.register("startup", format!("startup:{name}"));
    // Temp files of writes a crash interrupted, wherever state is written.
    let mut dirs: Vec<PathBuf> =
        [p.clients(), sessions_file.to_path_buf()].iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
    dirs.push(p.state_dir.clone());
    dirs.sort();
    dirs.dedup();
    let s = step("temp-files");
    for d in &dirs {
        crate::state::atomic::remove_stale_temps(d);
    }
    drop(s);
    let key = resolve(&p.state_dir, &config.tls.key_file, "key.pem");
    let cert = resolve(&p.state_dir, &config.tls.cert_file, "cert.pem");
    let s = step("identity");
    let identity = identity::load_or_create(&key, &cert)?.identity;
    let uuid = identity::host_uuid(&config.uuid, &p.state_dir)?;
    drop(s);
    let s = step("paired-clients");
    let clients = Arc::new(ClientStore::open(&p.clients())?);
    drop(s);
    let s = step("interfaces");
    let net = iface::detect(&config.network.local_ip, &config.network.mac);
    drop(s);
    let s = step("apps");
    let apps = Arc::new(crate::state::apps::AppCatalog::open(&p.apps(), &config.apps)?);
    drop(s);
    let s = step("encoder-probe");
    let encoder = crate::media::probe(&config.video.encoder, config.video.software_hevc)
        .map_err(|e| Error::new(ErrorKind::Config, format!("video encoder: {e}")))?;
    drop(s);
    let s = step("sessions-file");
    let saved = crate::sessions::store::load(sessions_file)?;
    let saved_lobbies = crate::lobbies::load(&crate::lobbies::path(&p.state_dir))?;
    drop(s);
    Ok(Loaded { identity, uuid, clients, net, apps, encoder, saved, saved_lobbies })
}

/// What start-up found, in the log and the health model.
fn report(config: &Config, loaded: &Loaded, health: &Health) {
    let (net, encoder) = (&loaded.net, &loaded.encoder);
    tracing::info!(local_ip = %net.local_ip, mac = %net.mac, uuid = %loaded.uuid, clients = loaded.clients.list().len(), "host identity ready");
    tracing::info!(encoder = encoder.h264.name, hevc = encoder.hevc.is_some(), "video encoder: {}", encoder.reason);
    health.set_encoder(encoder.h264.name, &encoder.reason);
    match crate::input::gamepads_state() {
        Ok(()) => health.set_gamepads("available".to_owned()),
        Err(why) => {
            tracing::warn!(gamepads = %why, "virtual gamepads cannot be made here; keyboard and mouse still work");
            health.set_gamepads(format!("unavailable: {why}"));
        }
    }
    if config.pairing.fixed_pin().is_some() {
        tracing::warn!(
            "a fixed pairing PIN is set: anyone who can reach port {} can pair (the protocol lets a fixed PIN be recovered from one exchange)",
            config.ports.http
        );
    }
}

fn bound_ports(listeners: &Listeners) -> Result<Ports> {
    let (http, https, rtsp) = listeners.ports()?;
    Ok(Ports { http, https, rtsp })
}

/// The streaming planes, built: the runners, the session processes' spawner, the stream
/// commands' and the processes' reports' inputs, RTSP.
struct StreamPlanes {
    apps: Arc<crate::state::apps::AppCatalog>,
    runners: Arc<crate::runners::Runners>,
    events: Arc<crate::events::Events>,
    streams_tx: crate::commands::StreamCommands,
    rtsp_ports: Arc<crate::rtsp::SessionPorts>,
    spawner: Arc<crate::session_process::link::Spawner>,
    streams_rx: tokio::sync::mpsc::UnboundedReceiver<crate::commands::StreamCommand>,
    reports: tokio::sync::mpsc::UnboundedReceiver<(u32, crate::session_process::link::Event)>,
}

/// A session process that stops reporting for this long is killed (it reports twice a second).
const PROCESS_SILENT_LIMIT: Duration = Duration::from_secs(10);

fn start_planes(
    paths: &Paths,
    config: &Arc<Config>,
    w: &Watched,
    loaded: &Loaded,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<StreamPlanes> {
    let (streams_tx, streams_rx) = tokio::sync::mpsc::unbounded_channel();
    let owner =
        std::fs::canonicalize(&paths.state_dir).unwrap_or_else(|_| paths.state_dir.clone()).display().to_string();
    let runners = Arc::new(crate::runners::Runners::new(
        &paths.state_dir,
        owner.clone(),
        &config.desktop,
        Duration::from_millis(config.sessions.stop_timeout_ms),
    ));
    let rtsp_host = crate::rtsp::HostInfo {
        hevc: loaded.encoder.hevc.is_some(),
        // Control V2 (AES-GCM control messages), and sealed video for clients that enable it
        // unless encryption is off.
        encryption_supported: match config.stream.encryption {
            crate::config::Encryption::Off => wolf_protocol::rtsp::SS_ENC_CONTROL_V2,
            _ => wolf_protocol::rtsp::SS_ENC_CONTROL_V2 | wolf_protocol::rtsp::SS_ENC_VIDEO,
        },
        trusted: crate::net::limit::TrustedProxies::new(config.pairing.trusted_proxy_nets()),
        shared_fallback: config.stream.shared_rtsp_fallback,
    };
    let bind_ip = config.bind_address.parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let rtsp_ports = crate::rtsp::SessionPorts::new(
        config.ports.rtsp_sessions,
        bind_ip,
        w.sessions.clone(),
        rtsp_host,
        streams_tx.clone(),
        shutdown.clone(),
        tracker.clone(),
    );
    let exe = match &paths.session_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe().or_err(ErrorKind::Io, || "finding this binary for the session processes")?,
    };
    let (reports_tx, reports) = tokio::sync::mpsc::unbounded_channel();
    let spawner = Arc::new(crate::session_process::link::Spawner {
        exe,
        process: runners.process.clone(),
        run_dir: paths.run_dir(),
        bind: bind_ip,
        ports: config.ports.stream_sessions,
        owner,
        events: reports_tx,
        beat_limit: PROCESS_SILENT_LIMIT,
        warn_after: Duration::from_millis(config.watchdog.warn_after_ms),
        exit_after: Duration::from_millis(config.watchdog.exit_after_ms),
    });
    Ok(StreamPlanes {
        apps: loaded.apps.clone(),
        runners,
        events: Arc::new(crate::events::Events::default()),
        streams_tx,
        rtsp_ports,
        spawner,
        streams_rx,
        reports,
    })
}

/// Adopt what a previous run left: lobbies first (their parts are no orphans to the sessions'
/// pass), then the sessions whose parts all live; the table is on disk before the host serves.
async fn adopt(
    config: &Config,
    paths: &Paths,
    w: &Watched,
    saved: crate::sessions::store::LoadedSessions,
    saved_lobbies: Vec<crate::lobbies::Lobby>,
    planes: &StreamPlanes,
    lifecycle: &Lifecycle,
) -> Arc<crate::lobbies::Lobbies> {
    if let Some(aside) = &saved.moved_aside {
        w.metrics.session_store_corrupt.inc();
        tracing::error!(moved_to = %aside.display(), "the sessions file was corrupt; starting with no sessions");
    }
    let runners = &planes.runners;
    let sweep_docker = planes.apps.list().iter().any(|a| a.runner.kind == crate::config::RunnerKind::Docker)
        || saved.records.iter().any(|r| matches!(r.runner, crate::runners::RunnerHandle::Docker { .. }));
    let limit = Duration::from_millis(config.sessions.reconcile_timeout_ms);
    let lobbies =
        tokio::time::timeout(limit, crate::lobbies::reconcile(saved_lobbies, runners)).await.unwrap_or_else(|_| {
            tracing::error!("lobby reconcile did not finish in time; starting with no lobbies");
            Vec::new()
        });
    let lobby_parts: Vec<(u32, crate::runners::Parts)> = lobbies.iter().map(|l| (l.number, l.parts())).collect();
    let reconciled = crate::sessions::reconcile::run(saved.records, &lobby_parts, runners, sweep_docker, limit).await;
    reconciled.export(&w.metrics);
    for s in &reconciled.adopted {
        lifecycle.record(Entry::SessionAdopted { session: s.id });
    }
    for id in &reconciled.lost {
        let reason = crate::commands::EndReason::ProcessLost;
        w.metrics.sessions_ended.with_label_values(&[reason.as_str()]).inc();
        lifecycle.record(Entry::SessionEnd { session: *id, reason: reason.as_str().to_owned() });
    }
    w.sessions.restore(crate::lobbies::link_adopted(reconciled.adopted, &lobbies));
    // A failed write is logged by the writer and shown in /health; the adopted sessions still run.
    let _ = w.sessions.flush().await;
    Arc::new(crate::lobbies::Lobbies::new(
        crate::lobbies::path(&paths.state_dir),
        lobbies,
        runners.clone(),
        w.sessions.clone(),
        planes.streams_tx.clone(),
        planes.events.clone(),
    ))
}

fn advertise(config: &Config, net: &iface::NetInfo, http_port: u16) -> Option<crate::mdns::Advertiser> {
    if !config.mdns.enabled {
        return None;
    }
    match crate::mdns::advertise(&config.hostname, net.local_ip.into(), http_port) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %e, "mDNS advertisement failed; clients can still add the host by address");
            None
        }
    }
}

/// What runs until shutdown.
struct Tasks {
    server: GameStreamServer,
    api: Option<crate::api::ApiServer>,
    mdns: Option<crate::mdns::Advertiser>,
    planes: StreamPlanes,
    health: Arc<Health>,
    lifecycle: Lifecycle,
    keep_sessions: Arc<std::sync::atomic::AtomicBool>,
}

/// Serve until shutdown, then drain: the servers stop, the streams and the control thread are
/// joined, the sessions are ended or kept for the next run (the file says which).
async fn run(
    host: Arc<Host>,
    gs: Arc<Context>,
    t: Tasks,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    started: Instant,
) {
    let Tasks { server, api, mdns, planes, health, lifecycle, keep_sessions } = t;
    let config = gs.config.clone();
    // Sessions' starts and ends go to the lifecycle log until the drain is done.
    let drained = CancellationToken::new();
    let logged = tokio::spawn(crate::lifecycle::follow(host.events.subscribe(), lifecycle, drained.clone()));
    tracker.spawn(host.clone().watch_apps(shutdown.clone()));
    if config.sessions.idle_timeout_ms > 0 {
        tracker.spawn(
            host.clone().stop_idle_sessions(Duration::from_millis(config.sessions.idle_timeout_ms), shutdown.clone()),
        );
    }
    tracker.spawn(host.clone().serve_stream_commands(planes.streams_rx, shutdown.clone()));
    tracker.spawn(host.clone().serve_session_processes(planes.reports, shutdown.clone()));
    let api_task = api.map(|api| tokio::spawn(api.run(host.clone(), shutdown.clone(), tracker.clone())));
    server.run(shutdown.clone(), tracker.clone(), started).await;
    health.set_phase(Phase::Draining);
    if let Some(t) = api_task {
        let _ = t.await;
    }
    drop(mdns);
    drain(&host, &config, keep_sessions.load(std::sync::atomic::Ordering::Relaxed)).await;
    drained.cancel();
    let _ = logged.await;
    tracker.close();
    if tokio::time::timeout(DRAIN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!(left = tracker.len(), "connections still open after the drain grace; closing them");
    }
    tracing::info!("host stopped");
}

/// Sessions and lobbies end (with `stop_apps_on_shutdown`, unless the host restarts in place:
/// `keep`) or stay to be adopted; the audio server goes with the last sink; the sessions file says
/// what is left.
async fn drain(host: &Arc<Host>, config: &Config, keep: bool) {
    if config.sessions.stop_apps_on_shutdown && !keep {
        for s in host.sessions.list() {
            host.end_and_wait(s.id, crate::commands::EndReason::Shutdown).await;
        }
        host.lobbies.stop_all().await;
    }
    if host.sessions.list().iter().all(|s| s.sink.is_none()) && host.lobbies.list().iter().all(|l| l.sink.is_none()) {
        let (a, t) = (host.planes.runners.audio.clone(), host.planes.runners.stop_timeout);
        let _ = tokio::task::spawn_blocking(move || a.stop_server(t)).await;
    }
    let s = host.sessions.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.flush_blocking()).await {
        tracing::error!(error = %e, "the sessions file could not be written at shutdown");
    }
}

/// `wolf-rs serve`: start, then run until SIGINT or SIGTERM.
pub async fn serve(paths: Paths, env: Env) -> Result<()> {
    let running = start(paths, env).await?;
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready])
    {
        tracing::warn!(error = %e, "could not tell systemd the host is ready");
    }
    let token = running.shutdown_token();
    let limit = Duration::from_millis(running.gamestream.config.sessions.shutdown_timeout_ms);
    let (signalled_tx, signalled) = tokio::sync::oneshot::channel();
    let keep = running.keep_sessions.clone();
    tokio::spawn(async move {
        if wait_for_signal().await == Signal::Restart {
            tracing::info!("restart in place requested; draining, sessions kept for the next control plane");
            keep.store(true, std::sync::atomic::Ordering::Relaxed);
        } else {
            tracing::info!("shutdown requested; draining");
        }
        token.cancel();
        let _ = signalled_tx.send(());
    });
    let lifecycle = running.lifecycle.clone();
    let mut wait = std::pin::pin!(running.wait());
    let drained = tokio::select! {
        _ = &mut wait => Ok(()),
        _ = signalled => match tokio::time::timeout(limit, wait).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::new(
                ErrorKind::Io,
                format!("the drain did not finish within sessions.shutdown_timeout_ms ({} ms)", limit.as_millis()),
            )),
        },
    };
    let code = drained.as_ref().map_or_else(Error::exit_code, |()| crate::error::exit::OK);
    exited(&lifecycle, code).await;
    drained
}

/// Open `events.log`: how the previous control plane ended (from the log and the watchdog's
/// marker) and this start go in first. A log that cannot be opened is logged and left out.
async fn open_lifecycle(paths: &Paths, marker_line: Option<String>) -> Lifecycle {
    let path = crate::lifecycle::path(&paths.state_dir);
    let opened = tokio::task::spawn_blocking(move || {
        let previous = match crate::lifecycle::read(&path) {
            Ok((records, _)) => crate::lifecycle::previous_exit(&records, marker_line.as_deref()),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "the lifecycle log cannot be read");
                None
            }
        };
        let log = Lifecycle::open(path.clone())
            .inspect_err(|e| tracing::warn!(file = %path.display(), error = %e, "the lifecycle log is off"))
            .unwrap_or_else(|_| Lifecycle::disabled());
        if let Some(p) = previous {
            log.record(p);
        }
        log.record(Entry::ControlPlaneStart { version: env!("CARGO_PKG_VERSION").to_owned() });
        log
    })
    .await;
    opened.unwrap_or_else(|_| Lifecycle::disabled())
}

/// The control plane exits with `code`: recorded (by the supervisor, which sees the code or the
/// signal, when there is one), and written before the process ends.
async fn exited(lifecycle: &Lifecycle, code: u8) {
    if std::env::var_os(crate::supervisor::SUPERVISED_ENV).is_none() {
        lifecycle.record(Entry::ControlPlaneExit { code: Some(i32::from(code)), hung: None, found_at_start: false });
    }
    let log = lifecycle.clone();
    let _ = tokio::task::spawn_blocking(move || log.flush()).await;
}

/// What the control plane was asked by a signal.
#[derive(Debug, PartialEq, Eq)]
enum Signal {
    /// SIGTERM, SIGINT: stop.
    Stop,
    /// SIGHUP (from the supervisor): stop for a restart in place.
    Restart,
}

async fn wait_for_signal() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let (term, hup) = (signal(SignalKind::terminate()), signal(SignalKind::hangup()));
    match (term, hup) {
        (Ok(mut term), Ok(mut hup)) => tokio::select! {
            _ = term.recv() => Signal::Stop,
            _ = hup.recv() => Signal::Restart,
            _ = tokio::signal::ctrl_c() => Signal::Stop,
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}
