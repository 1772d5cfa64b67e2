//! One HTTP/1.1 request and its whole reply, over plain TCP or TLS, from a chosen source address.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wolf_protocol::xml;

use crate::error::{ErrorKind, Result, ResultExt};

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
