//! The GameStream HTTP (47989) and mutual-TLS HTTPS (47984) listeners. Each connection is its own
//! task, serves one request with read and write timeouts, and closes.

pub mod handlers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::{ErrorKind, Result, ResultExt};
use crate::host::Host;
use crate::net::iface::NetInfo;
use crate::net::limit::{Budgets, ConnLimit, ConnSlot, Stage, TrustedProxies};
use crate::net::tls::{self, HandshakeGate};
use crate::state::identity::Identity;
use handlers::Conn;

/// What the GameStream handlers read: the host they ask, and who this host is to a client.
pub struct Context {
    pub host: Arc<Host>,
    pub config: Arc<Config>,
    pub uuid: uuid::Uuid,
    pub net: NetInfo,
    pub identity: Arc<Identity>,
    /// The encoders picked at start-up (`serverinfo` tells HEVC and the `gputype` from them).
    pub encoder: crate::media::EncoderChoice,
    /// `[pairing] trusted_proxies`, parsed.
    pub trusted: TrustedProxies,
    pub beats: Arc<crate::watchdog::Heartbeats>,
}

/// Bound listeners, before anything runs (so tests can bind port 0 and read the ports).
pub struct Listeners {
    pub http: TcpListener,
    pub https: TcpListener,
    pub rtsp: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Listeners> {
        let ip: std::net::IpAddr = config
            .bind_address
            .parse()
            .or_err(ErrorKind::Config, || format!("bind_address {:?}", config.bind_address))?;
        let http = TcpListener::bind(SocketAddr::new(ip, config.ports.http))
            .await
            .or_err(ErrorKind::Bind, || format!("binding HTTP on {ip}:{}", config.ports.http))?;
        let https = TcpListener::bind(SocketAddr::new(ip, config.ports.https))
            .await
            .or_err(ErrorKind::Bind, || format!("binding HTTPS on {ip}:{}", config.ports.https))?;
        let rtsp = TcpListener::bind(SocketAddr::new(ip, config.ports.rtsp))
            .await
            .or_err(ErrorKind::Bind, || format!("binding RTSP on {ip}:{}", config.ports.rtsp))?;
        Ok(Listeners { http, https, rtsp })
    }

    /// (http, https, rtsp) as bound.
    pub fn ports(&self) -> Result<(u16, u16, u16)> {
        let h = self.http.local_addr().or_err(ErrorKind::Bind, || "HTTP local address")?;
        let s = self.https.local_addr().or_err(ErrorKind::Bind, || "HTTPS local address")?;
        let r = self.rtsp.local_addr().or_err(ErrorKind::Bind, || "RTSP local address")?;
        Ok((h.port(), s.port(), r.port()))
    }
}

pub struct GameStreamServer {
    pub ctx: Arc<Context>,
    pub gate: Arc<HandshakeGate>,
    listeners: Listeners,
    tls: Arc<ServerConfig>,
}

impl GameStreamServer {
    pub fn new(ctx: Arc<Context>, listeners: Listeners) -> Result<GameStreamServer> {
        let tls = tls::server_config(&ctx.identity)?;
        let gate = HandshakeGate::new((&ctx.config.tls).into(), ctx.host.metrics.gate.clone());
        Ok(GameStreamServer { ctx, gate, listeners, tls })
    }

    /// Run both accept loops until `shutdown`; connection tasks go on `tracker`.
    pub async fn run(self, shutdown: CancellationToken, tracker: TaskTracker, started: Instant) {
        let GameStreamServer { ctx, gate, listeners, tls } = self;
        for (name, l) in [("HTTP", &listeners.http), ("HTTPS", &listeners.https)] {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(%addr, ready_ms = started.elapsed().as_millis() as u64, "{name} listener ready in {} ms", started.elapsed().as_millis());
            }
        }
        let rtsp = crate::rtsp::run(
            listeners.rtsp,
            ctx.beats.register("accept", "accept:RTSP"),
            ctx.host.planes.rtsp_ports.clone(),
        );
        let http = accept_http(listeners.http, ctx.clone(), shutdown.clone(), tracker.clone());
        let https = accept_https(listeners.https, ctx, gate, tls, shutdown, tracker);
        tokio::join!(http, https, rtsp);
    }
}

fn request_timeout(ctx: &Context) -> Duration {
    Duration::from_millis(ctx.config.http.request_timeout_ms)
}

/// One port's connection budgets (each of HTTP and HTTPS has its own).
fn conn_limit(ctx: &Context) -> Arc<ConnLimit> {
    let h = &ctx.config.http;
    ConnLimit::new(Budgets {
        per_source: h.max_connections_per_ip,
        per_trusted_proxy: h.max_connections_per_trusted_proxy,
        total: h.max_connections,
        trusted: ctx.trusted.clone(),
        idle_grace: crate::net::limit::IDLE_GRACE,
    })
}

