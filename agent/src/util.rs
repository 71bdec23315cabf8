//! Small helpers: randomness, durable file writes, wall-clock formatting, base64.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Fresh random bytes from the OS.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // Without OS randomness no key can be made; there is nothing sane to fall back to.
    getrandom::getrandom(&mut b).expect("the OS random number generator failed");
    b
}

/// A random u64 below `bound` (jitter; not for keys).
pub fn random_below(bound: u64) -> u64 {
    u64::from_le_bytes(random::<8>()) % bound.max(1)
}

/// The wall clock in seconds since 1970. Only for display, `expiry-time` and
/// the conservative expiry rule; never for a security decision that a wrong
/// clock could loosen.
pub fn wall_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Atomic, durable writes and wiping: shared with the engineer's CLI.
pub use support_durable::{wipe_file, write_atomic};

/// Creates `dir` (and parents) with `mode` if missing, and sets `mode` on it.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

pub use support_protocol::time_text::{civil, format as format_time};

/// OpenSSH's `expiry-time` format, UTC: `YYYYMMDDHHMMSSZ`.
pub fn ssh_expiry_time(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z")
}

pub use support_protocol::duration_text::format as format_duration;

/// `s` as a protocol string: characters the protocol refuses (controls,
/// bidi overrides, zero-width) dropped, cut at a character boundary to fit.
pub fn bounded<const N: usize>(s: &str) -> support_protocol::bounded::BoundedString<N> {
    use support_protocol::bounded::BoundedString;
    let mut out = String::new();
    for c in s.chars() {
        let mut b = [0u8; 4];
        if BoundedString::<4>::new(c.encode_utf8(&mut b)).is_err() {
            continue;
        }
        if out.len() + c.len_utf8() > N {
            break;
        }
        out.push(c);
    }
    BoundedString::new(&out).unwrap_or_default()
}

/// Standard base64 with padding (OpenSSH public keys).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_expiry_times() {
        assert_eq!(ssh_expiry_time(951_782_400), "20000229000000Z");
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
