//! Data-plane benchmark (a bench binary, not a test): iperf3 through our
//! path and through two stock wireguard-go peers, in the same run.
//!
//! * **Ours**: iperf3 client -> `forward_local` on our admin peer (in this
//!   process) -> the relay -> our device peer (a child process, the DEVICE
//!   buffer profile) -> an iperf3 server on 127.0.0.1.
//! * **The pair**: an iperf3 client in one network namespace -> wireguard-go
//!   and kernel TCP -> the same relay -> wireguard-go in another namespace
//!   -> an iperf3 server there (needs root and wireguard-go; skipped with a
//!   note otherwise).
//!
//! Each path moves data for `BENCH_SECS` (default 10) seconds each way: up
//! is the engineer's side sending to the device (iperf3's default), down is
//! `-R`. The device side's CPU is that one process's own user + system time
//! (`/proc/PID/stat`) per GiB iperf3 received: our device peer, or the
//! device's wireguard-go (whose kernel TCP work is not in it). Our device
//! peer's resident memory is shown idle, with 20 open idle connections, and
//! at its peak (VmHWM) over both runs.
//!
//! `BENCH_DEVICE_RX` / `BENCH_DEVICE_TX` (KiB) try other device buffers;
//! `BENCH_DIRECTIONS=up` (or `down`) runs one way only; `BENCH_PAIR=0`
//! leaves the pair out. `BENCH_PERF=FILE` records our device peer with `perf record -g` while
//! iperf3 runs (`perf report -i FILE` reads it).
//!
//! `cargo bench -p support-tunnel --bench throughput`

mod common;
use common::{admin_peer_config, b64_32, public, random32, spawn_device_peer};
use support_testkit::load::{iperf3_run as run, iperf3_server, status_kib, Run};
use support_testkit::{have, world::free_tcp_port};

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support_relay::relay::RelayConfig;
use support_tunnel::{BufferProfile, Engine, Event};

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

/// A service that greets each connection with one byte and then holds it
/// open, reading nothing.
fn idle_sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in l.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut s, b"+");
            held.push(s);
        }
    });
    addr
}

/// Whether `BENCH_DIRECTIONS` (default `up,down`) includes `d`.
fn directions(d: &str) -> bool {
    let v = env("BENCH_DIRECTIONS");
    v.is_empty() || v.split(',').any(|x| x == d)
}

fn print_row(name: &str, up: &Option<Run>, down: &Option<Run>, extra: &str) {
    let show = |r: &Option<Run>, f: fn(&Run) -> f64| {
        r.as_ref()
            .map(|r| format!("{:6.2}", f(r)))
            .unwrap_or_else(|| "     -".into())
    };
    println!(
        "{name:<30} up {} MB/s, down {} MB/s | device CPU {} s/GB up, {} s/GB down{extra}",
        show(up, |r| r.mb_s),
        show(down, |r| r.mb_s),
        show(up, |r| r.cpu_s_gb),
        show(down, |r| r.cpu_s_gb),
    );
}

/// The child process: one device peer, until stdin closes.
fn device_peer_child() {
    let mut profile = if env("BENCH_PROFILE") == "admin" {
        BufferProfile::ADMIN
    } else {
        BufferProfile::DEVICE
    };
    // Other sizes to try (KiB).
    if let Ok(k) = env("BENCH_DEVICE_RX").parse::<usize>() {
        profile.tcp_rx = k * 1024;
    }
    if let Ok(k) = env("BENCH_DEVICE_TX").parse::<usize>() {
        profile.tcp_tx = k * 1024;
    }
    let mut config = common::device_peer_config(profile);
    if let support_tunnel::Role::Device { forwards } = &mut config.role {
        forwards.push(support_tunnel::Forward {
            port: 23,
            target: env("BENCH_IDLE").parse().expect("idle target"),
        });
    }
    let (_h, _t) = Engine::spawn(config, None).expect("engine");
    println!("ready");
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
}

fn relay_thread(device: [u8; 32], admin: [u8; 32], bind: &str) -> (SocketAddr, Arc<AtomicBool>) {
    let socket = support_relay::bind(bind.parse().expect("addr")).expect("relay binds");
    let addr = socket.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let config = RelayConfig {
        device_key: device,
        admin_key: admin,
        handshakes_per_source: 20,
        handshakes_total: 200,
    };
    std::thread::spawn(move || {
        let _ = support_relay::serve(
            &socket,
            &config,
            Instant::now() + Duration::from_secs(3600),
            &s2,
            &mut |_| {},
        );
    });
    (addr, stop)
}

