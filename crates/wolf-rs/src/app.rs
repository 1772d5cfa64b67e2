//! Builds the host in order (state, identity, listeners, API, mDNS), runs it, and drains it on
//! shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError, Env, TEMPLATE};
use crate::control::ControlChannel;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::gamestream::pairing::PairingManager;
use crate::gamestream::{GameStreamServer, HostContext, Listeners};
use crate::health::{HealthServer, HealthState};
use crate::metrics::Metrics;
use crate::net::iface;
use crate::net::tls::HandshakeGate;
use crate::sessions::Sessions;
use crate::state::clients::ClientStore;
use crate::state::identity;
use crate::status::{Health, Phase};
use crate::stream::{PingTable, Port, Streams, read_pings};
use crate::watchdog::{CrashMarker, Heartbeats, Watchdog, WatchdogConfig, Watched};

/// How long connection tasks get to finish after shutdown is asked for.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub config: PathBuf,
}

impl Paths {
    pub fn new(state_dir: PathBuf, config: Option<PathBuf>) -> Paths {
        let config = config.unwrap_or_else(|| state_dir.join("config.toml"));
        Paths { state_dir, config }
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
    pub ctx: Arc<HostContext>,
    pub gate: Arc<HandshakeGate>,
    pub health: Arc<Health>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Threads outside the runtime, stopped after the drain.
    threads: (HealthServer, Watchdog),
}

impl Running {
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

/// Everything up to accepting connections. Blocking steps run off the async workers.
pub async fn start(paths: Paths, env: Env) -> Result<Running> {
    let started = Instant::now();
    match crate::net::limit::raise_nofile_limit() {
        Ok(n) => tracing::debug!(limit = n, "open-file limit raised to the hard limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let p = paths.clone();
    let (config, marker, last_exit) = tokio::task::spawn_blocking(move || -> Result<_> {
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
    })
    .await
    .map_err(|e| Error::with_source(ErrorKind::Io, "start-up task failed", e))??;
    if let Some(line) = &last_exit {
        tracing::warn!(marker = %line, "the previous run was ended by the watchdog");
    }
    // Health and the watchdog come first, so a slow start-up is visible and watched.
    let metrics = Metrics::new().map_err(|e| Error::new(ErrorKind::Config, format!("metrics registry: {e}")))?;
    metrics.last_exit_by_watchdog.set(i64::from(last_exit.is_some()));
    let beats = Heartbeats::new();
    let watchdog_cfg = WatchdogConfig::from(&config.watchdog);
    let health = Health::new(watchdog_cfg.warn_after, last_exit);
    let sessions = Arc::new(Sessions::default());
    let health_addr = SocketAddr::new(
        config.bind_address.parse().map_err(|_| Error::new(ErrorKind::Config, "bind_address is not an IP address"))?,
        config.health.port,
    );
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
    let health_port = health_server.port;
    tracing::info!(port = health_port, "health port ready (/health /livez /readyz /metrics)");
    if config.debug.fault_injection {
        tracing::warn!("debug.fault_injection is on: POST /debug/hang on the health port can hang this host");
    }
    let watchdog = Watchdog::spawn(Watched {
        runtime: tokio::runtime::Handle::current(),
        cfg: watchdog_cfg,
        health: health.clone(),
        beats: beats.clone(),
        metrics: metrics.clone(),
        marker: Some(marker),
    })
    .or_err(ErrorKind::Io, || "starting the watchdog thread")?;

    let p = paths.clone();
    let cfg = config.clone();
    let sessions_file = resolve(&paths.state_dir, &config.sessions.file, crate::sessions::store::FILE_NAME);
    let sf = sessions_file.clone();
    let steps = beats.clone();
    let (loaded, uuid, clients, net, apps, encoder, saved, saved_lobbies) =
        tokio::task::spawn_blocking(move || -> Result<_> {
            let config = cfg;
            // Each blocking step is watched: one that hangs (a state file on a hung network mount)
            // is named by the watchdog, which exits so the supervisor restarts the host.
            let step = |name: &str| steps.register("startup", format!("startup:{name}"));
            // Temp files of writes a crash interrupted, wherever state is written.
            let mut dirs: Vec<PathBuf> =
                [p.clients(), sf.clone()].iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
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
            let loaded = identity::load_or_create(&key, &cert)?;
            let uuid = identity::host_uuid(&config.uuid, &p.state_dir)?;
            drop(s);
            let s = step("paired-clients");
            let clients = ClientStore::open(&p.clients())?;
            drop(s);
            let s = step("interfaces");
            let net = iface::detect(&config.network.local_ip, &config.network.mac);
            drop(s);
            let s = step("apps");
            let apps = crate::state::apps::AppCatalog::open(&p.apps(), &config.apps)?;
            drop(s);
            let s = step("encoder-probe");
            let encoder = crate::media::probe(&config.video.encoder, config.video.software_hevc)
                .map_err(|e| Error::new(ErrorKind::Config, format!("video encoder: {e}")))?;
            drop(s);
            let s = step("sessions-file");
            let saved = crate::sessions::store::load(&sf)?;
            let saved_lobbies = crate::lobbies::load(&crate::lobbies::path(&p.state_dir))?;
            drop(s);
            Ok((loaded, uuid, clients, net, apps, encoder, saved, saved_lobbies))
        })
        .await
        .map_err(|e| Error::with_source(ErrorKind::Io, "start-up task failed", e))??;
    tracing::info!(local_ip = %net.local_ip, mac = %net.mac, %uuid, clients = clients.list().len(), "host identity ready");
    tracing::info!(encoder = encoder.h264.name, hevc = encoder.hevc.is_some(), "video encoder: {}", encoder.reason);
    health.set_encoder(encoder.h264.name, &encoder.reason);
    let gamepads = crate::input::gamepads_state();
    if gamepads.starts_with("unavailable") {
        tracing::warn!(gamepads = %gamepads, "virtual gamepads cannot be made here; keyboard and mouse still work");
    }
    health.set_gamepads(gamepads);

    if config.pairing.fixed_pin().is_some() {
        tracing::warn!(
            "a fixed pairing PIN is set: anyone who can reach port {} can pair (the protocol lets a fixed PIN be recovered from one exchange)",
            config.ports.http
        );
    }
    let config = Arc::new(config);
    let listeners = Listeners::bind(&config).await?;
    let (http_port, https_port, rtsp_port) = listeners.ports()?;
    let (video_port, audio_port, control_port) = listeners.stream_ports()?;
    let control_socket = listeners.control.try_clone().or_err(ErrorKind::Bind, || "cloning the control socket")?;
    // Each stream socket: one clone for the sender threads, one registered with tokio for pings.
    let video_socket = listeners.video.try_clone().or_err(ErrorKind::Bind, || "cloning the video socket")?;
    let audio_socket = listeners.audio.try_clone().or_err(ErrorKind::Bind, || "cloning the audio socket")?;
    let video_pings_socket = Arc::new(
        tokio::net::UdpSocket::from_std(listeners.video.try_clone().or_err(ErrorKind::Bind, || "video socket")?)
            .or_err(ErrorKind::Bind, || "registering the video socket")?,
    );
    let audio_pings_socket = Arc::new(
        tokio::net::UdpSocket::from_std(listeners.audio.try_clone().or_err(ErrorKind::Bind, || "audio socket")?)
            .or_err(ErrorKind::Bind, || "registering the audio socket")?,
    );
    let (streams_tx, streams_rx) = tokio::sync::mpsc::unbounded_channel();
    let keyframes = Arc::new(crate::commands::KeyframeRequests::default());
    let api = match config.api.enabled {
        true => Some(crate::api::ApiServer::bind(&config.api, &paths.state_dir).await?),
        false => None,
    };
    let api_tcp = api.as_ref().and_then(crate::api::ApiServer::tcp_addr);
    let inputs = Arc::new(crate::input::Inputs::new(sessions.clone(), metrics.clone()));
    let control = ControlChannel::spawn(
        control_socket,
        sessions.clone(),
        keyframes.clone(),
        streams_tx.clone(),
        metrics.clone(),
        beats.clone(),
        inputs.clone(),
    )
    .or_err(ErrorKind::Bind, || "starting the control channel")?;
    let runners = Arc::new(crate::runners::Runners::new(
        &paths.state_dir,
        std::fs::canonicalize(&paths.state_dir).unwrap_or_else(|_| paths.state_dir.clone()).display().to_string(),
        &config.desktop,
        Duration::from_millis(config.sessions.stop_timeout_ms),
    ));
    let (rumble_to, s, r) = (control.commands.clone(), sessions.clone(), runners.clone());
    inputs.set_hooks(crate::input::Hooks {
        rumble: Some(Arc::new(move |session_id, number, low, high| {
            let _ = rumble_to.send(crate::commands::ControlCommand::Rumble { session_id, number, low, high });
        })),
        // On the session's injector thread: the pad's nodes are in the container before its next event.
        pad_nodes: Some(Arc::new(move |session_id, change| {
            let Some(session) = s.by_id(session_id) else { return };
            let (nodes, present) = match change {
                crate::input::PadChange::Added(n) => (n, true),
                crate::input::PadChange::Removed(n) => (n, false),
            };
            if let Err(e) = r.device_nodes(session_id, &session.runner, &nodes, present) {
                tracing::warn!(session = session_id, error = %e, "the app cannot see its pad");
            }
        })),
    });
    let apps = Arc::new(apps);
    let sweep_docker = apps.list().iter().any(|a| a.runner.kind == crate::config::RunnerKind::Docker)
        || saved.records.iter().any(|r| matches!(r.runner, crate::runners::RunnerHandle::Docker { .. }));
    let clients = Arc::new(clients);
    let events = Arc::new(crate::events::Events::default());
    let ender = Arc::new(crate::stream::SessionEnder {
        sessions: sessions.clone(),
        control: control.commands.clone(),
        streams: streams_tx.clone(),
        runners: runners.clone(),
        metrics: metrics.clone(),
        runtime: tokio::runtime::Handle::current(),
        events: events.clone(),
        clients: clients.clone(),
    });
    if let Some(aside) = &saved.moved_aside {
        metrics.session_store_corrupt.inc();
        tracing::error!(moved_to = %aside.display(), "the sessions file was corrupt; starting with no sessions");
    }
    let (store_errors, store_health) = (metrics.session_store_errors.clone(), health.clone());
    let writer = crate::sessions::store::Writer::spawn(sessions_file, move |written| match written {
        Ok(()) => store_health.set_store(None),
        Err(e) => {
            store_errors.inc();
            store_health.set_store(Some(e.to_string()));
        }
    })?;
    sessions.set_store(writer);
    // Lobbies first: their parts are no orphans to the sessions' pass.
    let reconcile_limit = Duration::from_millis(config.sessions.reconcile_timeout_ms);
    let lobbies_adopted = tokio::time::timeout(reconcile_limit, crate::lobbies::reconcile(saved_lobbies, &runners))
        .await
        .unwrap_or_else(|_| {
            tracing::error!("lobby reconcile did not finish in time; starting with no lobbies");
            Vec::new()
        });
    let lobby_parts: Vec<(u32, crate::runners::Parts)> =
        lobbies_adopted.iter().map(|l| (l.number, l.parts())).collect();
    let reconciled = crate::sessions::reconcile::run(
        saved.records,
        &lobby_parts,
        &runners,
        sweep_docker,
        Duration::from_millis(config.sessions.reconcile_timeout_ms),
    )
    .await;
    reconciled.export(&metrics);
    // A session keeps its lobby only if that lobby was adopted; each lobby's members are those.
    let mut adopted_sessions = reconciled.adopted;
    for s in &mut adopted_sessions {
        if s.lobby.as_ref().is_some_and(|l| !lobbies_adopted.iter().any(|a| a.id == l.id)) {
            s.lobby = None;
        }
    }
    let lobbies_adopted: Vec<crate::lobbies::Lobby> = lobbies_adopted
        .into_iter()
        .map(|mut l| {
            l.members = adopted_sessions
                .iter()
                .filter(|s| s.lobby.as_ref().is_some_and(|k| k.id == l.id))
                .map(|s| s.id)
                .collect();
            l
        })
        .collect();
    sessions.restore(adopted_sessions);
    let lobbies = Arc::new(crate::lobbies::Lobbies::new(
        crate::lobbies::path(&paths.state_dir),
        lobbies_adopted,
        runners.clone(),
        sessions.clone(),
        streams_tx.clone(),
        events.clone(),
        inputs.clone(),
    ));
    // A failed write is logged by the writer and shown in /health; the adopted sessions still run.
    let _ = sessions.flush().await;
    let shutdown = CancellationToken::new();
    let ctx = Arc::new(HostContext {
        config: config.clone(),
        uuid,
        net: net.clone(),
        identity: loaded.identity,
        clients,
        pairing: PairingManager::new((&config.pairing).into()),
        sessions,
        apps,
        hevc: encoder.hevc.is_some(),
        gpu_type: encoder.h264.name.into(),
        encoder,
        http_port,
        https_port,
        rtsp_port,
        video_port,
        audio_port,
        control_port,
        ender: ender.clone(),
        runners: runners.clone(),
        shutdown: shutdown.clone(),
        streams: streams_tx,
        metrics: metrics.clone(),
        beats: beats.clone(),
        trusted: crate::net::limit::TrustedProxies::new(config.pairing.trusted_proxy_nets()),
        rtsp_ports: crate::rtsp::SessionPorts::new(config.ports.rtsp_sessions, health_addr.ip()),
        events,
        lobbies: lobbies.clone(),
    });
    let server = GameStreamServer::new(ctx.clone(), listeners)?;
    let gate = server.gate.clone();
    let mdns = if config.mdns.enabled {
        match crate::mdns::advertise(&config.hostname, net.local_ip.into(), http_port) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "mDNS advertisement failed; clients can still add the host by address");
                None
            }
        }
    } else {
        None
    };

