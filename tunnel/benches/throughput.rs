//! Data-plane benchmark (a bench binary, not a test).
//!
//! * Throughput and CPU seconds per GB of our device -> relay -> admin path,
//!   for each buffer profile on the device side, moving `BENCH_MB` (default
//!   200) MB; CPU is the whole machine's busy time from /proc/stat, so the
//!   relay, both peers and the endpoints are all counted.
//! * The same transfer between two wireguard-go peers with kernel TCP
//!   through the same relay (needs root and wireguard-go; skipped with a
//!   note otherwise).
//! * Resident memory of a device peer (its own process) with 0 and with 20
//!   open connections, and its peak during the transfer.
//!
//! `cargo bench -p support-tunnel --bench throughput`

mod common;
use common::{admin_peer_config, device_peer_config, hex32, public, random32, spawn_device_peer};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support_relay::relay::RelayConfig;
use support_tunnel::{BufferProfile, Engine};

/// Busy and total jiffies of the whole machine.
fn cpu() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().sum();
    (total - idle, total)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// A local service that streams `n` bytes to each connection after reading an 8-byte length.
fn source() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut len = [0u8; 8];
                if s.read_exact(&mut len).is_err() {
                    return;
                }
                let mut left = u64::from_le_bytes(len) as usize;
                let chunk = vec![0x5au8; 256 * 1024];
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    addr
}

/// The child process: one device peer, until stdin closes.
fn device_peer_child() {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let profile = if env("BENCH_PROFILE") == "admin" {
        BufferProfile::ADMIN
    } else {
        BufferProfile::DEVICE
    };
    let config = device_peer_config(profile);
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

fn pull(via: SocketAddr, n: usize) -> Duration {
    let mut s = TcpStream::connect(via).expect("connect");
    let start = Instant::now();
    s.write_all(&(n as u64).to_le_bytes()).expect("ask");
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < n {
        let k = s.read(&mut buf).expect("read");
        assert!(k > 0, "closed early at {got}");
        got += k;
    }
    start.elapsed()
}

fn our_path(profile: &str, mb: usize) {
    let (dk, ak, psk) = (random32(), random32(), random32());
    let (relay, stop) = relay_thread(public(&dk), public(&ak), "127.0.0.1:0");
    let target = source();
    let keys = (dk, ak, psk);
    let mut child = spawn_device_peer(keys, relay, target, &[("BENCH_PROFILE", profile)]);
    let pid = child.id();
    let config = admin_peer_config(keys, relay);
    let (admin, _t) = Engine::spawn(config, None).expect("admin");
    let local = admin
        .forward_local("127.0.0.1:0".parse().expect("addr"), 22)
        .expect("forward");
    let _ = pull(local, 1 << 20); // the tunnel is up
    std::thread::sleep(Duration::from_millis(500));
    let idle = status_kib(pid, "VmRSS:");
    let conns: Vec<TcpStream> = (0..20)
        // Open and idle: the source waits for a length that never comes.
        .map(|_| TcpStream::connect(local).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let with20 = status_kib(pid, "VmRSS:");
    drop(conns);
    let (b0, _) = cpu();
    let took = pull(local, mb << 20);
    let (b1, _) = cpu();
    let hz = 100.0; // USER_HZ on Linux
    let cpu_s = (b1 - b0) as f64 / hz;
    let peak = status_kib(pid, "VmHWM:");
    println!(
        "ours, device profile {profile:<6}: {mb} MB in {:.2} s = {:6.1} MB/s, {:.2} CPU s/GB (machine) | device peer RSS: {idle} KiB idle, {with20} KiB with 20 connections, {peak} KiB peak",
        took.as_secs_f64(),
        mb as f64 / took.as_secs_f64(),
        cpu_s / (mb as f64 / 1024.0),
    );
    admin.shutdown();
    drop(child.stdin.take());
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
}

fn wireguard_go_pair(mb: usize) {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let have = Command::new("sh")
        .args(["-c", "command -v wireguard-go"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !root || !have {
        println!("wireguard-go pair: not measured (needs root and wireguard-go; scripts/setup installs it)");
        return;
    }
    use support_testkit::{wg_key, Host};
    let (kd, ka) = (wg_key(), wg_key());
    let b64 = |k: &str| -> [u8; 32] {
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("echo {k} | base64 -d | od -An -tx1 | tr -d ' \\n'"),
            ])
            .output()
            .expect("decode");
        hex32(&String::from_utf8_lossy(&out.stdout))
    };
    let (relay, stop) = relay_thread(b64(&kd.public), b64(&ka.public), "0.0.0.0:0");
    let mut device = Host::new();
    let mut admin = Host::new();
    let (dip, aip) = (Ipv4Addr::new(10, 94, 0, 2), Ipv4Addr::new(10, 94, 0, 3));
    device.wireguard(
        &kd,
        dip,
        &ka.public,
        (device.host_ip, relay.port()).into(),
        aip,
    );
    admin.wireguard(
        &ka,
        aip,
        &kd.public,
        (admin.host_ip, relay.port()).into(),
        dip,
    );
    let server = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('{dip}', 7001)); s.listen(1); c,_=s.accept()\nb=b'Z'*262144\nleft={}\nwhile left>0:\n    n=min(left,len(b)); c.sendall(b[:n]); left-=n\nc.close()\n",
        mb << 20
    );
    let client = format!(
        "import socket,time\nfor i in range(100):\n    try:\n        c=socket.create_connection(('{dip}', 7001), timeout=2); break\n    except OSError: time.sleep(0.1)\nc.settimeout(60)\nt=time.time(); got=0\nwhile True:\n    d=c.recv(1<<20)\n    if not d: break\n    got+=len(d)\nprint(got, time.time()-t)\n"
    );
    let mut srv = device
        .exec(&["python3", "-c", &server])
        .spawn()
        .expect("server");
    std::thread::sleep(Duration::from_millis(300));
    let (b0, _) = cpu();
    let out = admin
        .exec(&["python3", "-c", &client])
        .output()
        .expect("client");
    let (b1, _) = cpu();
    let _ = srv.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let got: f64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let secs: f64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
    let cpu_s = (b1 - b0) as f64 / 100.0;
    println!(
        "wireguard-go pair + kernel TCP:   {:.0} MB in {secs:.2} s = {:6.1} MB/s, {:.2} CPU s/GB (machine)",
        got / 1048576.0,
        got / 1048576.0 / secs,
        cpu_s / (got / 1073741824.0)
    );
    stop.store(true, Ordering::Relaxed);
}

fn main() {
    if std::env::var("BENCH_ROLE").as_deref() == Ok("device-peer") {
        device_peer_child();
        return;
    }
    let mb: usize = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    our_path("device", mb);
    our_path("admin", mb);
    wireguard_go_pair(mb);
}
