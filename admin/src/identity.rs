//! The engineer's long-lived keys: a control-plane key (enrolled with
//! `support-control-plane admins add`) and an approver signing key
//! (certified by the support CA). Both in `CONFIG/identity.key`, 0600.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use support_protocol::certificate::{ApproverCertificate, CertificateError, Role, SigningSeed};
use support_protocol::codec::CodecError;
use support_protocol::control_channel::StaticKeypair;
use zeroize::Zeroizing;

use crate::error::FileError;
use crate::secret_file::{self, SecretError};
use crate::settings::Dirs;

/// Why the identity (or the certificate) cannot be made, loaded or used.
#[derive(Debug)]
pub enum IdentityError {
    /// `init` would overwrite an identity.
    Exists(PathBuf),
    /// There is no identity to load.
    Missing {
        /// Where it should be.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The identity file does not parse, or its keys are not 32 bytes.
    Damaged(PathBuf),
    /// The sealed identity does not open.
    Secret(SecretError),
    /// The installed certificate does not decode.
    InstalledCertificate {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        error: CertificateTextError,
    },
    /// A certificate given to `init --certificate` does not decode.
    Certificate(CertificateTextError),
    /// A certificate given to `init --certificate` is for another key.
    NotMyCertificate,
    /// No certificate is installed.
    NoCertificate,
    /// The installed certificate is for another key.
    InstalledForAnotherKey,
    /// A file could not be read or written.
    File(FileError),
    /// The identity could not be serialized.
    Encode(serde_json::Error),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exists(path) => write!(
                f,
                "{} exists already; it is your identity (delete it yourself to start over)",
                path.display()
            ),
            Self::Missing { path, source } => write!(
                f,
                "no identity at {} ({source}); run `support-admin init` first",
                path.display()
            ),
            Self::Damaged(path) => write!(f, "{} is damaged", path.display()),
            Self::Secret(e) => e.fmt(f),
            Self::InstalledCertificate { path, error } => {
                write!(f, "{}: {error}", path.display())
            }
            Self::Certificate(e) => e.fmt(f),
            Self::NotMyCertificate => {
                f.write_str("this certificate is for another key than your approver key")
            }
            Self::NoCertificate => f.write_str(
                "you have no approver certificate: send your approver key (support-admin init prints it) to the support CA and install what `ca sign` returns with `support-admin init --certificate FILE`",
            ),
            Self::InstalledForAnotherKey => {
                f.write_str("the installed certificate is for another key than your approver key")
            }
            Self::File(e) => e.fmt(f),
            Self::Encode(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for IdentityError {}

impl From<SecretError> for IdentityError {
    fn from(e: SecretError) -> Self {
        IdentityError::Secret(e)
    }
}

impl From<FileError> for IdentityError {
    fn from(e: FileError) -> Self {
        IdentityError::File(e)
    }
}

/// Why a certificate's text (as `ca sign` prints it) does not decode.
#[derive(Debug, PartialEq)]
pub enum CertificateTextError {
    /// Not hex.
    NotHex,
    /// Hex, but not a certificate's encoding.
    Undecodable(CodecError),
}

impl fmt::Display for CertificateTextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotHex => f.write_str("not a certificate (expected hex)"),
            Self::Undecodable(e) => write!(f, "not a certificate: {e}"),
        }
    }
}

impl std::error::Error for CertificateTextError {}

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

impl Identity {
    /// The installed certificate, if it is for our approver key (whether
    /// it is valid now is the caller's question).
    pub fn my_certificate(&self) -> Result<ApproverCertificate, IdentityError> {
        let cert = self
            .certificate
            .clone()
            .ok_or(IdentityError::NoCertificate)?;
        if cert.body.key.0 != self.approver.public() {
            return Err(IdentityError::InstalledForAnotherKey);
        }
        Ok(cert)
    }
}

/// Creates the identity file; refuses to overwrite one.
pub fn create(dirs: &Dirs, passphrase: &str) -> Result<Identity, IdentityError> {
    let path = dirs.config.join("identity.key");
    if path.exists() {
        return Err(IdentityError::Exists(path));
    }
    let (cp, ap) = (secret_file::random::<32>(), secret_file::random::<32>());
    let stored = Stored {
        control_plane_secret: hex::encode(cp),
        approver_seed: hex::encode(ap),
    };
    let json = Zeroizing::new(serde_json::to_vec(&stored).map_err(IdentityError::Encode)?);
    secret_file::write(&path, &secret_file::seal(&json, passphrase), 0o600)?;
    Ok(Identity {
        control_plane: StaticKeypair::from_secret(cp),
        approver: SigningSeed::new(ap),
        certificate: None,
    })
}

