//! Two stock WireGuard peers (wireguard-go, in network namespaces) talk
//! through support-relay unchanged; a third party gets nothing forwarded.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;

/// Two wireguard-go peers in their own namespaces, on `10.<net>.0.2/.3`,
/// both pointed at a relay listening on the host at `relay_port`.
struct Peers {
    device: Host,
    admin: Host,
    dip: Ipv4Addr,
}

impl Peers {
    fn start(kd: &WgKey, ka: &WgKey, relay_port: u16, net: u8) -> Peers {
        let mut device = Host::new();
        let mut admin = Host::new();
        let (dip, aip) = (Ipv4Addr::new(10, net, 0, 2), Ipv4Addr::new(10, net, 0, 3));
        device.wireguard(
            kd,
            dip,
            &ka.public,
            (device.host_ip, relay_port).into(),
            aip,
        );
        admin.wireguard(ka, aip, &kd.public, (admin.host_ip, relay_port).into(), dip);
        Peers { device, admin, dip }
    }

    /// The device side serves; the admin side sends 1 MB and checks its hash.
    /// Returns the client's verdict ("ok" when the checksum matched).
    fn transfer(&self) -> String {
        let mut server = self.device.hash_server(self.dip);
        let out = self.admin.hash_client(self.dip);
        let _ = server.kill();
        let _ = server.wait();
        let verdict = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if verdict != "ok" {
            eprintln!("client: {verdict} {}", String::from_utf8_lossy(&out.stderr));
        }
        verdict
    }
}

#[test]
fn two_wireguard_go_peers_talk_through_the_relay_and_a_stranger_gets_nothing() {
    require_root_and_wireguard();
    let (kd, ka) = (wg_key(), wg_key());
    let relay = RelayProc::start(&kd.public, &ka.public, "0.0.0.0:0", 120);
    let peers = Peers::start(&kd, &ka, relay.port, 99);

    // A third party floods the relay with junk and data-shaped datagrams.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").expect("binds");
    stranger
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut junk = vec![0u8; 64];
    junk[0] = 4;
    for _ in 0..200 {
        let _ = stranger.send_to(&junk, ("127.0.0.1", relay.port));
        let _ = stranger.send_to(b"hello", ("127.0.0.1", relay.port));
    }

    let start = Instant::now();
    assert_eq!(peers.transfer(), "ok", "transfer through the relay failed");
    eprintln!(
        "1 MB through the relay between two wireguard-go peers, checksum intact, in {:?}",
        start.elapsed()
    );

    // Nothing came back to the stranger.
    let mut buf = [0u8; 2048];
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "the relay forwarded something to a stranger"
    );
}

#[test]
fn after_the_relay_restarts_traffic_flows_again_within_60_s() {
    require_root_and_wireguard();
    let (kd, ka) = (wg_key(), wg_key());
    let port = free_udp_port();
    let listen = format!("0.0.0.0:{port}");
    let relay = RelayProc::start(&kd.public, &ka.public, &listen, 300);
    let peers = Peers::start(&kd, &ka, port, 98);
    let transfer = || peers.transfer();
    assert_eq!(transfer(), "ok");
    drop(relay);
    let _relay = RelayProc::start(&kd.public, &ka.public, &listen, 300);
    let start = Instant::now();
    let mut result = transfer();
    while result != "ok" && start.elapsed() < Duration::from_secs(60) {
        result = transfer();
    }
    assert_eq!(result, "ok", "no traffic 60 s after the relay restarted");
    eprintln!(
        "traffic flowed again {:?} after the relay restarted",
        start.elapsed()
    );
}

/// The process state letter from /proc/PID/stat ('T' when stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn wait_for_state(pid: u32, stopped: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while (process_state(pid) == Some('T')) != stopped {
        assert!(Instant::now() < deadline, "the relay did not change state");
        std::thread::yield_now();
    }
}

#[test]
fn a_relay_stopped_and_continued_keeps_relaying() {
    // Linux ends a receive with a timeout in EINTR when the process is
    // stopped and continued (signal(7)); the relay used to exit on it (seen
    // as a benchmark's tunnel going silent at once).
    require_root_and_wireguard();
    let (kd, ka) = (wg_key(), wg_key());
    let mut relay = RelayProc::start(&kd.public, &ka.public, "0.0.0.0:0", 120);
    let peers = Peers::start(&kd, &ka, relay.port, 97);
    assert_eq!(peers.transfer(), "ok");
    let pid = relay.child.id();
    for _ in 0..3 {
        sh(&["kill", "-STOP", &pid.to_string()]);
        wait_for_state(pid, true);
        sh(&["kill", "-CONT", &pid.to_string()]);
        wait_for_state(pid, false);
    }
    assert_eq!(
        peers.transfer(),
        "ok",
        "no traffic after a stop and continue"
    );
    assert!(
        relay.child.try_wait().expect("wait").is_none(),
        "the relay exited after being stopped and continued"
    );
}

#[test]
fn the_relay_exits_when_its_lifetime_is_over() {
    let (kd, ka) = (wg_key(), wg_key());
    let mut relay = RelayProc::start(&kd.public, &ka.public, "127.0.0.1:0", 1);
    let start = Instant::now();
    loop {
        if let Some(status) = relay.child.try_wait().expect("waits") {
            assert!(status.success());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "relay still running past its lifetime"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_arguments_get_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_support-relay"))
        .args([
            "--device-key",
            "not base64!",
            "--admin-key",
            "x",
            "--lifetime",
            "5",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--device-key is not base64"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_support-relay"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("required"));
}

#[test]
fn a_peer_that_changes_its_source_port_keeps_working() {
    require_root_and_wireguard();
    let (kd, ka) = (wg_key(), wg_key());
    let relay = RelayProc::start(&kd.public, &ka.public, "0.0.0.0:0", 300);
    let peers = Peers::start(&kd, &ka, relay.port, 97);
    let transfer = || peers.transfer();
    assert_eq!(transfer(), "ok");
    // The admin's NAT rebinds: a new source port.
    let iface = peers.admin.wg_iface().expect("wireguard up");
    let new_port = free_udp_port().to_string();
    let status = peers
        .admin
        .exec(&["wg", "set", &iface, "listen-port", &new_port])
        .status()
        .expect("wg set");
    assert!(status.success());
    let start = Instant::now();
    let result = transfer();
    let took = start.elapsed();
    assert_eq!(result, "ok", "no traffic after the source port changed");
    assert!(
        took <= Duration::from_secs(60),
        "traffic flowed again only after {took:?}"
    );
    eprintln!("traffic flowed again {took:?} after the admin's source port changed");
}
