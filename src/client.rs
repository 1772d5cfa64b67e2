//! The Moonlight side of the protocol: a client certificate like Moonlight's, the five pairing
//! steps, and HTTP(S) requests. Used by the integration tests and the load tools.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::RsaKeyPair;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::protocol::pairing::{CertInfo, client::ClientPairing, random16};
use crate::protocol::xml;

/// What every Moonlight client sends as `uniqueid`.
pub const MOONLIGHT_UNIQUEID: &str = "0123456789ABCDEF";

/// A client certificate made the way Moonlight makes it: RSA-2048, SHA-256, self-signed, serial 0.
pub struct ClientIdentity {
    pub cert: CertInfo,
    pub key: RsaKeyPair,
    pub key_der: PrivatePkcs8KeyDer<'static>,
}

impl ClientIdentity {
    pub fn generate() -> Result<ClientIdentity> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| Error::new(ErrorKind::Identity, "RSA keygen"))?;
        let pkcs8 = key.as_der().map_err(|_| Error::new(ErrorKind::Identity, "PKCS#8 encoding"))?;
        let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_RSA_SHA256)
            .or_err(ErrorKind::Identity, || "loading the client key")?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "NVIDIA GameStream Client");
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0u8]));
        let cert = params.self_signed(&signer).or_err(ErrorKind::Identity, || "self-signing the client cert")?;
        let info = CertInfo::from_pem(&cert.pem()).or_err(ErrorKind::Identity, || "parsing the client cert")?;
        Ok(ClientIdentity { cert: info, key, key_der })
    }

    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<ClientIdentity> {
        use rustls_pki_types::pem::PemObject;
        let key_der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .or_err(ErrorKind::Identity, || "client key PEM (PKCS#8)")?;
        let key = RsaKeyPair::from_pkcs8(key_der.secret_pkcs8_der())
            .map_err(|e| Error::new(ErrorKind::Identity, format!("client key: {e}")))?;
        let cert = CertInfo::from_pem(cert_pem).or_err(ErrorKind::Identity, || "client certificate")?;
        Ok(ClientIdentity { cert, key, key_der })
    }

    /// PKCS#8 PEM of the key.
    pub fn key_pem(&self) -> Result<String> {
        let k = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&self.key_der, &rcgen::PKCS_RSA_SHA256)
            .or_err(ErrorKind::Identity, || "encoding the client key")?;
        Ok(k.serialize_pem())
    }

    /// The identity kept in `dir` (client_key.pem, client_cert.pem), made on first use. Blocking.
    pub fn load_or_create(dir: &std::path::Path) -> Result<ClientIdentity> {
        let (k, c) = (dir.join("client_key.pem"), dir.join("client_cert.pem"));
        if k.exists() && c.exists() {
            let key = std::fs::read_to_string(&k).or_err(ErrorKind::Io, || format!("reading {}", k.display()))?;
            let cert = std::fs::read_to_string(&c).or_err(ErrorKind::Io, || format!("reading {}", c.display()))?;
            return ClientIdentity::from_pem(&key, &cert);
        }
        let id = ClientIdentity::generate()?;
        crate::state::atomic::write_atomic(&k, id.key_pem()?.as_bytes(), 0o600)?;
        crate::state::atomic::write_atomic(&c, id.cert.pem.as_bytes(), 0o644)?;
        Ok(id)
    }
}

