//! The engineer's long-lived keys: a control-plane key (enrolled with
//! `support-control-plane admins add`) and an approver signing key
//! (certified by the support CA). Both in `CONFIG/identity.key`, 0600.

use serde::{Deserialize, Serialize};
use support_protocol::certificate::{ApproverCertificate, SigningSeed};
use support_protocol::control_channel::StaticKeypair;
use zeroize::Zeroizing;

use crate::secret_file;
use crate::settings::Dirs;

#[derive(Serialize, Deserialize)]
struct Stored {
    control_plane_secret: String,
    approver_seed: String,
}

/// The keys, loaded.
pub struct Identity {
    /// Talks to the control plane.
    pub control_plane: StaticKeypair,
    /// Signs approvals.
    pub approver: SigningSeed,
    /// The support CA's certificate of `approver`, once installed.
    pub certificate: Option<ApproverCertificate>,
}

/// Creates the identity file; refuses to overwrite one.
pub fn create(dirs: &Dirs, passphrase: &str) -> Result<Identity, String> {
    let path = dirs.config.join("identity.key");
    if path.exists() {
        return Err(format!(
            "{} exists already; it is your identity (delete it yourself to start over)",
            path.display()
        ));
    }
    let (cp, ap) = (secret_file::random::<32>(), secret_file::random::<32>());
    let stored = Stored {
        control_plane_secret: hex::encode(cp),
        approver_seed: hex::encode(ap),
    };
    let json = Zeroizing::new(serde_json::to_vec(&stored).map_err(|e| e.to_string())?);
    secret_file::write(&path, &secret_file::seal(&json, passphrase), 0o600)?;
    Ok(Identity {
        control_plane: StaticKeypair::from_secret(cp),
        approver: SigningSeed::new(ap),
        certificate: None,
    })
}

/// Loads the identity (asking for the passphrase if it is sealed).
pub fn load(dirs: &Dirs) -> Result<Identity, String> {
    let path = dirs.config.join("identity.key");
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "no identity at {} ({e}); run `support-admin init` first",
            path.display()
        )
    })?;
    let plain = secret_file::unseal(bytes, "Passphrase for your support-admin identity: ")?;
    let s: Stored =
        serde_json::from_slice(&plain).map_err(|_| format!("{} is damaged", path.display()))?;
    let key = |h: &str| -> Result<[u8; 32], String> {
        hex::decode(h)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{} is damaged", path.display()))
    };
    Ok(Identity {
        control_plane: StaticKeypair::from_secret(key(&s.control_plane_secret)?),
        approver: SigningSeed::new(key(&s.approver_seed)?),
        certificate: certificate(dirs)?,
    })
}

/// The installed approver certificate, if any.
pub fn certificate(dirs: &Dirs) -> Result<Option<ApproverCertificate>, String> {
    let path = dirs.config.join("certificate");
    match std::fs::read_to_string(&path) {
        Ok(t) => decode_certificate(&t)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A certificate as `ca sign` prints it (hex of its encoding).
pub fn decode_certificate(text: &str) -> Result<ApproverCertificate, String> {
    let bytes = hex::decode(text.trim()).map_err(|_| "not a certificate (expected hex)")?;
    support_protocol::decode(&bytes).map_err(|e| format!("not a certificate: {e}"))
}

/// The text form of a certificate.
pub fn encode_certificate(c: &ApproverCertificate) -> String {
    hex::encode(support_protocol::encode(c).unwrap_or_default())
}
