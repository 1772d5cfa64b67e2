//! A Moonlight-like client of one host: the five pairing steps, serverinfo, applist, launch.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use wolf_protocol::pairing::{CertInfo, client::ClientPairing, random16};
use wolf_protocol::xml;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::http::{Reply, connect_from, exchange};
use crate::identity::ClientIdentity;
use crate::rtsp::RtspSession;
use crate::tls::tls_config;

/// What every Moonlight client sends as `uniqueid`.
pub const MOONLIGHT_UNIQUEID: &str = "0123456789ABCDEF";

/// A launch's answer and the rikey it sent: RTSP (when encrypted), control and audio use it.
#[derive(Debug, Clone)]
pub struct Launched {
    pub reply: Reply,
    pub rikey: [u8; 16],
}

impl Launched {
    /// The session's RTSP endpoint, from `sessionUrl0`.
    pub fn rtsp(&self) -> Result<RtspSession> {
        let url = self
            .reply
            .field("sessionUrl0")
            .ok_or_else(|| Error::new(ErrorKind::Protocol, format!("no sessionUrl0 in {}", self.reply.text())))?;
        RtspSession::from_url(&url, self.rikey)
    }
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
    pub async fn launch(&self, app: &str, mode: &str) -> Result<Launched> {
        let rikey = random16().or_err(ErrorKind::Protocol, || "rikey")?;
        let reply = self.https_get(&self.launch_url(app, mode, &hex::encode(rikey))).await?;
        Ok(Launched { reply, rikey })
    }

    /// The `/launch` path and query Moonlight sends for `app` in `mode` with `rikey_hex` (rikeyid 1).
    pub fn launch_url(&self, app: &str, mode: &str, rikey_hex: &str) -> String {
        self.url(
            "/launch",
            &[
                ("appid", app),
                ("mode", mode),
                ("additionalStates", "1"),
                ("sops", "0"),
                ("rikey", rikey_hex),
                ("rikeyid", "1"),
                ("localAudioPlayMode", "0"),
                ("surroundAudioInfo", "196610"),
                ("corever", "1"),
            ],
        )
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