/// Loads the identity (asking for the passphrase if it is sealed).
pub fn load(dirs: &Dirs) -> Result<Identity, IdentityError> {
    let path = dirs.config.join("identity.key");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(source) => return Err(IdentityError::Missing { path, source }),
    };
    let plain = secret_file::unseal(bytes, "Passphrase for your support-admin identity: ")?;
    let Ok(s) = serde_json::from_slice::<Stored>(&plain) else {
        return Err(IdentityError::Damaged(path));
    };
    let key = |h: &str| -> Result<[u8; 32], IdentityError> {
        hex::decode(h)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| IdentityError::Damaged(path.clone()))
    };
    Ok(Identity {
        control_plane: StaticKeypair::from_secret(key(&s.control_plane_secret)?),
        approver: SigningSeed::new(key(&s.approver_seed)?),
        certificate: certificate(dirs)?,
    })
}

/// The installed approver certificate, if any.
pub fn certificate(dirs: &Dirs) -> Result<Option<ApproverCertificate>, IdentityError> {
    let path = dirs.config.join("certificate");
    match std::fs::read_to_string(&path) {
        Ok(t) => decode_certificate(&t)
            .map(Some)
            .map_err(|error| IdentityError::InstalledCertificate { path, error }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::at(path)(e).into()),
    }
}

/// A certificate as `ca sign` prints it (hex of its encoding).
pub fn decode_certificate(text: &str) -> Result<ApproverCertificate, CertificateTextError> {
    let bytes = hex::decode(text.trim()).map_err(|_| CertificateTextError::NotHex)?;
    support_protocol::decode(&bytes).map_err(CertificateTextError::Undecodable)
}

/// The text form of a certificate.
pub fn encode_certificate(c: &ApproverCertificate) -> String {
    hex::encode(support_protocol::encode(c).unwrap_or_default())
}

/// Whether `cert` is accepted as an approver's at `t`: signed by its own
/// issuer, with the approver role, inside its window, not issued in the
/// future. (Whether the issuer is the CA a device or a receiver pins only
/// they know.) What `approve` and a hand-off check before signing anything.
pub fn usable_now(cert: &ApproverCertificate, t: u64) -> Result<(), CertificateError> {
    cert.verify(&[cert.body.issuer.0], t, Role::Approver)
        .and_then(|()| cert.check_issued_at(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(d: &tempfile::TempDir) -> Dirs {
        Dirs {
            config: d.path().to_path_buf(),
            data: d.path().join("data"),
        }
    }

    #[test]
    fn an_identity_is_created_once_and_loaded() {
        let d = tempfile::tempdir().expect("tempdir");
        let made = create(&dirs(&d), "").expect("creates");
        let loaded = load(&dirs(&d)).expect("loads");
        assert_eq!(made.control_plane.public, loaded.control_plane.public);
        assert_eq!(made.approver.public(), loaded.approver.public());
        assert!(loaded.certificate.is_none());
        assert!(matches!(
            loaded.my_certificate(),
            Err(IdentityError::NoCertificate)
        ));
        let again = create(&dirs(&d), "").err().expect("refused");
        assert!(
            matches!(&again, IdentityError::Exists(p) if *p == d.path().join("identity.key")),
            "{again:?}"
        );
    }

    #[test]
    fn a_missing_or_damaged_identity_says_which() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("identity.key");
        assert!(matches!(
            load(&dirs(&d)),
            Err(IdentityError::Missing { path: p, .. }) if p == path
        ));
        std::fs::write(
            &path,
            r#"{"control_plane_secret":"00","approver_seed":"00"}"#,
        )
        .expect("write");
        assert!(matches!(
            load(&dirs(&d)),
            Err(IdentityError::Damaged(p)) if p == path
        ));
        std::fs::write(&path, "{").expect("write");
        assert!(matches!(
            load(&dirs(&d)),
            Err(IdentityError::Damaged(p)) if p == path
        ));
    }

    #[test]
    fn certificate_text_errors_say_what_is_wrong() {
        assert_eq!(
            decode_certificate("not hex").err(),
            Some(CertificateTextError::NotHex)
        );
        assert!(matches!(
            decode_certificate("00ff"),
            Err(CertificateTextError::Undecodable(_))
        ));
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("certificate"), "zz").expect("write");
        assert!(matches!(
            certificate(&dirs(&d)),
            Err(IdentityError::InstalledCertificate {
                error: CertificateTextError::NotHex,
                ..
            })
        ));
    }
}
