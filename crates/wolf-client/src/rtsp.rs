//! RTSP as moonlight-common-c sends it: one request per connection, in small pieces, sealed with
//! the launch's rikey when `sessionUrl0` says `rtspenc://`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use wolf_protocol::gcm::Direction;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::http::connect_from;

/// One launched session's RTSP endpoint, as its `sessionUrl0` gave it: `rtsp://ADDR` is plain,
/// `rtspenc://ADDR` seals every message (both ways) with the launch's rikey.
#[derive(Debug)]
pub struct RtspSession {
    pub addr: SocketAddr,
    /// The rikey, when RTSP is encrypted.
    key: Option<[u8; 16]>,
    /// The last sealed message's sequence number (Moonlight counts from 1).
    seq: AtomicU32,
    /// Source address of every connection (None: the OS picks).
    pub local: Option<IpAddr>,
}

impl RtspSession {
    /// From `sessionUrl0` and the rikey the launch sent.
    pub fn from_url(url: &str, rikey: [u8; 16]) -> Result<RtspSession> {
        let (key, rest) = if let Some(rest) = url.strip_prefix("rtspenc://") {
            (Some(rikey), rest)
        } else if let Some(rest) = url.strip_prefix("rtsp://") {
            (None, rest)
        } else {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("sessionUrl0 {url:?} is neither rtsp:// nor rtspenc://"),
            ));
        };
        let addr = rest
            .trim_end_matches('/')
            .parse()
            .map_err(|_| Error::new(ErrorKind::Protocol, format!("sessionUrl0 {url:?}: not HOST:PORT")))?;
        Ok(RtspSession { addr, key, seq: AtomicU32::new(0), local: None })
    }

    pub fn encrypted(&self) -> bool {
        self.key.is_some()
    }

    /// One request on its own connection (sealed if encrypted), and the host's reply.
    pub async fn request(
        &self,
        method: &str,
        target: &str,
        cseq: u32,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<RtspReply> {
        let plain = request_bytes(self.addr, method, target, cseq, headers, body);
        let Some(key) = &self.key else {
            return parse_reply(exchange(self.local, self.addr, &plain).await?);
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let sealed = wolf_protocol::rtsp::seal(key, seq, Direction::ClientToHost, &plain)
            .or_err(ErrorKind::Protocol, || "sealing an RTSP request")?;
        let raw = exchange(self.local, self.addr, &sealed).await?;
        if raw.is_empty() {
            return Err(Error::new(ErrorKind::Protocol, "the host closed without an RTSP reply"));
        }
        let (_, reply) = wolf_protocol::rtsp::open(key, Direction::HostToClient, &raw)
            .or_err(ErrorKind::Protocol, || "opening the host's encrypted RTSP reply")?;
        parse_reply(reply)
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

/// One plain RTSP request on its own connection, sent in 536-byte pieces, read until the host
/// closes (what moonlight-common-c does). Enforces the client's reply rules: `RTSP/1.0 <code> <text>`,
/// at least one header, exactly one space after each colon.
pub async fn rtsp_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    cseq: u32,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<RtspReply> {
    parse_reply(exchange(None, addr, &request_bytes(addr, method, target, cseq, headers, body)).await?)
}

fn request_bytes(
    addr: SocketAddr,
    method: &str,
    target: &str,
    cseq: u32,
    headers: &[(&str, &str)],
    body: &str,
) -> Vec<u8> {
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
    req.into_bytes()
}

/// Send `msg` on a new connection in 536-byte pieces; everything the host sends until it closes.
async fn exchange(local: Option<IpAddr>, addr: SocketAddr, msg: &[u8]) -> Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = connect_from(local, addr).await?;
        for piece in msg.chunks(536) {
            s.write_all(piece).await.or_err(ErrorKind::Protocol, || "RTSP send")?;
        }
        let mut out = Vec::new();
        (&mut s).take(1 << 20).read_to_end(&mut out).await.or_err(ErrorKind::Protocol, || "RTSP receive")?;
        Ok::<_, Error>(out)
    };
    tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| Error::new(ErrorKind::Protocol, "RTSP: no complete reply within 15 s"))?
}

/// A reply by Moonlight's parser rules.
fn parse_reply(raw: Vec<u8>) -> Result<RtspReply> {
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
