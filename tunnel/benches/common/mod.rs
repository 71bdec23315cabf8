//! Helpers shared by the tunnel's benchmarks: keys and their encodings,
//! the tunnel addresses, and the device peer a bench runs in a child process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};

use support_tunnel::{BufferProfile, EngineConfig, Forward, Role};

/// The device's tunnel address.
pub const DEVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The admin's tunnel address.
pub const ADMIN_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

/// 32 random bytes (a WireGuard private key or a PSK).
pub fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    let _ = getrandom::getrandom(&mut b);
    b
}

/// The X25519 public key of a private key.
pub fn public(k: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*k)).to_bytes()
}

/// 32 bytes from 64 hex digits; zeros if they are not that.
pub fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(v) = hex::decode(s) {
        if v.len() == 32 {
            out.copy_from_slice(&v);
        }
    }
    out
}

/// 32 bytes from their base64 text (the keys `wg genkey` makes).
pub fn b64_32(s: &str) -> [u8; 32] {
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("echo {s} | base64 -d | od -An -tx1 | tr -d ' \\n'"),
        ])
        .output()
        .expect("decode");
    hex32(&String::from_utf8_lossy(&out.stdout))
}

/// The device peer's config, from what the parent passed in the child's
/// environment: BENCH_KEY, BENCH_PEER, BENCH_PSK (hex), BENCH_ENDPOINT (the
/// relay) and BENCH_TARGET (where port 22 goes).
pub fn device_peer_config(profile: BufferProfile) -> EngineConfig {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    EngineConfig {
        private_key: hex32(&env("BENCH_KEY")),
        peer_public: hex32(&env("BENCH_PEER")),
        psk: hex32(&env("BENCH_PSK")),
        endpoint: env("BENCH_ENDPOINT").parse().expect("endpoint"),
        bind: "127.0.0.1:0".parse().expect("addr"),
        local_ip: DEVICE_IP,
        peer_ip: ADMIN_IP,
        prefix_len: 28,
        keepalive_secs: 10,
        profile,
        role: Role::Device {
            forwards: vec![Forward {
                port: 22,
                target: env("BENCH_TARGET").parse().expect("target"),
            }],
        },
        random: 1,
    }
}

/// A bench's two peers: the device's and the admin's private keys, and the PSK.
pub type Keys = ([u8; 32], [u8; 32], [u8; 32]);

/// Starts this bench's own executable as the device peer (`BENCH_ROLE` =
/// `device-peer`, configured by [`device_peer_config`]), reaching
/// `endpoint` and forwarding port 22 to `target`, with `env` added (e.g.
/// `BENCH_PROFILE`). Returns once the child says it is ready; it runs until
/// its stdin closes.
pub fn spawn_device_peer(
    keys: Keys,
    endpoint: SocketAddr,
    target: SocketAddr,
    env: &[(&str, &str)],
) -> Child {
    let (dk, ak, psk) = keys;
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env("BENCH_ROLE", "device-peer")
        .envs(env.iter().copied())
        .env("BENCH_KEY", hex::encode(dk))
        .env("BENCH_PEER", hex::encode(public(&ak)))
        .env("BENCH_PSK", hex::encode(psk))
        .env("BENCH_ENDPOINT", endpoint.to_string())
        .env("BENCH_TARGET", target.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("device peer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    child
}

/// The admin peer's config for the device peer of [`spawn_device_peer`].
pub fn admin_peer_config(keys: Keys, endpoint: SocketAddr) -> EngineConfig {
    let (dk, ak, psk) = keys;
    EngineConfig {
        private_key: ak,
        peer_public: public(&dk),
        psk,
        endpoint,
        bind: "127.0.0.1:0".parse().expect("addr"),
        local_ip: ADMIN_IP,
        peer_ip: DEVICE_IP,
        prefix_len: 28,
        keepalive_secs: 10,
        profile: BufferProfile::ADMIN,
        role: Role::Admin,
        random: 2,
    }
}

/// The cells a table covers, from `var` (`50:0.01,150:0`: round trip in ms
/// : loss per crossing), or every round trip of 1, 50 and 150 ms with 0,
/// 0.2, 1 and 3% loss.
pub fn cells(var: &str) -> Vec<(u64, f64)> {
    let spec = std::env::var(var).unwrap_or_default();
    if spec.is_empty() {
        let mut v = Vec::new();
        for rtt in [1, 50, 150] {
            for loss in [0.0, 0.002, 0.01, 0.03] {
                v.push((rtt, loss));
            }
        }
        return v;
    }
    spec.split(',')
        .filter_map(|c| {
            let (r, l) = c.split_once(':')?;
            Some((r.parse().ok()?, l.parse().ok()?))
        })
        .collect()
}

/// Counts smoltcp's debug messages by their first words: recoveries,
/// timeouts, out-of-window segments, assembler overflows (not the per-ACK
/// SACK and duplicate-ACK lines).
pub struct TcpEvents(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

static TCP_EVENTS: TcpEvents = TcpEvents(std::sync::Mutex::new(std::collections::BTreeMap::new()));

impl log::Log for TcpEvents {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("smoltcp")
    }
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let msg = r.args().to_string();
        let key: String = msg
            .split(|c: char| c.is_ascii_digit() || c == '(' || c == '+')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if key.starts_with("sending sACK") || key.starts_with("received duplicate") {
            return;
        }
        if let Ok(mut m) = self.0.lock() {
            *m.entry(key).or_default() += 1;
        }
    }
    fn flush(&self) {}
}

/// Starts counting smoltcp's events in this process; false if a logger was already set.
pub fn count_tcp_events() -> bool {
    let ok = log::set_logger(&TCP_EVENTS).is_ok();
    if ok {
        log::set_max_level(log::LevelFilter::Debug);
    }
    ok
}

/// The events counted since the last call, as "N × what; …".
pub fn take_tcp_events() -> String {
    let m = TCP_EVENTS
        .0
        .lock()
        .map(|mut m| std::mem::take(&mut *m))
        .unwrap_or_default();
    m.iter()
        .map(|(k, v)| format!("{v} × {k}"))
        .collect::<Vec<_>>()
        .join("; ")
}
