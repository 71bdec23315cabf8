//! Abuse the control plane was found open to in review, against the real
//! binary over HTTP: an IPv6 /64 spending the global create budget, long
//! polls held on tunnels that have ended, approvals from an engineer whose
//! certificate expired but who is still enrolled, and a low open-file limit.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use support_protocol::fixtures::{self, Terms};
use support_protocol::messages::device::PollRequest;
use support_protocol::messages::DeviceRequest;
use support_protocol::messages::{DeviceResponse, ErrorCode};
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::AdminTunnelKeys;
use support_protocol::ApprovalSeq;

/// A create posted as if from `client` (behind the trusted proxy 127.0.0.1).
fn create_from(server: &Server, client: &str) -> u16 {
    let d = Device::new();
    let body = d.create_body(&server.client());
    minreq::post(format!("{}/v1/device", server.url))
        .with_header("X-Forwarded-For", client)
        .with_body(body)
        .with_timeout(10)
        .send()
        .expect("answered")
        .status_code as u16
}

#[test]
fn an_ipv6_64_flood_cannot_spend_the_global_create_budget() {
    let server = Server::start(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--creates-per-minute-per-address",
        "3",
        "--creates-per-minute",
        "20",
    ]);
    // One host with a /64 (a home router hands out every address in it).
    let flood: Vec<u16> = (1..=60)
        .map(|n| create_from(&server, &format!("2001:db8:1:2::{n:x}")))
        .collect();
    let accepted = flood.iter().filter(|s| **s == 200).count();
    assert!(accepted <= 5, "the /64 got {accepted} creates: {flood:?}");
    assert!(flood.iter().all(|s| *s == 200 || *s == 429), "{flood:?}");
    // Other devices, each in its own /64 (and an IPv4 one), still get theirs.
    let others: Vec<u16> = (1..=8)
        .map(|n| create_from(&server, &format!("2001:db8:2:{n:x}::1")))
        .chain(std::iter::once(create_from(&server, "198.51.100.7")))
        .collect();
    assert!(others.iter().all(|s| *s == 200), "{others:?}");
}

#[test]
fn a_poll_on_an_ended_tunnel_is_answered_at_once() {
    let (server, c, admin) = Server::with_approver(&[]);
    let d = Device::requested(&c);
    ok_admin(c.admin_req(&admin, stop_req(d.id())));
    let ended = match ok_device(d.poll(&c, TunnelState::Pending, 0)) {
        DeviceResponse::Poll { state, .. } => state,
        other => panic!("{other:?}"),
    };
    assert!(ended.kind().is_terminal(), "{ended:?}");
    // The device (or a replayer) says it knows the end and would wait 25 s:
    // nothing can change any more, so the answer comes now.
    let started = std::time::Instant::now();
    match ok_device(d.poll(&c, ended, 25)) {
        DeviceResponse::Poll { state, .. } => assert_eq!(state, ended),
        other => panic!("{other:?}"),
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "held for {took:?}");
    assert!(server
        .metrics()
        .contains("support_cp_long_polls_waiting 0\n"));
}

/// What `support-admin approve` posts, signed by a key the CA certified as
/// `name` for `[not_before, not_after]`, issued (by the approver's clock)
/// at `issued_at`.
fn approval_by(
    ca_seed: [u8; 32],
    name: &str,
    window: (u64, u64),
    issued_at: u64,
    d: &Device,
) -> support_protocol::approval_box::SealedApproval {
    let approvers = fixtures::Approvers::new(ca_seed, seed(), name, window.0, window.1);
    let terms = Terms {
        duration_secs: 600,
        ..Terms::new(issued_at)
    };
    approvers.approve(
        &d.keys,
        &AdminTunnelKeys::from_seed(seed()),
        &terms,
        ApprovalSeq(1),
    )
}

#[test]
fn an_expired_certificate_is_refused_at_the_control_plane_even_with_the_posters_clock_set_back() {
    let ca_seed = seed();
    let ca_key = fixtures::Approvers::new(ca_seed, seed(), "x", 0, 1).ca_key();
    let (_server, c, admin) = Server::with_approver(&["--support-ca-key", &hex::encode(ca_key)]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let day = 86_400;
    let d = Device::requested(&c);
    let approve = |a| c.admin_req(&admin, approve_req(&d, None, a));
    let refused = |r: (u16, support_protocol::messages::AdminReply)| {
        assert_eq!(r.0, 403, "{r:?}");
        let e = r.1.result.expect_err("refused");
        assert_eq!(e.code, ErrorCode::Forbidden, "{e:?}");
        e.message.as_str().to_string()
    };

    // Alice's certificate ended yesterday; her laptop's clock says last week.
    let why = refused(approve(approval_by(
        ca_seed,
        "alice",
        (now - 30 * day, now - day),
        now - 7 * day,
        &d,
    )));
    assert!(why.contains("expired"), "{why}");
    // Another CA's certificate, and Bob's approval posted by Alice.
    let why = refused(approve(approval_by(
        seed(),
        "alice",
        (now - day, now + day),
        now,
        &d,
    )));
    assert!(why.contains("pinned"), "{why}");
    let why = refused(approve(approval_by(
        ca_seed,
        "bob",
        (now - day, now + day),
        now,
        &d,
    )));
    assert!(why.contains("certified for bob, not by alice"), "{why}");
    // Nothing was stored: the request is still pending, and a valid approval goes in.
    match ok_device(d.poll(&c, TunnelState::Pending, 0)) {
        DeviceResponse::Poll { state, .. } => assert_eq!(state, TunnelState::Pending),
        other => panic!("{other:?}"),
    }
    ok_admin(approve(approval_by(
        ca_seed,
        "alice",
        (now - day, now + day),
        now,
        &d,
    )));
}

#[test]
fn the_open_file_limit_is_raised_at_start_and_logged() {
    let dir = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new("prlimit")
        .args(["--nofile=256:8192", "--"])
        .arg(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data",
        ])
        .arg(dir.path())
        .env("SUPPORT_CP_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prlimit runs the control plane");
    let pid = out.id();
    let mut child = out;
    // Wait for the line that says it serves: by then the limit is set.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first = lines.next().expect("a line").expect("read");
    assert!(first.starts_with("listening on "), "{first}");
    let now = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let open_files = now
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the line")
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(&open_files[3..5], &["8192", "8192"], "{now}");
    let _ = child.kill();
    let out = child.wait_with_output().expect("ends");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("open-file limit raised")
            && log.contains("\"from\":\"256\"")
            && log.contains("\"to\":\"8192\""),
        "{log}"
    );
}

