//! One HTTP/1.1 request and its whole answer over any stream: what the CLI sends to the running
//! host (the API unix socket, the health port for `healthcheck`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ErrorKind, Result, ResultExt};

/// Send `method path` with an optional JSON `body` over `io`; (status, body as text). Errors carry
/// `kind` and name the peer as `what` ("api", "health").
pub async fn request<IO>(
    io: IO,
    method: Method,
    path: &str,
    body: Option<String>,
    kind: ErrorKind,
    what: &str,
) -> Result<(StatusCode, String)>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.or_err(kind, || format!("{what} handshake"))?;
    let driver = tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "wolf-rs")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .or_err(kind, || format!("building the {what} request"))?;
    let resp = sender.send_request(req).await.or_err(kind, || format!("{what} request"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.or_err(kind, || format!("{what} reply"))?.to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