/// Moonlight does not verify the host certificate while pairing; after pairing it pins it.
#[derive(Debug)]
struct PinnedOrAny {
    pinned: Option<Vec<u8>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedOrAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match &self.pinned {
            Some(p) if p.as_slice() != end_entity.as_ref() => {
                Err(rustls::Error::General("host certificate differs from the pinned one".into()))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// TLS settings for talking to a host: present `identity` (if any), pin `server_der` (if any).
pub fn tls_config(identity: Option<&ClientIdentity>, server_der: Option<Vec<u8>>) -> Result<Arc<ClientConfig>> {
    let provider = crate::net::tls::provider();
    let verifier = Arc::new(PinnedOrAny { pinned: server_der, algorithms: provider.signature_verification_algorithms });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .or_err(ErrorKind::Tls, || "TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(vec![CertificateDer::from(id.cert.der.clone())], id.key_der.clone_key().into())
            .or_err(ErrorKind::Tls, || "client certificate")?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn xml_status(&self) -> Option<u16> {
        xml::root_attr(&self.text(), "status_code").and_then(|s| s.parse().ok())
    }

    pub fn field(&self, tag: &str) -> Option<String> {
        xml::find_text(&self.text(), tag)
    }
}

/// One HTTP/1.1 request and its whole reply over `io` (plain TCP or TLS).
pub(crate) async fn exchange<IO>(io: IO, method: hyper::Method, path: &str, body: Option<String>) -> Result<Reply>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .or_err(ErrorKind::Protocol, || "HTTP handshake")?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "wolf-rs")
        .header("content-type", "application/json");
    let body = http_body_util::Full::new(Bytes::from(body.unwrap_or_default()));
    let req = req.body(body).or_err(ErrorKind::Protocol, || "building the request")?;
    let resp = sender.send_request(req).await.or_err(ErrorKind::Protocol, || format!("request {path}"))?;
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = resp.into_body().collect().await.or_err(ErrorKind::Protocol, || "reading the body")?.to_bytes();
    driver.abort();
    Ok(Reply { status, content_type, body })
}

/// One plain-HTTP request to `addr` (the health port, tools).
pub async fn plain_request(addr: SocketAddr, method: hyper::Method, path: &str, body: Option<String>) -> Result<Reply> {
    let tcp = TcpStream::connect(addr).await.or_err(ErrorKind::Protocol, || format!("connecting to {addr}"))?;
    exchange(tcp, method, path, body).await
}

/// TCP to `addr` from `local` (any port), or from wherever the OS picks. The host knows RTSP
/// clients by address, so load tools give each simulated client its own loopback address.
pub async fn connect_from(local: Option<IpAddr>, addr: SocketAddr) -> Result<TcpStream> {
    let Some(ip) = local else {
        return TcpStream::connect(addr).await.or_err(ErrorKind::Protocol, || format!("connecting to {addr}"));
    };
    let socket = match ip {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .or_err(ErrorKind::Protocol, || "creating a TCP socket")?;
    socket.bind(SocketAddr::new(ip, 0)).or_err(ErrorKind::Protocol, || format!("binding {ip}"))?;
    socket.connect(addr).await.or_err(ErrorKind::Protocol, || format!("connecting to {addr} from {ip}"))
}

/// A Moonlight-like client of one host.
pub struct GameStreamClient {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub identity: Arc<ClientIdentity>,
    pub uniqueid: String,
    pub device_name: String,
    /// The host certificate learned while pairing (pinned afterwards).
    pub server_cert: Option<CertInfo>,
    pub timeout: Duration,
    /// Source address of every connection (None: the OS picks).
    pub local_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairOutcome {
    Paired,
    /// The host refused a step: its status_code and message.
    Refused {
        step: &'static str,
        status: u16,
        message: String,
    },
    /// `<paired>0</paired>`: wrong PIN.
    NotPaired {
        step: &'static str,
    },
}

impl GameStreamClient {
    pub fn new(http: SocketAddr, https: SocketAddr, identity: Arc<ClientIdentity>) -> GameStreamClient {
        GameStreamClient {
            http,
            https,
            identity,
            uniqueid: MOONLIGHT_UNIQUEID.into(),
            device_name: "wolf-rs-test".into(),
            server_cert: None,
            timeout: Duration::from_secs(30),
            local_ip: None,
        }
    }

    /// `/path?uniqueid=..&uuid=..&<extra>` as Moonlight builds it.
    pub fn url(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("uniqueid", &self.uniqueid);
        q.append_pair("uuid", &uuid::Uuid::new_v4().to_string());
        for (k, v) in extra {
            q.append_pair(k, v);
        }
        format!("{path}?{}", q.finish())
    }

    /// `/launch` of `app` in `mode` (`WxHxFPS`) with a fresh rikey and the parameters Moonlight sends.
    pub async fn launch(&self, app: &str, mode: &str) -> Result<Reply> {
        let rikey = hex::encode(random16().or_err(ErrorKind::Protocol, || "rikey")?);
        self.https_get(&self.url(
            "/launch",
            &[
                ("appid", app),
                ("mode", mode),
                ("additionalStates", "1"),
                ("sops", "0"),
                ("rikey", &rikey),
                ("rikeyid", "1"),
                ("localAudioPlayMode", "0"),
                ("surroundAudioInfo", "196610"),
                ("corever", "1"),
            ],
        ))
        .await
    }

    pub async fn http_request(&self, method: hyper::Method, path: &str, body: Option<String>) -> Result<Reply> {
        let fut = async {
            let tcp = connect_from(self.local_ip, self.http).await?;
            exchange(tcp, method, path, body).await
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| Error::new(ErrorKind::Protocol, format!("{path}: timed out")))?
    }

    pub async fn http_get(&self, path: &str) -> Result<Reply> {
        self.http_request(hyper::Method::GET, path, None).await
    }

    /// HTTPS GET presenting `identity` (or none).
    pub async fn https_get_as(&self, path: &str, identity: Option<&ClientIdentity>) -> Result<Reply> {
        let pinned = self.server_cert.as_ref().map(|c| c.der.clone());
        let config = tls_config(identity, pinned)?;
        let fut = async {
            let tcp = connect_from(self.local_ip, self.https).await?;
            let name = ServerName::try_from("wolf-rs").or_err(ErrorKind::Tls, || "server name")?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .or_err(ErrorKind::Tls, || "TLS handshake with the host")?;
            exchange(tls, hyper::Method::GET, path, None).await
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| Error::new(ErrorKind::Protocol, format!("{path}: timed out")))?
    }

    pub async fn https_get(&self, path: &str) -> Result<Reply> {
        self.https_get_as(path, Some(&self.identity)).await
    }

    fn refused(step: &'static str, r: &Reply) -> Option<PairOutcome> {
        match r.xml_status() {
            Some(200) => None,
            s => Some(PairOutcome::Refused {
                step,
                status: s.unwrap_or(r.status),
                message: xml::root_attr(&r.text(), "status_message").unwrap_or_else(|| r.text()),
            }),
        }
    }

    /// The five steps. Step 1 returns only once the host has the PIN (fixed, typed on the PIN
    /// page, or given with `wolf-rs pair`), so supply it concurrently.
    pub async fn pair(&mut self, pin: &str) -> Result<PairOutcome> {
        let salt = random16().or_err(ErrorKind::Pairing, || "salt")?;
        let mut p = ClientPairing::new(&salt, pin).or_err(ErrorKind::Pairing, || "client pairing")?;
        let name = self.device_name.clone();
        let cert_hex = hex::encode(self.identity.cert.pem.as_bytes());
        let salt_hex = hex::encode(salt);
        let r = self
            .http_get(&self.url(
                "/pair",
                &[
                    ("devicename", &name),
                    ("updateState", "1"),
                    ("phrase", "getservercert"),
                    ("salt", &salt_hex),
                    ("clientcert", &cert_hex),
                ],
            ))
            .await?;
        if let Some(o) = Self::refused("getservercert", &r) {
            return Ok(o);
        }
        let plaincert = r.field("plaincert").unwrap_or_default();
        let pem = hex::decode(&plaincert).ok().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default();
        let server = CertInfo::from_pem(&pem).or_err(ErrorKind::Pairing, || "the host's plaincert")?;

        let challenge = p.client_challenge().or_err(ErrorKind::Pairing, || "challenge")?;
        let r = self
            .http_get(
                &self.url("/pair", &[("devicename", &name), ("updateState", "1"), ("clientchallenge", &challenge)]),
            )
            .await?;
        if let Some(o) = Self::refused("clientchallenge", &r) {
            return Ok(o);
        }
        let resp = r.field("challengeresponse").unwrap_or_default();
        let scr =
            p.on_challenge_response(&resp, &self.identity.cert).or_err(ErrorKind::Pairing, || "challengeresponse")?;

        let r = self
            .http_get(&self.url("/pair", &[("devicename", &name), ("updateState", "1"), ("serverchallengeresp", &scr)]))
            .await?;
        if let Some(o) = Self::refused("serverchallengeresp", &r) {
            return Ok(o);
        }
        let secret = r.field("pairingsecret").unwrap_or_default();
        // A wrong PIN shows here: the host's hash and signature do not check out. Moonlight goes
        // on to step 4 anyway (so the host learns of the failure), as do we.
        let host_ok = p.verify_pairing_secret(&secret, &server).unwrap_or(false);

        let cps = p.client_pairing_secret(&self.identity.key).or_err(ErrorKind::Pairing, || "client secret")?;
        let r = self
            .http_get(&self.url("/pair", &[("devicename", &name), ("updateState", "1"), ("clientpairingsecret", &cps)]))
            .await?;
        if let Some(o) = Self::refused("clientpairingsecret", &r) {
            return Ok(o);
        }
        if r.field("paired").as_deref() != Some("1") || !host_ok {
            return Ok(PairOutcome::NotPaired { step: "clientpairingsecret" });
        }
        self.server_cert = Some(server);
        let r = self
            .https_get(&self.url("/pair", &[("devicename", &name), ("updateState", "1"), ("phrase", "pairchallenge")]))
            .await?;
        if let Some(o) = Self::refused("pairchallenge", &r) {
            return Ok(o);
        }
        if r.field("paired").as_deref() != Some("1") {
            return Ok(PairOutcome::NotPaired { step: "pairchallenge" });
        }
        Ok(PairOutcome::Paired)
    }
}

/// `wolf-rs client ...`: the same client, from the command line.
pub async fn cli(
    host: std::net::IpAddr,
    http_port: u16,
    dir: std::path::PathBuf,
    action: crate::cli::ClientAction,
) -> Result<()> {
    use crate::cli::ClientAction;
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
                crate::state::atomic::write_atomic(&pinned, cert.pem.as_bytes(), 0o644)?;
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
        ClientAction::Launch { app, mode } => c.launch(&app.to_string(), &mode).await?,
        ClientAction::Cancel => c.https_get(&c.url("/cancel", &[])).await?,
        ClientAction::Unpair => c.https_get(&c.url("/unpair", &[])).await?,
    };
    println!("{}", reply.text());
    match reply.xml_status() {
        Some(200) => Ok(()),
        s => Err(Error::new(ErrorKind::Protocol, format!("the host answered status_code {s:?}"))),
    }
}

/// An RTSP reply as Moonlight's parser reads it.
#[derive(Debug, Clone)]
pub struct RtspReply {
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RtspReply {
    /// Header by exact name (the client matches case-sensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One RTSP request on its own connection, sent in 536-byte pieces, read until the host closes
/// (what moonlight-common-c does). Enforces the client's reply rules: `RTSP/1.0 <code> <text>`, at
/// least one header, exactly one space after each colon.
pub async fn rtsp_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    cseq: u32,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<RtspReply> {
    rtsp_request_from(None, addr, method, target, cseq, headers, body).await
}

/// As [`rtsp_request`], connecting from `local`.
pub async fn rtsp_request_from(
    local: Option<IpAddr>,
    addr: SocketAddr,
    method: &str,
    target: &str,
    cseq: u32,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<RtspReply> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req =
        format!("{method} {target} RTSP/1.0\r\nCSeq: {cseq}\r\nX-GS-ClientVersion: 14\r\nHost: {}\r\n", addr.ip());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let exchange = async {
        let mut s = connect_from(local, addr).await?;
        for piece in req.as_bytes().chunks(536) {
            s.write_all(piece).await.or_err(ErrorKind::Protocol, || "RTSP send")?;
        }
        let mut out = Vec::new();
        (&mut s).take(1 << 20).read_to_end(&mut out).await.or_err(ErrorKind::Protocol, || "RTSP receive")?;
        Ok::<_, Error>(out)
    };
    let raw = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| Error::new(ErrorKind::Protocol, "RTSP: no complete reply within 15 s"))??;
    let text = String::from_utf8(raw).map_err(|_| Error::new(ErrorKind::Protocol, "RTSP reply is not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::new(ErrorKind::Protocol, "RTSP reply has no end of headers"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let (Some("RTSP/1.0"), Some(code), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::new(ErrorKind::Protocol, format!("bad RTSP status line {status:?}")));
    };
    let code = code.parse().map_err(|_| Error::new(ErrorKind::Protocol, "bad RTSP status code"))?;
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) =
            l.split_once(": ").ok_or_else(|| Error::new(ErrorKind::Protocol, format!("bad RTSP header {l:?}")))?;
        if v.starts_with(' ') {
            return Err(Error::new(ErrorKind::Protocol, format!("more than one space after the colon in {l:?}")));
        }
        headers.push((k.to_owned(), v.to_owned()));
    }
    if headers.is_empty() {
        return Err(Error::new(ErrorKind::Protocol, "RTSP reply without headers"));
    }
    Ok(RtspReply { code, headers, body: body.to_owned() })
}
