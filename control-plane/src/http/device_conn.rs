//! Device calls served without hyper, so a held long-poll costs only what
//! its call needs.
//!
//! Ten thousand devices each hold a long-poll for up to 25 s. Through
//! hyper each held connection kept two 8 KiB buffers: its write buffer,
//! allocated when the connection starts, and its read buffer, reserved
//! again while the call runs to notice the peer closing. So the accept
//! loop reads every request head itself (bounded in size and time):
//! a `POST /v1/device` with one `Content-Length` and nothing unusual is
//! answered here, by the same `call::device` the warp route
//! uses, on a connection that then closes. Anything else (the admin API,
//! `/metrics`, chunked bodies, `Expect`, a malformed or oversized head)
//! goes to hyper with the bytes read so far replayed first, and gets
//! hyper's full HTTP handling as before.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use warp::http::StatusCode;

use super::{plain, AppState, Peer, MAX_BODY};

/// The longest request head read here; a longer one goes to hyper.
const MAX_HEAD: usize = 8 * 1024;
/// The first read's room: a device's head is about 150 bytes.
const FIRST_READ: usize = 512;
/// Headers parsed per request; more go to hyper.
const MAX_HEADERS: usize = 32;
/// How long writing an answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection's first request is.
pub(super) enum Head {
    /// A device call this module answers.
    Device(DeviceRequest),
    /// Anything else: the bytes read so far, for hyper.
    Other(Vec<u8>),
    /// The peer closed (or failed) before sending anything.
    Closed,
}

/// A device call's head, and the start of its body.
pub(super) struct DeviceRequest {
    body: Vec<u8>,
    content_length: usize,
    forwarded_for: Option<String>,
}

/// Reads until the first request's head is complete (or is not a device
/// call). The caller bounds the time.
pub(super) async fn read_head(stream: &mut TcpStream) -> Head {
    let mut buf = Vec::with_capacity(FIRST_READ);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_HEAD {
                return Head::Other(buf);
            }
            buf.reserve(buf.len());
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) if buf.is_empty() => return Head::Closed,
            Ok(0) | Err(_) => return Head::Other(buf),
            Ok(_) => {}
        }
        match classify(&buf) {
            Some(head) => return head,
            None => continue,
        }
    }
}

/// The head in `buf` if it is complete (or already cannot be a device
/// call); None to read more.
fn classify(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // Not a device call from its first line on: no need to wait.
            let device_so_far = req.method.is_none_or(|m| m == "POST")
                && req.path.is_none_or(|p| p == "/v1/device");
            return (!device_so_far).then(|| Head::Other(buf.to_vec()));
        }
        Err(_) => return Some(Head::Other(buf.to_vec())),
    };
    if req.method != Some("POST") || req.path != Some("/v1/device") {
        return Some(Head::Other(buf.to_vec()));
    }
    let forwarded_for = match super::call::forwarded_for(
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|h| h.value),
    ) {
        Ok(f) => f,
        // hyper and warp refuse it, as they always have.
        Err(()) => return Some(Head::Other(buf.to_vec())),
    };
    let mut content_length = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Some(Head::Other(buf.to_vec()));
            }
            content_length = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            if content_length.is_none() {
                return Some(Head::Other(buf.to_vec()));
            }
        } else if ["transfer-encoding", "expect", "upgrade"]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n))
        {
            return Some(Head::Other(buf.to_vec()));
        }
    }
    let content_length = match content_length {
        Some(n) if n <= MAX_BODY => usize::try_from(n).ok()?,
        // No length, or too long: hyper and warp answer as they always have.
        _ => return Some(Head::Other(buf.to_vec())),
    };
    // What has arrived of the body; the rest grows the buffer as it comes
    // (a head claiming 64 KiB and sending nothing holds nothing).
    let rest = &buf[head_len..];
    let body = rest[..rest.len().min(content_length)].to_vec();
    Some(Head::Device(DeviceRequest {
        body,
        content_length,
        forwarded_for,
    }))
}

/// Answers one device call on `stream` and closes it. The call is dropped
/// (its long-poll let go) if the device closes first, as hyper does.
pub(super) async fn serve(
    mut stream: TcpStream,
    mut req: DeviceRequest,
    state: Arc<AppState>,
    peer: SocketAddr,
    request_timeout: Duration,
) {
    let answer = async {
        let missing = req.content_length - req.body.len();
        if missing > 0 {
            let read = (&mut stream)
                .take(missing as u64)
                .read_to_end(&mut req.body)
                .await;
            if read.is_err() || req.body.len() != req.content_length {
                return None;
            }
        }
        let call = super::call::device(
            state.clone(),
            Bytes::from(std::mem::take(&mut req.body)),
            Peer(peer),
            req.forwarded_for.take(),
        );
        tokio::select! {
            r = call => Some(r),
            () = peer_closed(&stream) => None,
        }
    };
    let response = match tokio::time::timeout(request_timeout, answer).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "request timed out"),
    };
    state
        .metrics
        .request("/v1/device", response.status().as_u16());
    let (parts, body) = response.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return;
    };
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or(""),
        body.len()
    );
    // A client that stops reading does not keep its connection's permit.
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write).await;
}

