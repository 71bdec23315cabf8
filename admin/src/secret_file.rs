//! Secret files: 0600, written atomically, optionally sealed with a
//! passphrase (PBKDF2-HMAC-SHA256, 600,000 iterations, ChaCha20-Poly1305),
//! and overwritten with zeros before removal.

use std::fmt;
use std::fs;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::FileError;

const ITERATIONS: u32 = 600_000;

/// Fresh random bytes.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS random number generator failed");
    b
}

/// Writes `data` to `path` (mode `mode`) atomically and durably
/// (`support_durable`: temp file, fsync, rename, fsync of the directory).
pub fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), FileError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(FileError::at(dir))?;
    }
    support_durable::write_atomic(path, data, mode).map_err(FileError::at(path))
}

/// Overwrites with zeros, then removes (a directory: all it holds). Missing is fine.
pub fn wipe(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            for e in fs::read_dir(path).into_iter().flatten().flatten() {
                wipe(&e.path());
            }
            let _ = fs::remove_dir(path);
        }
        Ok(_) => {
            let _ = support_durable::wipe_file(path);
        }
        Err(_) => {}
    }
}

/// Why a sealed key file does not open, or no passphrase could be had.
#[derive(Debug)]
pub enum SecretError {
    /// The sealed file does not parse as one.
    Damaged,
    /// The passphrase does not open it.
    WrongPassphrase,
    /// A passphrase is needed and there is neither a terminal nor
    /// `SUPPORT_ADMIN_PASSPHRASE`.
    NoTerminal,
    /// Reading the passphrase from the terminal failed.
    Terminal(std::io::Error),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Damaged => f.write_str("the key file is damaged"),
            Self::WrongPassphrase => f.write_str("wrong passphrase"),
            Self::NoTerminal => f.write_str(
                "a passphrase is needed but there is no terminal; set SUPPORT_ADMIN_PASSPHRASE",
            ),
            Self::Terminal(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SecretError {}

/// The on-disk form of a sealed secret.
#[derive(Serialize, Deserialize)]
struct Sealed {
    kdf: String,
    iterations: u32,
    salt: String,
    nonce: String,
    ciphertext: String,
}

fn key_from(passphrase: &str, salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(iterations.max(1)).unwrap_or(std::num::NonZeroU32::MIN),
        salt,
        passphrase.as_bytes(),
        &mut key[..],
    );
    key
}

/// Seals `plain` under `passphrase` (or stores it as is when empty).
pub fn seal(plain: &[u8], passphrase: &str) -> Vec<u8> {
    if passphrase.is_empty() {
        return plain.to_vec();
    }
    let salt: [u8; 16] = random();
    let nonce: [u8; 12] = random();
    let key = key_from(passphrase, &salt, ITERATIONS);
    let ct = ChaCha20Poly1305::new(Key::from_slice(&key[..]))
        .encrypt(Nonce::from_slice(&nonce), plain)
        .unwrap_or_default();
    serde_json::to_vec_pretty(&Sealed {
        kdf: "pbkdf2-hmac-sha256".into(),
        iterations: ITERATIONS,
        salt: hex::encode(salt),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ct),
    })
    .unwrap_or_default()
}

/// True when `bytes` is a passphrase-sealed file.
pub fn is_sealed(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Sealed>(bytes).is_ok()
}

/// Opens what [`seal`] made.
pub fn open(bytes: &[u8], passphrase: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let Ok(s) = serde_json::from_slice::<Sealed>(bytes) else {
        return Ok(Zeroizing::new(bytes.to_vec()));
    };
    let hexd = |v: &str| hex::decode(v).map_err(|_| SecretError::Damaged);
    let (salt, nonce, ct) = (hexd(&s.salt)?, hexd(&s.nonce)?, hexd(&s.ciphertext)?);
    if nonce.len() != 12 || s.iterations > 10_000_000 {
        return Err(SecretError::Damaged);
    }
    let key = key_from(passphrase, &salt, s.iterations);
    ChaCha20Poly1305::new(Key::from_slice(&key[..]))
        .decrypt(Nonce::from_slice(&nonce), ct.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| SecretError::WrongPassphrase)
}

/// The plain contents of a key file: opened with the passphrase (asked with
/// `prompt`) when it is sealed, as is when it is not.
pub fn unseal(bytes: Vec<u8>, prompt: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    if is_sealed(&bytes) {
        open(&bytes, &passphrase(prompt)?)
    } else {
        Ok(Zeroizing::new(bytes))
    }
}

/// The passphrase to seal a new key with: `SUPPORT_ADMIN_PASSPHRASE`, or
/// asked (empty for none) when there is a terminal, else none.
pub fn new_passphrase(prompt: &str) -> Result<Zeroizing<String>, SecretError> {
    if std::env::var_os("SUPPORT_ADMIN_PASSPHRASE").is_some()
        || !std::io::IsTerminal::is_terminal(&std::io::stdin())
    {
        return passphrase("");
    }
    loop {
        let first = crate::term::read_hidden(prompt)?;
        if first.is_empty() {
            return Ok(first);
        }
        let again = crate::term::read_hidden("the same passphrase again: ")?;
        if *again == *first {
            return Ok(first);
        }
        eprintln!("the two passphrases differ; once more");
    }
}

/// The passphrase: `SUPPORT_ADMIN_PASSPHRASE`, else asked on the terminal.
pub fn passphrase(prompt: &str) -> Result<Zeroizing<String>, SecretError> {
    if let Ok(p) = std::env::var("SUPPORT_ADMIN_PASSPHRASE") {
        return Ok(Zeroizing::new(p));
    }
    crate::term::read_hidden(prompt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_refuses_a_wrong_passphrase() {
        let sealed = seal(b"secret", "correct horse");
        assert!(is_sealed(&sealed));
        assert_eq!(
            &open(&sealed, "correct horse").expect("opens")[..],
            b"secret"
        );
        assert!(matches!(
            open(&sealed, "wrong"),
            Err(SecretError::WrongPassphrase)
        ));
        assert_eq!(seal(b"plain", ""), b"plain");
    }

    #[test]
    fn a_damaged_sealed_file_says_so() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&seal(b"secret", "pass")).expect("json");
        v["nonce"] = serde_json::json!("00");
        let damaged = serde_json::to_vec(&v).expect("json");
        assert!(matches!(open(&damaged, "pass"), Err(SecretError::Damaged)));
        v["nonce"] = serde_json::json!("not hex");
        let damaged = serde_json::to_vec(&v).expect("json");
        assert!(matches!(open(&damaged, "pass"), Err(SecretError::Damaged)));
    }

    #[test]
    fn a_file_is_written_with_its_directory_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/secret");
        write(&path, b"x", 0o600).expect("writes");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A directory where the file should go: the error names the path.
        let err = write(dir.path().join("a/b").as_path(), b"x", 0o600).expect_err("a dir");
        assert_eq!(err.path, dir.path().join("a/b"));
    }
}
