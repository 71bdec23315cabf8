//! The data plane on real networks (a bench binary, not a test): our two
//! userspace peers against a stock wireguard-go pair with kernel TCP, through
//! the same relay and the same WAN stage (`support_testkit::wan`), for each
//! round trip and loss rate.
//!
//! Each datagram crosses the stage twice on its way (peer -> relay, relay ->
//! peer), like the loss "at each input" of issue 20: the loss rate applies
//! per crossing, and each crossing adds a quarter of the round trip.
//!
//! Per cell and path it measures, `BENCH_SECS` (default 4) seconds each:
//! * throughput up (engineer -> device) and down (device -> engineer);
//! * the device peer's CPU per GB (our device peer process; for the pair,
//!   the device's wireguard-go process: its kernel TCP is not counted);
//! * the echo time of a 16-byte exchange every 20 ms on a second connection
//!   while the bulk transfer runs (p50 and p99 over both directions).
//!
//! `cargo bench -p support-tunnel --bench wan` (root and wireguard-go for the
//! pair; scripts/setup installs it). `BENCH_CELLS=1:0,50:0.01` picks cells
//! (round trip in ms : loss per crossing).

mod common;
use common::{
    admin_peer_config, b64_32, device_peer_config, public, random32, spawn_device_peer, Keys,
};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support_testkit::load::cpu_secs;
use support_testkit::relay::RelayThread;
use support_testkit::wan::{Impairment, WanStage};
use support_tunnel::{BufferProfile, Engine, EngineHandle};

const ECHO_EVERY: Duration = Duration::from_millis(20);