    let tracker = TaskTracker::new();
    let (sd, tr, actx, h) = (shutdown.clone(), tracker.clone(), ctx.clone(), health.clone());
    let (video_pings, audio_pings) = (Arc::new(PingTable::default()), Arc::new(PingTable::default()));
    let streams = Streams {
        config: ctx.config.clone(),
        apps: ctx.apps.clone(),
        carried: Default::default(),
        sessions: ctx.sessions.clone(),
        video: Port { socket: video_socket, pings: video_pings.clone() },
        audio: Port { socket: audio_socket, pings: audio_pings.clone() },
        encoder: ctx.encoder.clone(),
        metrics: metrics.clone(),
        beats: beats.clone(),
        keyframes,
        ender: ender.clone(),
    };
    tracker.spawn(watch_apps(ender.clone(), lobbies, shutdown.clone()));
    if config.sessions.idle_timeout_ms > 0 {
        tracker.spawn(stop_idle_sessions(
            ender,
            Duration::from_millis(config.sessions.idle_timeout_ms),
            shutdown.clone(),
        ));
    }
    tracker.spawn(read_pings(video_pings_socket, ctx.sessions.clone(), video_pings, shutdown.clone()));
    tracker.spawn(read_pings(audio_pings_socket, ctx.sessions.clone(), audio_pings, shutdown.clone()));
    let streams_task = tokio::spawn(streams.run(streams_rx, shutdown.clone(), tracker.clone()));
    let task = tokio::spawn(async move {
        let api_task = api.map(|api| tokio::spawn(api.run(actx.clone(), sd.clone(), tr.clone())));
        server.run(sd.clone(), tr.clone(), started).await;
        h.set_phase(Phase::Draining);
        if let Some(t) = api_task {
            let _ = t.await;
        }
        let _ = streams_task.await;
        // The ENet thread disconnects its peers and is joined off the async workers.
        let _ = tokio::task::spawn_blocking(move || drop(control)).await;
        drop(mdns);
        if actx.config.sessions.stop_apps_on_shutdown {
            for s in actx.sessions.list() {
                actx.ender.end_and_wait(s.id, crate::commands::EndReason::Shutdown).await;
            }
            actx.lobbies.stop_all().await;
        }
        // With no session or lobby left to adopt it, the audio server goes too.
        if actx.sessions.list().iter().all(|s| s.sink.is_none()) && actx.lobbies.list().iter().all(|l| l.sink.is_none())
        {
            let (a, t) = (actx.runners.audio.clone(), actx.runners.stop_timeout);
            let _ = tokio::task::spawn_blocking(move || a.stop_server(t)).await;
        }
        // Otherwise apps keep running to be adopted at the next start; the file must say so.
        let s = actx.sessions.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.flush_blocking()).await {
            tracing::error!(error = %e, "the sessions file could not be written at shutdown");
        }
        tr.close();
        if tokio::time::timeout(DRAIN_GRACE, tr.wait()).await.is_err() {
            tracing::warn!(left = tr.len(), "connections still open after the drain grace; closing them");
        }
        tracing::info!("host stopped");
    });
    health.set_phase(Phase::Ready);
    tracing::info!(
        ready_ms = started.elapsed().as_millis() as u64,
        "wolf-rs ready in {} ms",
        started.elapsed().as_millis()
    );
    Ok(Running {
        http_port,
        https_port,
        rtsp_port,
        health_port,
        api_tcp,
        ctx,
        gate,
        health,
        shutdown,
        task,
        threads: (health_server, watchdog),
    })
}

