//! The support organization's offline CA: `ca init` makes its key,
//! `ca sign` certifies an approver's key for a limited time.

use std::time::{SystemTime, UNIX_EPOCH};

use support_protocol::bounded::BoundedString;
use support_protocol::certificate::{ApproverCertificate, Role, SigningSeed, SupportCa};
use zeroize::Zeroizing;

use crate::secret_file;
use crate::settings::{parse_key, Dirs};

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
pub fn init(dirs: &Dirs, passphrase: &str) -> Result<[u8; 32], String> {
    let path = dirs.ca().join("ca.key");
    if path.exists() {
        return Err(format!(
            "a CA exists at {}; devices pin its key, so it is never replaced silently",
            path.display()
        ));
    }
    let seed: [u8; 32] = secret_file::random();
    let hexed = Zeroizing::new(hex::encode(seed).into_bytes());
    secret_file::write(&path, &secret_file::seal(&hexed, passphrase), 0o600)?;
    Ok(SigningSeed::new(seed).public())
}

fn load(dirs: &Dirs) -> Result<SupportCa, String> {
    let path = dirs.ca().join("ca.key");
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "no CA at {} ({e}); run `support-admin ca init`",
            path.display()
        )
    })?;
    let plain = secret_file::unseal(bytes, "CA passphrase: ")?;
    let text = String::from_utf8_lossy(&plain).to_string();
    Ok(SupportCa(SigningSeed::new(
        parse_key(&text).map_err(|_| format!("{} is damaged", path.display()))?,
    )))
}

/// The CA's public key.
pub fn public(dirs: &Dirs) -> Result<[u8; 32], String> {
    Ok(load(dirs)?.0.public())
}

/// Certifies `key` for `name` with `role` for `days`, from now.
pub fn sign(
    dirs: &Dirs,
    name: &str,
    key: &str,
    role: Role,
    days: u32,
) -> Result<ApproverCertificate, String> {
    if days == 0 || days > 366 {
        return Err("--days must be between 1 and 366 (keep certificates short-lived)".into());
    }
    let name =
        BoundedString::<64>::new(name).map_err(|e| format!("the name cannot be used: {e}"))?;
    let key = parse_key(key)?;
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
