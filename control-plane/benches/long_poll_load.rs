//! Load benchmark: N simulated devices hold long-polls on real control
//! planes (the built binary) while an admin lists tunnels: first one
//! replica on redb, then two replicas on one PostgreSQL database (a
//! throwaway cluster, scripts/pg-scratch) with the devices split between
//! them. Reports each replica's resident memory and KiB per held poll,
//! admin-call p50/p99 and creates per second.
//!
//! `cargo bench -p support-control-plane --bench long_poll_load`
//! (`BENCH_DEVICES=2000` for a quicker run, default 10000;
//! `BENCH_STORE=redb` or `postgres` for one of the two).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support_protocol::bounded::{BoundedString, BoundedVec};
use support_protocol::control_channel::{Api, ClientCall, StaticKeypair};
use support_protocol::messages::admin::ListQuery;
use support_protocol::messages::device::PollRequest;
use support_protocol::messages::{
    AdminCall, AdminReply, AdminRequest, DeviceCall, DeviceFacts, DeviceReply, DeviceRequest,
    TunnelRequest,
};
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::DeviceTunnelKeys;
use support_protocol::RequestId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

const BIN: &str = env!("CARGO_BIN_EXE_support-control-plane");

/// The tests' throwaway PostgreSQL clusters (scripts/pg-scratch).
#[allow(dead_code)]
#[path = "../tests/common/postgres.rs"]
mod pg;

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    let _ = getrandom::getrandom(&mut s);
    s
}

fn text<const N: usize>(s: &str) -> BoundedString<N> {
    BoundedString::new(s).unwrap_or_default()
}

/// One HTTP/1.1 POST on a fresh connection (as a device's minimal client does).
async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let status = std::str::from_utf8(&buf[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, buf[split + 4..].to_vec()))
}

async fn device_call(
    addr: SocketAddr,
    server: [u8; 32],
    key: &StaticKeypair,
    req: DeviceRequest,
) -> Option<DeviceReply> {
    let call = DeviceCall {
        request_id: RequestId(1),
        request: req,
    };
    let (cc, body) = ClientCall::start(
        Api::Device,
        key,
        &server,
        seed(),
        &support_protocol::encode(&call).ok()?,
    )
    .ok()?;
    let (_, resp) = post(addr, "/v1/device", &body).await.ok()?;
    support_protocol::decode(&cc.finish(&resp).ok()?).ok()
}

async fn admin_call(
    addr: SocketAddr,
    server: [u8; 32],
    key: &StaticKeypair,
    req: AdminRequest,
) -> Option<AdminReply> {
    let call = AdminCall {
        request_id: RequestId(1),
        request: req,
    };
    let (cc, body) = ClientCall::start(
        Api::Admin,
        key,
        &server,
        seed(),
        &support_protocol::encode(&call).ok()?,
    )
    .ok()?;
    let (_, resp) = post(addr, "/v1/admin", &body).await.ok()?;
    support_protocol::decode(&cc.finish(&resp).ok()?).ok()
}

fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
}