async fn accept_http(listener: TcpListener, ctx: Arc<Context>, shutdown: CancellationToken, tracker: TaskTracker) {
    let limit = conn_limit(&ctx);
    let beat = ctx.beats.register("accept", "accept:HTTP");
    while let Some((stream, peer)) = crate::net::accept_next(&listener, &shutdown, "HTTP", Some(&beat)).await {
        let Some(slot) = limit.admit(peer.ip()) else {
            tracing::debug!(%peer, "HTTP connection cap reached and every connection there is busy; closing");
            continue;
        };
        let ctx = ctx.clone();
        tracker.spawn(async move {
            let slot = Arc::new(slot);
            let evicted = slot.evicted().clone();
            let serve = async {
                let _ = stream.set_nodelay(true);
                let Ok(local) = stream.local_addr() else { return };
                if !crate::net::limit::first_bytes(&stream, &slot, request_timeout(&ctx)).await {
                    return;
                }
                let conn = Arc::new(Conn { peer, local, tls: None });
                let deadline =
                    handlers::connection_deadline(request_timeout(&ctx), Some(ctx.host.pairing.limits.pin_timeout));
                serve_one(stream, ctx, conn, slot.clone(), deadline).await;
            };
            tokio::select! {
                _ = evicted.cancelled() => tracing::debug!(%peer, "HTTP connection closed to make room for a newer one"),
                _ = serve => {}
            }
        });
    }
}

async fn accept_https(
    listener: TcpListener,
    ctx: Arc<Context>,
    gate: Arc<HandshakeGate>,
    tls: Arc<ServerConfig>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    // Whole-connection budgets (handshake and request); the gate caps the handshakes themselves.
    let limit = conn_limit(&ctx);
    let beat = ctx.beats.register("accept", "accept:HTTPS");
    while let Some((stream, peer)) = crate::net::accept_next(&listener, &shutdown, "HTTPS", Some(&beat)).await {
        // Refused: dropping the stream closes it at once.
        let Some(slot) = limit.admit(peer.ip()) else {
            tracing::debug!(%peer, "HTTPS connection cap reached and every connection there is busy; closing");
            gate.refused();
            continue;
        };
        let Some(admitted) = gate.admit() else {
            tracing::debug!(%peer, "too many pending TLS connections; closing");
            continue;
        };
        let (ctx, gate, tls) = (ctx.clone(), gate.clone(), tls.clone());
        tracker.spawn(async move {
            let slot = Arc::new(slot);
            let evicted = slot.evicted().clone();
            let serve = async {
                let _ = stream.set_nodelay(true);
                let Ok(local) = stream.local_addr() else { return };
                // A silent connection holds no handshake state yet; the gate's hello timeout still
                // bounds it.
                if !crate::net::limit::first_bytes(&stream, &slot, gate.client_hello_timeout()).await {
                    gate.timed_out_silent();
                    return;
                }
                let tls_stream = match gate.handshake(stream, tls, admitted).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake ended");
                        return;
                    }
                };
                slot.set(Stage::Idle);
                let fp = tls::peer_certificate(&tls_stream).map(|c| handlers::fingerprint(&c));
                let conn = Arc::new(Conn { peer, local, tls: Some(fp) });
                let deadline = handlers::connection_deadline(request_timeout(&ctx), None);
                serve_one(tls_stream, ctx, conn, slot.clone(), deadline).await;
            };
            tokio::select! {
                _ = evicted.cancelled() => tracing::debug!(%peer, "HTTPS connection closed to make room for a newer one"),
                _ = serve => {}
            }
        });
    }
}

/// One request, then close. Slow headers are cut by hyper's header timeout; the whole exchange by
/// `deadline`.
async fn serve_one<IO>(io: IO, ctx: Arc<Context>, conn: Arc<Conn>, slot: Arc<ConnSlot>, deadline: Duration)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = request_timeout(&ctx);
    let peer = conn.peer;
    let svc = service_fn(move |req| {
        // The request's head is in: from now on this connection is never evicted.
        slot.set(Stage::Busy);
        let (ctx, conn) = (ctx.clone(), conn.clone());
        async move { Ok::<_, std::convert::Infallible>(handlers::handle(ctx, conn, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(false).timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(64 * 1024);
    let served = builder.serve_connection(TokioIo::new(io), svc);
    match tokio::time::timeout(deadline, served).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP connection ended with an error"),
        Err(_) => tracing::debug!(%peer, "connection deadline reached; closing"),
    }
}