/// A connection to `to` from the local address `from` (a loopback alias:
/// another client address on this machine).
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stream = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(SocketAddr::new(from, 0)).expect("bind");
        s.connect(to).await.expect("connect")
    });
    let std = stream.into_std().expect("std");
    std.set_nonblocking(false).expect("blocking");
    std.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    std
}

/// One HTTP request on `s` (`Connection: close`): its status and body.
fn exchange(mut s: TcpStream, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: cp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(body).expect("body");
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("answer");
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole answer");
    let status = String::from_utf8_lossy(&all[9..12])
        .parse()
        .expect("status");
    (status, all[end + 4..].to_vec())
}

/// Raises this test process's own open-file limit (root may).
fn allow_open_files(n: u32) {
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string()])
        .arg(format!("--nofile={n}:{n}"))
        .status()
        .expect("prlimit");
    assert!(st.success());
}

#[test]
fn one_address_holding_5000_connections_replaying_one_poll_cannot_lock_out_another() {
    allow_open_files(20_000);
    // /metrics on its own listener: the flood fills the API's accept queue,
    // and the watcher must not wait behind it.
    let metrics_at: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (server, c, _admin) = Server::with_approver(&[
        "--max-connections",
        "1000",
        "--max-connections-per-address",
        "200",
        "--max-polls-per-address",
        "50",
        "--metrics-listen",
        &metrics_at.to_string(),
    ]);
    let to: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let other: IpAddr = "127.0.0.2".parse().expect("ip");
    // A real device's long-poll, captured once and replayed on every connection.
    let victim = Device::requested(&c);
    let (_, poll) = c.device_body(
        &victim.cred(),
        &device_call(DeviceRequest::Poll(PollRequest {
            tunnel_id: victim.id(),
            known: support_protocol::state::TunnelState::Pending,
            wait_secs: 25,
        })),
    );
    let mut request = format!(
        "POST /v1/device HTTP/1.1\r\nHost: cp\r\nContent-Length: {}\r\n\r\n",
        poll.len()
    )
    .into_bytes();
    request.extend_from_slice(&poll);
    // 5,000 connections from 127.0.0.1 (the loopback's own address), then
    // the replay on each at once: every poll is sent within its 25 s.
    let mut held: Vec<TcpStream> = (0..5000)
        .filter_map(|_| TcpStream::connect(to).ok())
        .collect();
    for s in &mut held {
        let _ = s.write_all(&request);
    }
    // The attacker's network holds its share of polls, no more.
    let metrics = || {
        let s = connect_from(other, metrics_at);
        String::from_utf8_lossy(&exchange(s, "GET", "/metrics", b"").1).into_owned()
    };
    // All three counted: the polls held, the connections past the cap
    // turned away, and the polls past the poll cap refused (the last of
    // which may come after the 50th is held).
    let mut m = String::new();
    wait_for(
        "the attacker's polls to be held and the rest refused",
        || {
            m = metrics();
            m.contains("support_cp_long_polls_waiting 50\n")
                && m.contains("route=\"address-connection-cap\",status=\"503\"")
                && m.contains("route=\"long-poll-cap\",status=\"429\"")
        },
    );
    assert!(m.contains("support_cp_long_polls_waiting 50\n"), "{m}");
    // Another address creates a tunnel and polls it, while all that is held.
    let d = Device::new();
    let (cc, body) = c.device_body(&d.cred(), &device_call(d.create_req()));
    let (status, answer) = exchange(connect_from(other, to), "POST", "/v1/device", &body);
    assert_eq!(status, 200);
    let reply: support_protocol::messages::DeviceReply =
        support_protocol::decode(&cc.finish(&answer).expect("opens")).expect("decodes");
    assert!(
        matches!(reply.result, Ok(DeviceResponse::Created { .. })),
        "{reply:?}"
    );
    let (cc, body) = c.device_body(
        &d.cred(),
        &device_call(DeviceRequest::Poll(PollRequest {
            tunnel_id: d.id(),
            known: support_protocol::state::TunnelState::Pending,
            wait_secs: 0,
        })),
    );
    let (status, answer) = exchange(connect_from(other, to), "POST", "/v1/device", &body);
    assert_eq!(status, 200);
    let reply: support_protocol::messages::DeviceReply =
        support_protocol::decode(&cc.finish(&answer).expect("opens")).expect("decodes");
    assert!(
        matches!(reply.result, Ok(DeviceResponse::Poll { .. })),
        "{reply:?}"
    );
    drop(held);
}