/// A field of /proc/PID/status (`VmRSS`, `Threads`), as a number.
fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_string))
        })
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One running control plane process.
struct Replica {
    child: std::process::Child,
    addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl Replica {
    /// Starts a replica on a new data dir (with `keys_from`'s server keys
    /// when given) and the PostgreSQL store `store`, if any.
    fn start(store: Option<&str>, keys_from: Option<&Replica>) -> Replica {
        let data = tempfile::tempdir().expect("temp dir");
        if let Some(first) = keys_from {
            let ok = Command::new("cp")
                .arg("-a")
                .arg(first._data.path().join("server-keys"))
                .arg(data.path())
                .status()
                .expect("cp");
            assert!(ok.success());
        }
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args([
                "--max-connections",
                "19000",
                // Every simulated device connects from 127.0.0.1.
                "--max-connections-per-address",
                "19000",
                "--max-polls-per-address",
                "19000",
                "--creates-per-minute-per-address",
                "10000000",
                "--creates-per-minute",
                "10000000",
            ])
            .env("SUPPORT_CP_LOG", "error")
            .stdout(Stdio::piped());
        if let Some(url) = store {
            cmd.args(["--store", url]);
        }
        let mut child = cmd.spawn().expect("server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let addr: SocketAddr = line
            .trim()
            .trim_start_matches("listening on ")
            .parse()
            .expect("address");
        Replica {
            child,
            addr,
            _data: data,
        }
    }

    fn data(&self) -> &str {
        self._data.path().to_str().expect("utf-8")
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    fn threads(&self) -> u64 {
        proc_status(self.child.id(), "Threads")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let which = std::env::var("BENCH_STORE").unwrap_or_default();
    if which.is_empty() || which == "redb" {
        println!("== redb: one replica, its store a file in its data dir");
        let a = Replica::start(None, None);
        run(n, &[a], None);
    }
    if which.is_empty() || which == "postgres" {
        println!(
            "== PostgreSQL: two replicas on one database (Debian's server, scripts/pg-scratch)"
        );
        let cluster = pg::Cluster::start();
        let a = Replica::start(Some(&cluster.url), None);
        let b = Replica::start(Some(&cluster.url), Some(&a));
        run(n, &[a, b], Some(&cluster.url));
    }
}

/// `n` devices create and then hold long-polls, spread evenly over
/// `replicas`, while an admin lists on the first.
fn run(n: usize, replicas: &[Replica], store: Option<&str>) {
    let out = Command::new(BIN)
        .args(["public-key", "--data", replicas[0].data()])
        .output()
        .expect("public-key");
    let server: [u8; 32] = hex::decode(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default(),
    )
    .ok()
    .and_then(|v| v.try_into().ok())
    .expect("server key");
    let admin = StaticKeypair::from_secret(seed());
    let mut enroll = Command::new(BIN);
    enroll.args([
        "admins",
        "add",
        "--data",
        replicas[0].data(),
        "bench",
        &hex::encode(admin.public),
        "--role",
        "viewer",
    ]);
    if let Some(url) = store {
        enroll.env("SUPPORT_CP_STORE", url);
    }
    assert!(enroll.status().expect("enroll").success());
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let idle: Vec<u64> = replicas.iter().map(Replica::rss_kib).collect();
    println!("{n} devices; idle RSS per replica: {idle:?} KiB");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // 1. Every device requests a tunnel, from the replica it is given.
        let facts = DeviceFacts { hostname: text("amplipi"), model: text("AmpliPi"), firmware: text("1"), agent_version: text("0.1.0") };
        let start = Instant::now();
        let sem = Arc::new(Semaphore::new(32));
        let mut tasks = Vec::new();
        for i in 0..n {
            let addr = addrs[i % addrs.len()];
            let permit = sem.clone().acquire_owned().await.expect("semaphore");
            let facts = facts.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let keys = DeviceTunnelKeys::from_seed(seed());
                let req = TunnelRequest::new(&keys, facts, 3600, BoundedVec::try_from(&[22u16][..]).unwrap_or_default(), text(""));
                let key = keys.credential();
                device_call(addr, server, &key, DeviceRequest::Create(Box::new(req))).await.map(|_| (addr, keys.tunnel_id(), key))
            }));
        }
        let mut devices = Vec::new();
        for t in tasks {
            if let Ok(Some(d)) = t.await {
                devices.push(d);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!("creates: {} in {secs:.1} s = {:.0} req/s (each durably committed)", devices.len(), devices.len() as f64 / secs);
        let after_creates: Vec<u64> = replicas.iter().map(Replica::rss_kib).collect();

        // 2. Every device holds a long-poll on its replica, re-polling when it returns.
        let stop = Arc::new(AtomicBool::new(false));
        let polls_done = Arc::new(AtomicU64::new(0));
        let connect = Arc::new(Semaphore::new(256));
        for (addr, id, key) in devices {
            let (stop, polls_done, connect) = (stop.clone(), polls_done.clone(), connect.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let permit = connect.clone().acquire_owned().await;
                    let req = DeviceRequest::Poll(PollRequest { tunnel_id: id, known: TunnelState::Pending, wait_secs: 25 });
                    let fut = device_call(addr, server, &key, req);
                    drop(permit);
                    fut.await;
                    polls_done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let ramp = Instant::now();
        let mut held = vec![0i64; addrs.len()];
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for (h, addr) in held.iter_mut().zip(&addrs) {
                *h = post_get_metrics(*addr).await;
            }
            let total: i64 = held.iter().sum();
            if total >= n as i64 * 98 / 100 || ramp.elapsed() > Duration::from_secs(60) {
                println!("long-polls held: {held:?} (after {:.1} s)", ramp.elapsed().as_secs_f64());
                break;
            }
        }
        for (i, r) in replicas.iter().enumerate() {
            let rss = r.rss_kib();
            let per_poll = rss.saturating_sub(after_creates[i]) as f64 / held[i].max(1) as f64;
            println!(
                "replica {i}: RSS {rss} KiB with {} polls held ({} KiB after the creates): {per_poll:.1} KiB per held poll; {} threads",
                held[i], after_creates[i], r.threads()
            );
        }

        // 3. The admin lists tunnels (pages of 100) on the first replica meanwhile.
        let mut lat = Vec::new();
        let mut after = None;
        let start = Instant::now();
        for _ in 0..300 {
            let t = Instant::now();
            let r = admin_call(addrs[0], server, &admin, AdminRequest::List(ListQuery { state: None, after, limit: 100 })).await;
            lat.push(t.elapsed());
            if let Some(AdminReply { result: Ok(support_protocol::messages::AdminResponse::List { next, .. }), .. }) = r {
                after = next;
            }
        }
        let total = start.elapsed();
        lat.sort();
        println!(
            "admin list (100 per page) under load: p50 {:.2} ms, p99 {:.2} ms, {:.0} req/s sequential",
            percentile(&lat, 0.5).as_secs_f64() * 1000.0,
            percentile(&lat, 0.99).as_secs_f64() * 1000.0,
            lat.len() as f64 / total.as_secs_f64()
        );
        let end: Vec<u64> = replicas.iter().map(Replica::rss_kib).collect();
        println!("RSS per replica at the end: {end:?} KiB");
        stop.store(true, Ordering::Relaxed);
    });
}

async fn post_get_metrics(addr: SocketAddr) -> i64 {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = s
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    buf.lines()
        .find(|l| l.starts_with("support_cp_long_polls_waiting "))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
