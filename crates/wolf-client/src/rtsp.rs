//! RTSP as moonlight-common-c sends it: one request per connection, in small pieces.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::http::connect_from;

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