/// Check for idle sessions a few times per timeout (at most every 5 s).
async fn stop_idle_sessions(ender: Arc<crate::stream::SessionEnder>, idle: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval((idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                ender.stop_idle(idle);
            }
        }
    }
}

/// Ends sessions whose app exited or whose display or sink went away, and rotates app logs.
async fn watch_apps(
    ender: Arc<crate::stream::SessionEnder>,
    lobbies: Arc<crate::lobbies::Lobbies>,
    shutdown: CancellationToken,
) {
    use crate::commands::EndReason;
    use crate::runners::Lost;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut turns = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        turns += 1;
        let running: Vec<_> = ender
            .sessions
            .list()
            .into_iter()
            .filter(|s| !s.parts().is_empty() && s.state != crate::sessions::SessionState::Stopping)
            .collect();
        for s in &running {
            let reason = match ender.runners.lost(s.id, &s.parts()).await {
                None => continue,
                Some(Lost::App) => EndReason::AppExited,
                Some(Lost::Display) => EndReason::DisplayLost,
                Some(Lost::Audio) => EndReason::AudioLost,
            };
            tracing::info!(
                session = s.id,
                app = s.app_id,
                reason = reason.as_str(),
                "a part of the session is gone: ending it"
            );
            ender.end(s.id, reason);
        }
        lobbies.watch().await;
        if turns % 10 == 0 {
            let ids: Vec<u32> = running.iter().map(|s| s.id).collect();
            let p = ender.runners.process.clone();
            let _ = tokio::task::spawn_blocking(move || p.rotate_logs(&ids)).await;
        }
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
    let limit = Duration::from_millis(running.ctx.config.sessions.shutdown_timeout_ms);
    let (signalled_tx, signalled) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        token.cancel();
        let _ = signalled_tx.send(());
    });
    let mut wait = std::pin::pin!(running.wait());
    tokio::select! {
        _ = &mut wait => return Ok(()),
        _ = signalled => {}
    }
    match tokio::time::timeout(limit, wait).await {
        Ok(()) => Ok(()),
        Err(_) => Err(Error::new(
            ErrorKind::Io,
            format!("the drain did not finish within sessions.shutdown_timeout_ms ({} ms)", limit.as_millis()),
        )),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