/// Counts smoltcp's recovery events in this process (BENCH_TCP_LOG=1).
fn count_tcp_events() {
    if env("BENCH_TCP_LOG") == "1" {
        common::count_tcp_events();
    }
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

// ---------------------------------------------------------------- server

/// The service on the device side: `U` sinks until EOF and answers the byte
/// count; `D` + 8-byte milliseconds streams for that long; `E` echoes.
fn server_child() {
    let l = TcpListener::bind(env("BENCH_LISTEN")).expect("server binds");
    println!("ready {}", l.local_addr().expect("addr"));
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut cmd = [0u8; 1];
            if s.read_exact(&mut cmd).is_err() {
                return;
            }
            let mut buf = vec![0u8; 256 * 1024];
            match cmd[0] {
                b'U' => {
                    let mut n = 0u64;
                    while let Ok(k) = s.read(&mut buf) {
                        if k == 0 {
                            break;
                        }
                        n += k as u64;
                    }
                    let _ = s.write_all(&n.to_le_bytes());
                }
                b'D' => {
                    let mut ms = [0u8; 8];
                    if s.read_exact(&mut ms).is_err() {
                        return;
                    }
                    let until = Instant::now() + Duration::from_millis(u64::from_le_bytes(ms));
                    buf.fill(0x5a);
                    while Instant::now() < until {
                        if s.write_all(&buf[..64 * 1024]).is_err() {
                            return;
                        }
                    }
                    let _ = s.shutdown(Shutdown::Write);
                    let _ = s.read(&mut buf);
                }
                _ => {
                    while let Ok(k) = s.read(&mut buf[..64]) {
                        if k == 0 || s.write_all(&buf[..k]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}

fn spawn_server(mut cmd: Command, listen: &str) -> (Child, SocketAddr) {
    let mut child = cmd
        .env("BENCH_ROLE", "server")
        .env("BENCH_LISTEN", listen)
        .stdout(Stdio::piped())
        .spawn()
        .expect("server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server ready");
    let addr = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|a| a.parse().ok())
        .expect("server address");
    (child, addr)
}

// ---------------------------------------------------------------- client

struct Outcome {
    mb_s: f64,
    bytes: u64,
    echo_ms: Vec<f64>,
}

fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect_timeout(&target, Duration::from_secs(10)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                s.set_write_timeout(Some(Duration::from_secs(30)))?;
                return Ok(s);
            }
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn bulk(target: SocketAddr, up: bool, secs: f64) -> std::io::Result<(u64, f64)> {
    let mut s = connect(target)?;
    let start = Instant::now();
    if up {
        s.write_all(b"U")?;
        let chunk = vec![0xa5u8; 64 * 1024];
        while start.elapsed().as_secs_f64() < secs {
            s.write_all(&chunk)?;
        }
        s.shutdown(Shutdown::Write)?;
        let mut n = [0u8; 8];
        s.read_exact(&mut n)?;
        Ok((u64::from_le_bytes(n), start.elapsed().as_secs_f64()))
    } else {
        s.write_all(b"D")?;
        s.write_all(&((secs * 1000.0) as u64).to_le_bytes())?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let k = s.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        Ok((n, start.elapsed().as_secs_f64()))
    }
}

/// Echo round trips every 20 ms until `stop`.
fn echo(target: SocketAddr, stop: Arc<AtomicBool>) -> std::io::Result<Vec<f64>> {
    let mut s = connect(target)?;
    s.set_nodelay(true)?;
    s.write_all(b"E")?;
    let mut out = Vec::new();
    let mut buf = [0u8; 16];
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        s.write_all(b"0123456789abcdef")?;
        s.read_exact(&mut buf)?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(ECHO_EVERY.saturating_sub(t.elapsed()));
    }
    Ok(out)
}

fn client_child() {
    let target: SocketAddr = env("BENCH_TARGET").parse().expect("target");
    let up = env("BENCH_DIR") == "up";
    let secs: f64 = env("BENCH_SECS").parse().unwrap_or(4.0);
    // The tunnel is up before anything is timed.
    if let Err(e) = connect(target).and_then(|mut s| s.write_all(b"E")) {
        println!("error connecting: {e}");
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let echoes = std::thread::spawn(move || echo(target, st));
    let r = bulk(target, up, secs);
    stop.store(true, Ordering::Relaxed);
    let e = echoes
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("echo panicked")));
    match (r, e) {
        (Ok((bytes, t)), Ok(samples)) => {
            let list: Vec<String> = samples.iter().map(|x| format!("{x:.2}")).collect();
            println!("result {bytes} {t:.3} {}", list.join(","));
        }
        (Err(e), _) => println!("error in the transfer: {e}"),
        (_, Err(e)) => println!("error in the echo: {e}"),
    }
}

fn run_client(
    mut cmd: Command,
    target: SocketAddr,
    up: bool,
    secs: f64,
) -> Result<Outcome, String> {
    let out = cmd
        .env("BENCH_ROLE", "client")
        .env("BENCH_TARGET", target.to_string())
        .env("BENCH_DIR", if up { "up" } else { "down" })
        .env("BENCH_SECS", secs.to_string())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let Some(rest) = text.strip_prefix("result ") else {
        return Err(text);
    };
    let mut it = rest.split(' ');
    let bytes: u64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let t: f64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
    let echo_ms = it
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|x| x.parse().ok())
        .collect();
    Ok(Outcome {
        mb_s: bytes as f64 / 1_048_576.0 / t,
        bytes,
        echo_ms,
    })
}

// ---------------------------------------------------------------- paths

/// The child process for our device peer, so its CPU time is its own.
fn device_peer_child() {
    let config = device_peer_config(device_profile());
    count_tcp_events();
    let (_h, _t) = Engine::spawn(config, None).expect("engine");
    println!("ready");
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
        if env("BENCH_TCP_LOG") == "1" {
            eprintln!("    device peer's TCP: {}", common::take_tcp_events());
        }
        line.clear();
    }
}

/// The device's buffer profile; BENCH_DEVICE_RX / BENCH_DEVICE_TX (KiB)
/// try other sizes.
fn device_profile() -> BufferProfile {
    let mut p = BufferProfile::DEVICE;
    if let Ok(k) = env("BENCH_DEVICE_RX").parse::<usize>() {
        p.tcp_rx = k * 1024;
    }
    if let Ok(k) = env("BENCH_DEVICE_TX").parse::<usize>() {
        p.tcp_tx = k * 1024;
    }
    p
}

/// A path under test: where the client connects, which process is the
/// device's peer, and how to run the client.
trait Path {
    fn name(&self) -> &'static str;
    fn target(&self) -> SocketAddr;
    fn device_pid(&self) -> u32;
    fn client(&self) -> Command;
    /// Called after each transfer (our path reports its TCP events).
    fn after(&mut self) {}
}

struct Ours {
    device: Child,
    server: Child,
    admin: EngineHandle,
    target: SocketAddr,
}

