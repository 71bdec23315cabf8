//! The support organization's offline CA: `ca init` makes its key,
//! `ca sign` certifies an approver's key for a limited time.

use std::fmt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use support_protocol::bounded::{BoundError, BoundedString};
use support_protocol::certificate::{ApproverCertificate, Role, SigningSeed, SupportCa};
use zeroize::Zeroizing;

use crate::error::FileError;
use crate::secret_file::{self, SecretError};
use crate::settings::{parse_key, Dirs, SettingsError};

/// Why the CA's key cannot be made or used, or a certificate not issued.
#[derive(Debug)]
pub enum CaError {
    /// `ca init` would replace the CA that devices pin.
    Exists(PathBuf),
    /// There is no CA key.
    Missing {
        /// Where it should be.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The CA key file does not hold a key.
    Damaged(PathBuf),
    /// `--days` outside 1..=366.
    Days,
    /// The engineer's name does not fit a certificate.
    Name(BoundError),
    /// The engineer's key is not a key.
    Key(SettingsError),
    /// The sealed CA key does not open.
    Secret(SecretError),
    /// A file could not be written.
    File(FileError),
}

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exists(path) => write!(
                f,
                "a CA exists at {}; devices pin its key, so it is never replaced silently",
                path.display()
            ),
            Self::Missing { path, source } => write!(
                f,
                "no CA at {} ({source}); run `support-admin ca init`",
                path.display()
            ),
            Self::Damaged(path) => write!(f, "{} is damaged", path.display()),
            Self::Days => {
                f.write_str("--days must be between 1 and 366 (keep certificates short-lived)")
            }
            Self::Name(e) => write!(f, "the name cannot be used: {e}"),
            Self::Key(e) => e.fmt(f),
            Self::Secret(e) => e.fmt(f),
            Self::File(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Missing { source, .. } => Some(source),
            Self::Name(e) => Some(e),
            Self::Key(e) => Some(e),
            Self::Secret(e) => Some(e),
            Self::File(e) => Some(e),
            Self::Exists(_) | Self::Damaged(_) | Self::Days => None,
        }
    }
}

impl From<SecretError> for CaError {
    fn from(e: SecretError) -> Self {
        CaError::Secret(e)
    }
}

impl From<FileError> for CaError {
    fn from(e: FileError) -> Self {
        CaError::File(e)
    }
}

/// How close to its end a certificate is worth a warning to renew.
pub const RENEW_WARNING_SECS: u64 = 14 * 86400;

/// Whether `cert` ends within [`RENEW_WARNING_SECS`] of `now`.
pub fn expires_soon(cert: &support_protocol::certificate::ApproverCertificate, now: u64) -> bool {
    cert.body.not_after < now.saturating_add(RENEW_WARNING_SECS)
}

/// Wall-clock seconds (the CA's machine is assumed to keep time).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Creates the CA key; returns its public key.
pub fn init(dirs: &Dirs, passphrase: &str) -> Result<[u8; 32], CaError> {
    let path = dirs.ca().join("ca.key");
    if path.exists() {
        return Err(CaError::Exists(path));
    }
    let seed: [u8; 32] = secret_file::random();
    let hexed = Zeroizing::new(hex::encode(seed).into_bytes());
    secret_file::write(&path, &secret_file::seal(&hexed, passphrase), 0o600)?;
    Ok(SigningSeed::new(seed).public())
}

fn load(dirs: &Dirs) -> Result<SupportCa, CaError> {
    let path = dirs.ca().join("ca.key");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(source) => return Err(CaError::Missing { path, source }),
    };
    let plain = secret_file::unseal(bytes, "CA passphrase: ")?;
    let text = Zeroizing::new(String::from_utf8_lossy(&plain).to_string());
    // The protocol's parser, not settings::parse_key: that one copies the
    // text into its error, and this text is the CA's private seed.
    match support_protocol::key_text::parse_key(&text) {
        Ok(seed) => Ok(SupportCa(SigningSeed::new(seed))),
        Err(_) => Err(CaError::Damaged(path)),
    }
}

/// The CA's public key.
pub fn public(dirs: &Dirs) -> Result<[u8; 32], CaError> {
    Ok(load(dirs)?.0.public())
}

/// Certifies `key` for `name` with `role` for `days`, from now.
pub fn sign(
    dirs: &Dirs,
    name: &str,
    key: &str,
    role: Role,
    days: u32,
) -> Result<ApproverCertificate, CaError> {
    if days == 0 || days > 366 {
        return Err(CaError::Days);
    }
    let name = BoundedString::<64>::new(name).map_err(CaError::Name)?;
    let key = parse_key(key).map_err(CaError::Key)?;
    let ca = load(dirs)?;
    let serial_path = dirs.ca().join("serial");
    let serial: u64 = std::fs::read_to_string(&serial_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        + 1;
    secret_file::write(&serial_path, serial.to_string().as_bytes(), 0o600)?;
    let now = now();
    // A little slack back: the approver's clock may run slightly behind the CA's.
    Ok(ca.certify(
        name,
        key,
        role,
        serial,
        now.saturating_sub(600),
        now + u64::from(days) * 86400,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use support_protocol::key_text::KeyTextError;

    #[test]
    fn the_ca_is_made_once_and_signs_within_its_limits() {
        let d = tempfile::tempdir().expect("tempdir");
        let dirs = Dirs::new(Some(d.path())).expect("dirs");
        let path = dirs.ca().join("ca.key");
        assert!(matches!(public(&dirs), Err(CaError::Missing { path: p, .. }) if p == path));
        let key = init(&dirs, "").expect("made");
        assert_eq!(public(&dirs).expect("loads"), key);
        assert!(matches!(init(&dirs, ""), Err(CaError::Exists(p)) if p == path));
        let approver = hex::encode([7u8; 32]);
        for days in [0, 367] {
            assert!(matches!(
                sign(&dirs, "alice", &approver, Role::Approver, days),
                Err(CaError::Days)
            ));
        }
        assert!(matches!(
            sign(&dirs, &"a".repeat(65), &approver, Role::Approver, 30),
            Err(CaError::Name(_))
        ));
        let e = sign(&dirs, "alice", "abc", Role::Approver, 30).expect_err("not a key");
        assert!(
            matches!(
                &e,
                CaError::Key(SettingsError::Key {
                    text,
                    source: KeyTextError::Length { got: 3 }
                }) if text == "abc"
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with("'abc': a key is 64 hexadecimal"),
            "{e}"
        );
        let first = sign(&dirs, "alice", &approver, Role::Approver, 30).expect("signs");
        let second = sign(&dirs, "bob", &approver, Role::Viewer, 30).expect("signs");
        assert_eq!((first.body.serial, second.body.serial), (1, 2));
        std::fs::write(&path, "not a key").expect("write");
        assert!(matches!(public(&dirs), Err(CaError::Damaged(p)) if p == path));
    }
}
