//! Helpers shared by the tunnel's benchmarks: keys and their encodings,
//! the tunnel addresses, and the device peer a bench runs in a child process.
#![allow(dead_code)]

use std::net::Ipv4Addr;

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
