//! TLS for the HTTPS port: a client-certificate verifier that asks for any certificate and accepts
//! it (authorization happens in the handler, by fingerprint), and the handshake gate that bounds
//! concurrent handshakes so a client that never finishes one can block nobody.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{Acceptor, ServerConfig};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use prometheus::IntGauge;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::metrics::GateStats;
use crate::state::identity::Identity;

/// The one crypto provider of the process.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Requests a client certificate, accepts any (Moonlight's are self-signed, serial 0), and still
/// checks the handshake signature so the peer proves it holds the certificate's key.
#[derive(Debug)]
pub struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// No certificate is allowed through the handshake: the handler answers 401 XML, never a reset.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

pub fn server_config(identity: &Identity) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let verifier = Arc::new(AnyClientCert { algorithms: provider.signature_verification_algorithms });
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .or_err(ErrorKind::Tls, || "choosing TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert_der.clone()], identity.key_der.clone_key().into())
        .or_err(ErrorKind::Tls, || "loading the host certificate into TLS")?;
    Ok(Arc::new(config))
}

#[derive(Debug, Clone)]
pub struct GateConfig {
    pub max_concurrent_handshakes: usize,
    pub permit_wait_timeout: Duration,
    pub handshake_timeout: Duration,
    pub client_hello_timeout: Duration,
    pub max_pending_connections: usize,
}

impl From<&crate::config::Tls> for GateConfig {
    fn from(t: &crate::config::Tls) -> Self {
        GateConfig {
            max_concurrent_handshakes: t.max_concurrent_handshakes,
            permit_wait_timeout: Duration::from_millis(t.permit_wait_timeout_ms),
            handshake_timeout: Duration::from_millis(t.handshake_timeout_ms),
            client_hello_timeout: Duration::from_millis(t.client_hello_timeout_ms),
            max_pending_connections: t.max_pending_connections,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Timeout,
    Rejected,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Rejected => "rejected",
            Outcome::Error => "error",
        }
    }
}

/// Decrements a gauge when dropped, on every path.
struct GaugeGuard<'a>(&'a IntGauge);

impl<'a> GaugeGuard<'a> {
    fn new(g: &'a IntGauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A connection admitted under the pending cap; the slot frees when this drops.
pub struct Admitted {
    gate: Arc<HandshakeGate>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.stats.pending.dec();
    }
}

pub struct HandshakeGate {
    cfg: GateConfig,
    permits: Arc<Semaphore>,
    pub stats: Arc<GateStats>,
}

impl HandshakeGate {
    pub fn new(cfg: GateConfig, stats: Arc<GateStats>) -> Arc<HandshakeGate> {
        let permits = Arc::new(Semaphore::new(cfg.max_concurrent_handshakes.max(1)));
        Arc::new(HandshakeGate { cfg, permits, stats })
    }

    /// Count a connection refused before admission (e.g. its IP is over its limit).
    pub fn refused(&self) {
        self.stats.count_only(Outcome::Rejected.as_str());
    }

    /// How long a new connection has to send its ClientHello.
    pub fn client_hello_timeout(&self) -> Duration {
        self.cfg.client_hello_timeout
    }

    /// Count a connection that sent nothing within the ClientHello timeout.
    pub fn timed_out_silent(&self) {
        self.stats.record(Outcome::Timeout.as_str(), self.cfg.client_hello_timeout.as_secs_f64());
    }

    /// Take a pending slot, or `None` when the cap is reached (the caller closes the socket at once).
    /// Called from the one accept loop, so the check and the increment do not race.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        if self.stats.pending.get() as usize >= self.cfg.max_pending_connections {
            self.stats.count_only(Outcome::Rejected.as_str());
            return None;
        }
        self.stats.pending.inc();
        Some(Admitted { gate: self.clone() })
    }

    /// ClientHello (no permit held) → permit (bounded wait) → handshake (bounded). Every failure
    /// drops the socket, which closes it.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        config: Arc<ServerConfig>,
        admitted: Admitted,
    ) -> Result<TlsStream<TcpStream>> {
        let started = Instant::now();
        let result = self.run(stream, config).await;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err((o, _)) => *o,
        };
        self.stats.record(outcome.as_str(), started.elapsed().as_secs_f64());
        drop(admitted);
        result.map_err(|(_, e)| e)
    }

    async fn run(
        &self,
        stream: TcpStream,
        config: Arc<ServerConfig>,
    ) -> std::result::Result<TlsStream<TcpStream>, (Outcome, Error)> {
        let hello =
            tokio::time::timeout(self.cfg.client_hello_timeout, LazyConfigAcceptor::new(Acceptor::default(), stream))
                .await;
        let start = match hello {
            Err(_) => {
                return Err((Outcome::Timeout, Error::new(ErrorKind::Tls, "no complete ClientHello in time")));
            }
            Ok(Err(e)) => {
                return Err((Outcome::Error, Error::with_source(ErrorKind::Tls, "reading the ClientHello", e)));
            }
            Ok(Ok(start)) => start,
        };
        let permit = {
            let _waiting = GaugeGuard::new(&self.stats.waiting);
            match tokio::time::timeout(self.cfg.permit_wait_timeout, self.permits.clone().acquire_owned()).await {
                Err(_) => {
                    return Err((Outcome::Rejected, Error::new(ErrorKind::Tls, "no handshake permit in time")));
                }
                Ok(Err(e)) => {
                    return Err((Outcome::Error, Error::with_source(ErrorKind::Tls, "permit semaphore", e)));
                }
                Ok(Ok(p)) => p,
            }
        };
        // `into_stream` processes the ClientHello and makes the server's flight, signature included,
        // synchronously: that is the crypto the permits bound, so it runs under the permit, off the
        // async workers. Waiting for the client's flight holds no permit.
        let accept = {
            let _in_use = GaugeGuard::new(&self.stats.in_use);
            let made = tokio::task::spawn_blocking(move || start.into_stream(config)).await;
            drop(permit);
            match made {
                Ok(a) => a,
                Err(e) => return Err((Outcome::Error, Error::with_source(ErrorKind::Tls, "handshake task", e))),
            }
        };
        match tokio::time::timeout(self.cfg.handshake_timeout, accept).await {
            Err(_) => Err((Outcome::Timeout, Error::new(ErrorKind::Tls, "handshake did not finish in time"))),
            Ok(Err(e)) => Err((Outcome::Error, Error::with_source(ErrorKind::Tls, "handshake", e))),
            Ok(Ok(s)) => Ok(s),
        }
    }
}

/// The peer's certificate (first in its chain), if it sent one.
pub fn peer_certificate(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned())
}