impl Ours {
    /// Our device peer (a child process) and admin peer, both reaching the relay through `stage`.
    fn start(stage: &WanStage, keys: Keys) -> Ours {
        let exe = std::env::current_exe().expect("exe");
        let (server, service) = spawn_server(Command::new(&exe), "127.0.0.1:0");
        let endpoint: SocketAddr = (Ipv4Addr::LOCALHOST, stage.addr.port()).into();
        count_tcp_events();
        let device = spawn_device_peer(keys, endpoint, service, &[]);
        let config = admin_peer_config(keys, endpoint);
        let (events, up) = std::sync::mpsc::channel();
        let (admin, _t) = Engine::spawn(config, Some(events)).expect("admin");
        let t = Instant::now();
        loop {
            match up.recv_timeout(Duration::from_secs(60)) {
                Ok(support_tunnel::Event::TunnelUp) => break,
                Ok(_) => {}
                Err(_) => panic!("our tunnel did not come up within 60 s"),
            }
        }
        eprintln!("(our tunnel came up in {:?})", t.elapsed());
        let target = admin
            .forward_local("127.0.0.1:0".parse().expect("addr"), 22)
            .expect("forward");
        Ours {
            device,
            server,
            admin,
            target,
        }
    }
}

impl Path for Ours {
    fn name(&self) -> &'static str {
        "ours"
    }
    fn target(&self) -> SocketAddr {
        self.target
    }
    fn device_pid(&self) -> u32 {
        self.device.id()
    }
    fn client(&self) -> Command {
        Command::new(std::env::current_exe().expect("exe"))
    }
    fn after(&mut self) {
        if env("BENCH_TCP_LOG") == "1" {
            eprintln!("    admin peer's TCP: {}", common::take_tcp_events());
            if let Some(i) = self.device.stdin.as_mut() {
                let _ = i.write_all(b"\n");
            }
        }
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        self.admin.shutdown();
        drop(self.device.stdin.take());
        let _ = self.device.wait();
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

struct Pair {
    // Fields drop in order: the processes inside the namespaces go first.
    server: Child,
    device: support_testkit::Host,
    admin: support_testkit::Host,
    target: SocketAddr,
}

impl Pair {
    fn start(stage: &WanStage, kd: &support_testkit::WgKey, ka: &support_testkit::WgKey) -> Pair {
        let mut device = support_testkit::Host::new();
        let mut admin = support_testkit::Host::new();
        let (dip, aip) = (Ipv4Addr::new(10, 94, 0, 2), Ipv4Addr::new(10, 94, 0, 3));
        let port = stage.addr.port();
        device.wireguard(kd, dip, &ka.public, (device.host_ip, port).into(), aip);
        admin.wireguard(ka, aip, &kd.public, (admin.host_ip, port).into(), dip);
        let exe = std::env::current_exe().expect("exe");
        let exe = exe.to_str().expect("utf-8 path");
        let (server, target) = spawn_server(device.exec(&[exe]), &format!("{dip}:7001"));
        Pair {
            server,
            device,
            admin,
            target,
        }
    }
}

impl Path for Pair {
    fn name(&self) -> &'static str {
        "wireguard-go pair"
    }
    fn target(&self) -> SocketAddr {
        self.target
    }
    fn device_pid(&self) -> u32 {
        self.device.wg_pid().unwrap_or(0)
    }
    fn client(&self) -> Command {
        let exe = std::env::current_exe().expect("exe");
        self.admin.exec(&[exe.to_str().expect("utf-8 path")])
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

// ---------------------------------------------------------------- table

#[derive(Default)]
struct Row {
    up: Option<f64>,
    down: Option<f64>,
    cpu_s_gb: f64,
    p50: f64,
    p99: f64,
    errors: Vec<String>,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn measure(path: &mut dyn Path, secs: f64) -> Row {
    let mut row = Row::default();
    let mut echoes = Vec::new();
    let (mut cpu, mut bytes) = (0.0, 0u64);
    for up in [true, false] {
        let c0 = cpu_secs(path.device_pid());
        match run_client(path.client(), path.target(), up, secs) {
            Ok(o) => {
                cpu += cpu_secs(path.device_pid()) - c0;
                bytes += o.bytes;
                echoes.extend(o.echo_ms);
                if up {
                    row.up = Some(o.mb_s);
                } else {
                    row.down = Some(o.mb_s);
                }
            }
            Err(e) => row
                .errors
                .push(format!("{}: {e}", if up { "up" } else { "down" })),
        }
        path.after();
    }
    row.cpu_s_gb = cpu / (bytes as f64 / 1_073_741_824.0);
    row.p50 = percentile(&mut echoes, 0.5);
    row.p99 = percentile(&mut echoes, 0.99);
    row
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("failed".into(), |v| format!("{v:.2}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn cells() -> Vec<(u64, f64)> {
    common::cells("BENCH_CELLS")
}

/// A cell's network: each datagram crosses the stage twice per way, so
/// each crossing adds a quarter of the round trip.
fn impairment((rtt_ms, loss): (u64, f64)) -> Impairment {
    Impairment::wan(Duration::from_millis(rtt_ms) / 2, loss)
}

fn main() {
    match env("BENCH_ROLE").as_str() {
        "server" => return server_child(),
        "client" => return client_child(),
        "device-peer" => return device_peer_child(),
        _ => {}
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` runs nothing here
    }
    let secs: f64 = env("BENCH_SECS").parse().unwrap_or(4.0);
    let root = support_testkit::sh(&["id", "-u"]) == "0";
    let have_wg = support_testkit::have("wireguard-go");

    let (dk, ak, psk) = (random32(), random32(), random32());
    let ours_relay = RelayThread::start(public(&dk), public(&ak));
    let ours_stage = WanStage::start(
        "127.0.0.1:0".parse().expect("addr"),
        ours_relay.addr,
        Impairment::NONE,
    )
    .expect("stage");
    // The first cell's network is in place before the handshakes: they must cope too.
    let first = cells().first().map_or(Impairment::NONE, |c| impairment(*c));
    ours_stage.set(first);
    let mut ours = Ours::start(&ours_stage, (dk, ak, psk));

    let mut pair = (root && have_wg).then(|| {
        let (kd, ka) = (support_testkit::wg_key(), support_testkit::wg_key());
        let relay = RelayThread::start_on(
            "0.0.0.0:0".parse().expect("addr"),
            b64_32(&kd.public),
            b64_32(&ka.public),
        );
        let relay_local: SocketAddr = (Ipv4Addr::LOCALHOST, relay.addr.port()).into();
        let stage =
            WanStage::start("0.0.0.0:0".parse().expect("addr"), relay_local, first).expect("stage");
        let pair = Pair::start(&stage, &kd, &ka);
        (relay, stage, pair)
    });
    if pair.is_none() {
        println!("wireguard-go pair: not measured (needs root and wireguard-go; scripts/setup installs it)");
    }

    println!(
        "{secs} s per direction; loss per crossing (each datagram crosses the stage twice); MB/s; device CPU s/GB; echo ms every 20 ms during the bulk transfer"
    );
    println!(
        "{:>6} {:>6} | {:<18} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>6} {:>6}",
        "rtt ms",
        "loss",
        "path",
        "up",
        "down",
        "cpu s/GB",
        "echo p50",
        "echo p99",
        "up ×",
        "down ×"
    );
    for (rtt, loss) in cells() {
        let imp = impairment((rtt, loss));
        ours_stage.set(imp);
        let a = measure(&mut ours, secs);
        let b = pair.as_mut().map(|(_, stage, p)| {
            stage.set(imp);
            measure(p, secs)
        });
        let print = |name: &str, r: &Row, other: Option<&Row>| {
            println!(
                "{rtt:>6} {:>5.1}% | {name:<18} {:>8} {:>8} {:>8.1} {:>8.1} {:>8.1} | {:>6} {:>6}",
                loss * 100.0,
                fmt(r.up),
                fmt(r.down),
                r.cpu_s_gb,
                r.p50,
                r.p99,
                other.map_or("-".into(), |o| ratio(r.up, o.up)),
                other.map_or("-".into(), |o| ratio(r.down, o.down)),
            );
            for e in &r.errors {
                println!("{:>16}   {name}: {e}", "");
            }
        };
        print(ours.name(), &a, b.as_ref());
        if let (Some(b), Some((_, _, p))) = (&b, &pair) {
            print(p.name(), b, None);
        }
    }
}