/// Waits until `events` reports the tunnel up.
fn wait_up(events: &std::sync::mpsc::Receiver<Event>) {
    loop {
        match events.recv_timeout(Duration::from_secs(30)) {
            Ok(Event::TunnelUp) => return,
            Ok(_) => {}
            Err(_) => panic!("our tunnel did not come up within 30 s"),
        }
    }
}

fn our_path(profile: &str, secs: u64) {
    let (dk, ak, psk) = (random32(), random32(), random32());
    let (relay, stop) = relay_thread(public(&dk), public(&ak), "127.0.0.1:0");
    let port = free_tcp_port();
    let _server = iperf3_server(Command::new("env"), Ipv4Addr::LOCALHOST, port);
    let iperf: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    let idle_target = idle_sink();
    let keys = (dk, ak, psk);
    let mut child = spawn_device_peer(
        keys,
        relay,
        iperf,
        &[
            ("BENCH_PROFILE", profile),
            ("BENCH_IDLE", &idle_target.to_string()),
        ],
    );
    let pid = child.id();
    let config = admin_peer_config(keys, relay);
    let (events, up) = std::sync::mpsc::channel();
    let (admin, _t) = Engine::spawn(config, Some(events)).expect("admin");
    wait_up(&up);
    let local = "127.0.0.1:0".parse().expect("addr");
    let to = admin.forward_local(local, 22).expect("forward");
    let idle_fwd = admin.forward_local(local, 23).expect("forward");
    let idle = status_kib(pid, "VmRSS:");
    let conns: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut c = TcpStream::connect(idle_fwd).expect("connect");
            // The sink's greeting: the connection is open end to end.
            c.read_exact(&mut [0u8; 1]).expect("greeting");
            c
        })
        .collect();
    let with20 = status_kib(pid, "VmRSS:");
    drop(conns);

    let perf = (!env("BENCH_PERF").is_empty()).then(|| {
        Command::new("perf")
            .args(["record", "-q", "-g", "-F", "999", "-o", &env("BENCH_PERF")])
            .args(["-p", &pid.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .expect("perf record starts")
    });
    let up = directions("up").then(|| run(Command::new("env"), to, pid, secs, false));
    let down = directions("down").then(|| run(Command::new("env"), to, pid, secs, true));
    if let Some(p) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait_with_output();
    }
    let peak = status_kib(pid, "VmHWM:");
    print_row(
        &format!("ours (device {profile})"),
        &up,
        &down,
        &format!(
            " | device peer RSS {idle} KiB idle, {with20} KiB with 20 connections, {peak} KiB peak"
        ),
    );
    admin.shutdown();
    drop(child.stdin.take());
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
}

fn wireguard_go_pair(secs: u64) -> Option<(Option<Run>, Option<Run>)> {
    let root = support_testkit::sh(&["id", "-u"]) == "0";
    if !root || !have("wireguard-go") {
        println!("wireguard-go pair: not measured (needs root and wireguard-go; scripts/setup installs it)");
        return None;
    }
    use support_testkit::{wg_key, Host};
    let (kd, ka) = (wg_key(), wg_key());
    let (relay, stop) = relay_thread(b64_32(&kd.public), b64_32(&ka.public), "0.0.0.0:0");
    let mut device = Host::new();
    let mut admin = Host::new();
    let (dip, aip) = (Ipv4Addr::new(10, 94, 0, 2), Ipv4Addr::new(10, 94, 0, 3));
    let port = relay.port();
    device.wireguard(&kd, dip, &ka.public, (device.host_ip, port).into(), aip);
    admin.wireguard(&ka, aip, &kd.public, (admin.host_ip, port).into(), dip);
    let server = iperf3_server(device.exec(&[]), dip, 5201);
    let to: SocketAddr = (dip, 5201).into();
    let pid = device.wg_pid().expect("wireguard-go runs");
    let up = directions("up").then(|| run(admin.exec(&[]), to, pid, secs, false));
    let down = directions("down").then(|| run(admin.exec(&[]), to, pid, secs, true));
    // Before the namespaces go.
    drop(server);
    stop.store(true, Ordering::Relaxed);
    Some((up, down))
}

fn main() {
    if env("BENCH_ROLE") == "device-peer" {
        device_peer_child();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !have("iperf3") {
        println!("throughput: not measured (needs iperf3; scripts/setup installs it)");
        return;
    }
    let secs: u64 = env("BENCH_SECS").parse().unwrap_or(10);
    our_path("device", secs);
    if env("BENCH_PAIR") == "0" {
        return;
    }
    if let Some((up, down)) = wireguard_go_pair(secs) {
        print_row("wireguard-go pair + kernel TCP", &up, &down, "");
    }
}