/// Resolves when the peer closes its side (or the connection fails).
/// Bytes it sends meanwhile (a pipelined request) are not read: this
/// connection closes after its one answer.
async fn peer_closed(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut byte) {
            Ok(0) => return,
            Ok(_) => return std::future::pending().await,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
}

/// A connection whose first bytes were already read: they are read again
/// first, then the socket (what hyper reads when the head was not a
/// device call).
pub(super) struct Replay {
    read: Vec<u8>,
    pos: usize,
    stream: TcpStream,
}

impl Replay {
    /// `read` first, then `stream`.
    pub(super) fn new(read: Vec<u8>, stream: TcpStream) -> Self {
        Self {
            read,
            pos: 0,
            stream,
        }
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.read.len() {
            let n = buf.remaining().min(self.read.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.read[start..start + n]);
            self.pos += n;
            if self.pos == self.read.len() {
                self.read = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::{classify, Head};

    fn device(text: &str) -> Option<(Vec<u8>, usize, Option<String>)> {
        match classify(text.as_bytes()) {
            Some(Head::Device(r)) => Some((r.body, r.content_length, r.forwarded_for)),
            _ => None,
        }
    }

    fn other(text: &str) -> bool {
        matches!(classify(text.as_bytes()), Some(Head::Other(b)) if b == text.as_bytes())
    }

    #[test]
    fn a_plain_device_call_is_served_here_with_what_arrived_of_its_body() {
        let (body, len, xff) =
            device("POST /v1/device HTTP/1.1\r\nHost: cp\r\nContent-Length: 5\r\n\r\nabc")
                .expect("a device call");
        assert_eq!((body.as_slice(), len, xff), (&b"abc"[..], 5, None));
        let (body, _, xff) = device(
            "POST /v1/device HTTP/1.1\r\nX-Forwarded-For: 192.0.2.1\r\nx-forwarded-for: 192.0.2.9\r\ncontent-length: 2\r\n\r\nabcdef",
        )
        .expect("a device call");
        assert_eq!(body, b"ab", "bytes past the body are not part of it");
        assert_eq!(
            xff.as_deref(),
            Some("192.0.2.1, 192.0.2.9"),
            "every line, joined, as the warp route reads them"
        );
    }

    #[test]
    fn a_head_claiming_a_long_body_holds_only_what_arrived() {
        let head = "POST /v1/device HTTP/1.1\r\nContent-Length: 65551\r\n\r\nab";
        let Some(Head::Device(r)) = classify(head.as_bytes()) else {
            panic!("a device call");
        };
        assert_eq!(r.content_length, 65_551);
        assert_eq!(r.body, b"ab");
        assert!(
            r.body.capacity() < 1024,
            "{} bytes held for a body that has not arrived",
            r.body.capacity()
        );
    }

    #[test]
    fn an_incomplete_head_of_a_device_call_waits_for_more() {
        assert!(classify(b"POST /v1/device HTTP/1.1\r\nContent-Le").is_none());
        assert!(classify(b"PO").is_none());
    }

    #[test]
    fn everything_else_goes_to_hyper_with_every_byte_read() {
        for text in [
            "GET /metrics HTTP/1.1\r\n\r\n",
            "POST /v1/admin HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            "POST /v1/device/ HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            "POST /v1/device?x=1 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            "POST /v1/device HTTP/1.1\r\n\r\n",
            "POST /v1/device HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            "POST /v1/device HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            "POST /v1/device HTTP/1.1\r\nContent-Length: +1\r\n\r\nx",
            "POST /v1/device HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST /v1/device HTTP/1.1\r\nContent-Length: 65552\r\n\r\n",
            "POST /v1/device HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST /v1/device HTTP/1.1\r\nBad Header\r\n\r\n",
            "POST /v1/device HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\x01\r\nContent-Length: 0\r\n\r\n",
            "POST /v1/device HTTP/1.1\r\nX-Forwarded-For: caf\u{e9}\r\nContent-Length: 0\r\n\r\n",
            "GET /v1/dev",
            "\x16\x03\x01\x02\x00",
        ] {
            assert!(other(text), "{text:?} should go to hyper");
        }
    }

    #[test]
    fn a_head_with_more_headers_than_parsed_here_goes_to_hyper() {
        let mut text = String::from("POST /v1/device HTTP/1.1\r\n");
        for i in 0..40 {
            text.push_str(&format!("X-{i}: y\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        assert!(other(&text));
    }
}
