//! Just enough HTTP/1.1 for the test doubles that stand in for servers the
//! tests cannot run for real (a lying control plane, the Compute Engine API):
//! one request per connection, `content-length` bodies, `connection: close`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request as received.
pub struct Request {
    /// GET, POST, DELETE.
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// The `authorization` header, if any.
    pub authorization: Option<String>,
    /// Every header, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Reads one request (blocking, 5 s per read); `None` if the client goes away.
pub fn read_request(stream: &mut TcpStream) -> Option<Request> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut lines = head.lines();
        let mut first = lines.next()?.split_whitespace();
        let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
        let (mut len, mut authorization, mut headers) = (0, None, Vec::new());
        for l in lines {
            let (k, v) = l.split_once(':')?;
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            match k.as_str() {
                "content-length" => len = v.parse().ok()?,
                "authorization" => authorization = Some(v.clone()),
                _ => {}
            }
            headers.push((k, v));
        }
        while buf.len() < end + 4 + len {
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Some(Request {
            method,
            path,
            authorization,
            headers,
            body: buf[end + 4..end + 4 + len].to_vec(),
        });
    }
}

/// Writes a whole response and lets the connection close.
pub fn respond(stream: &mut TcpStream, status: u16, body: &[u8]) {
    let reason = if status < 400 { "OK" } else { "Error" };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(body);
}
