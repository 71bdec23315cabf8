//! Helpers shared by the tunnel's benchmarks: keys and their encodings.
#![allow(dead_code)]

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
