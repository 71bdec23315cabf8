//! Device calls are read and answered without hyper (a held long-poll then
//! costs a few KiB, not hyper's two 8 KiB buffers). These tests hold that
//! path to what hyper did: a device that hangs up lets its poll go,
//! unusual requests still get hyper's answers, and an idle connection
//! does not hold up shutdown.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use support_protocol::control_channel::ClientCall;
use support_protocol::messages::device::PollRequest;
use support_protocol::messages::{DeviceReply, DeviceRequest, DeviceResponse};
use support_protocol::state::TunnelState;

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.url.trim_start_matches("http://")).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s
}

/// The status line and body of the one answer on `s` (read to its close).
fn answer(mut s: TcpStream) -> (String, Vec<u8>) {
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("reads to the close");
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    (head, all[split + 4..].to_vec())
}

/// `body`, opened with the call's state, is the answer "created".
fn assert_created(cc: ClientCall, body: &[u8]) {
    let reply: DeviceReply =
        support_protocol::decode(&cc.finish(body).expect("opens")).expect("decodes");
    assert!(
        matches!(reply.result, Ok(DeviceResponse::Created { .. })),
        "{reply:?}"
    );
}

#[test]
fn a_device_that_hangs_up_lets_its_long_poll_go() {
    let server = Server::start(&[]);
    let c = server.client();
    let d = Device::requested(&c);
    let (_, body) = c.device_body(
        &d.cred(),
        &device_call(DeviceRequest::Poll(PollRequest {
            tunnel_id: d.id(),
            known: TunnelState::Pending,
            wait_secs: 25,
        })),
    );
    let mut s = connect(&server);
    write!(
        s,
        "POST /v1/device HTTP/1.1\r\nHost: cp\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("writes");
    s.write_all(&body).expect("writes");
    server.wait_for_long_polls(1);
    drop(s);
    // Well before the poll's 25 s: the server noticed the close.
    server.wait_for_long_polls(0);
}

#[test]
fn a_device_call_split_across_writes_is_answered_and_the_connection_closes() {
    let server = Server::start(&[]);
    let c = server.client();
    let d = Device::new();
    let (cc, body) = c.device_body(&d.cred(), &device_call(d.create_req()));
    let mut s = connect(&server);
    let head = format!(
        "POST /v1/device HTTP/1.1\r\nHost: cp\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let whole = [head.as_bytes(), &body].concat();
    // The head and body in four pieces, each its own segment.
    s.set_nodelay(true).expect("nodelay");
    for piece in whole.chunks(whole.len() / 4 + 1) {
        s.write_all(piece).expect("writes");
        s.flush().expect("flushes");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (head, body) = answer(s);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_created(cc, &body);
}

/// Reads one response head (up to its blank line) from `s`.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("reads a head");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn a_device_call_with_expect_continue_is_answered_by_hyper_after_the_replayed_head() {
    let server = Server::start(&[]);
    let c = server.client();
    let d = Device::new();
    let (cc, body) = c.device_body(&d.cred(), &device_call(d.create_req()));
    let mut s = connect(&server);
    // The head is read here, then replayed to hyper, which answers the
    // Expect before the body is sent.
    write!(
        s,
        "POST /v1/device HTTP/1.1\r\nHost: cp\r\nExpect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("writes");
    let interim = read_head(&mut s);
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    s.write_all(&body).expect("writes the body");
    let (head, reply) = answer(s);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_created(cc, &reply);
}

#[test]
fn a_chunked_device_call_and_the_admin_api_get_warp_answers_as_before() {
    let server = Server::start(&[]);
    // warp wants a Content-Length, and says so on seeing the head.
    let mut s = connect(&server);
    s.write_all(
        b"POST /v1/device HTTP/1.1\r\nHost: cp\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .expect("writes");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 411"), "{head}");

    // The admin API goes to hyper with its head and body replayed.
    let mut s = connect(&server);
    s.write_all(
        b"POST /v1/admin HTTP/1.1\r\nHost: cp\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .expect("writes");
    let (head, text) = answer(s);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        String::from_utf8_lossy(&text).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&text)
    );
}

#[test]
fn an_idle_connection_does_not_hold_up_shutdown() {
    let mut server = Server::start(&[]);
    // Connected, nothing sent: waiting for a head it will never get.
    let idle = connect(&server);
    // The server has accepted it when a request after it is answered.
    assert_eq!(get(&server.url, "/healthz").status, 200);
    let start = Instant::now();
    server.stop();
    let took = start.elapsed();
    drop(idle);
    // The header timeout is 10 s; shutdown did not wait for it.
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
}
