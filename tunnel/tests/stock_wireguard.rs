//! Our peer and a stock wireguard-go peer (in a network namespace) talk
//! directly, each side initiating once.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use support_testkit::{free_udp_port, require_root_and_wireguard, wg_key, Host};
use support_tunnel::{BufferProfile, Engine, EngineConfig, Event, Forward, Role};

use common::next_event;

fn b64(key: &str) -> [u8; 32] {
    // wg's keys are standard base64 of 32 bytes.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in key.trim().bytes().filter(|c| *c != b'=') {
        let v = A.iter().position(|a| *a == c).expect("base64") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out.try_into().expect("32 bytes")
}

/// Sends 1 MB through `via` to a server that answers with its SHA-256
/// (hex); on failure, what went wrong.
fn send_and_check(via: SocketAddr) -> Result<(), String> {
    let data: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut s = TcpStream::connect(via).map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    s.write_all(&data).map_err(|e| format!("write: {e}"))?;
    s.shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut got = String::new();
    let read = s.read_to_string(&mut got);
    let want: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got == want {
        Ok(())
    } else {
        Err(format!("answer {got:?} ({read:?})"))
    }
}

#[test]
fn our_admin_peer_initiates_to_wireguard_go() {
    require_root_and_wireguard();
    let (ours, theirs) = (wg_key(), wg_key());
    let mut host = Host::new();
    let (their_ip, our_ip) = (Ipv4Addr::new(10, 96, 0, 2), Ipv4Addr::new(10, 96, 0, 3));
    let port = free_udp_port();
    // No endpoint for us: wireguard-go cannot initiate, only answer.
    host.wireguard_with(&theirs, their_ip, &ours.public, None, our_ip, Some(port));
    let (tx, rx) = mpsc::channel();
    let config = EngineConfig {
        private_key: b64(&ours.private),
        peer_public: b64(&theirs.public),
        psk: [0; 32],
        endpoint: SocketAddr::from((host.ns_ip, port)),
        bind: "0.0.0.0:0".parse().expect("addr"),
        local_ip: our_ip,
        peer_ip: their_ip,
        prefix_len: 24,
        keepalive_secs: 5,
        profile: BufferProfile::ADMIN,
        role: Role::Admin,
        random: 42,
    };
    let (handle, thread) = Engine::spawn(config, Some(tx)).expect("engine");
    let up = next_event(&rx, Duration::from_secs(20), |e| *e == Event::TunnelUp);
    let local = handle
        .forward_local("127.0.0.1:0".parse().expect("addr"), 7000)
        .expect("forward");
    // One transfer is the point; a second (with a fresh server, which
    // serves one connection) is allowed and reported, because CI once saw
    // the first stall for its whole 20 s right after the handshake, which
    // no idle or loaded run here reproduced.
    let mut failed = Vec::new();
    let mut ok = false;
    if up.is_some() {
        for _ in 0..2 {
            let mut server = host.hash_server(their_ip);
            let sent = send_and_check(local);
            let _ = server.kill();
            let _ = server.wait();
            match sent {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(e) => {
                    eprintln!("transfer through our admin peer failed: {e}");
                    failed.push(e);
                }
            }
        }
    }
    handle.shutdown();
    let _ = thread.join();
    assert!(up.is_some(), "wireguard-go never answered our handshake");
    assert!(
        ok,
        "no transfer between our admin peer and wireguard-go: {failed:?}"
    );
}

/// Binds UDP `port` inside `host`'s namespace, runs `then`, and returns
/// the first byte (WireGuard's message type) of the first datagram that
/// arrives there; the port is free again on return.
fn first_datagram_at(host: &Host, port: u16, then: impl FnOnce()) -> Option<u8> {
    const PY: &str = "import socket,sys\n\
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', int(sys.argv[1])))\n\
s.settimeout(10); print('bound', flush=True)\n\
print(s.recv(2048)[0], flush=True)\n";
    let mut child = host
        .exec(&["python3", "-c", PY, &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("listener starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let bound = lines.next().and_then(Result::ok);
    assert_eq!(bound.as_deref(), Some("bound"), "the listener did not bind");
    then();
    let first = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.parse().ok());
    let _ = child.wait();
    first
}

#[test]
fn wireguard_go_initiates_to_our_device_peer() {
    require_root_and_wireguard();
    let (ours, theirs) = (wg_key(), wg_key());
    let mut host = Host::new();
    let (our_ip, their_ip) = (Ipv4Addr::new(10, 95, 0, 2), Ipv4Addr::new(10, 95, 0, 3));
    let (our_port, their_port) = (free_udp_port(), free_udp_port());
    // A local service behind our device peer: answers with the SHA-256 of what it got.
    let svc = TcpListener::bind("127.0.0.1:0").expect("binds");
    let target = svc.local_addr().expect("addr");
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = svc.accept() {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            while buf.len() < 1_000_000 {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let hex: String = Sha256::digest(&buf)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let _ = s.write_all(hex.as_bytes());
        }
    });
    let (tx, rx) = mpsc::channel();
    let config = EngineConfig {
        private_key: b64(&ours.private),
        peer_public: b64(&theirs.public),
        psk: [0; 32],
        endpoint: SocketAddr::from((host.ns_ip, their_port)),
        bind: SocketAddr::from((host.host_ip, our_port)),
        local_ip: our_ip,
        peer_ip: their_ip,
        prefix_len: 24,
        keepalive_secs: 25,
        profile: BufferProfile::DEVICE,
        role: Role::Device {
            forwards: vec![Forward { port: 7000, target }],
        },
        random: 7,
    };
    // Our peer starts first: its own initiation finds nobody to answer it.
    let mut engine = None;
    let first = first_datagram_at(&host, their_port, || {
        engine = Some(Engine::spawn(config, Some(tx)).expect("engine"));
    });
    let (handle, thread) = engine.expect("engine");
    assert_eq!(
        first,
        Some(1),
        "our peer's first datagram is its initiation"
    );
    // wireguard-go comes up knowing our endpoint, and initiates.
    host.wireguard_with(
        &theirs,
        their_ip,
        &ours.public,
        Some(SocketAddr::from((host.host_ip, our_port))),
        our_ip,
        Some(their_port),
    );
    let out = host.hash_client(our_ip);
    // The device side logs the connection once both ends have closed it.
    let mut seen = Vec::new();
    let closed = next_event(&rx, Duration::from_secs(30), |e| {
        seen.push(e.clone());
        matches!(e, Event::Closed { .. })
    });
    handle.shutdown();
    let _ = thread.join();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "ok",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(seen.contains(&Event::TunnelUp), "{seen:?}");
    assert!(
        matches!(
            closed,
            Some(Event::Closed {
                port: 7000,
                bytes_out: 64,
                ..
            })
        ),
        "{closed:?}"
    );
}
