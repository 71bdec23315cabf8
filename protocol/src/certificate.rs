//! The support CA and approver certificates.
//!
//! The support organization keeps an offline Ed25519 CA key; devices pin its
//! public key (a list, for rotation). The CA certifies each approver's own
//! Ed25519 key with a certificate naming the approver, the key, a role and a
//! validity window. An approval box is only accepted with such a certificate
//! and a signature by the certified key, so a compromised control plane that
//! learns a one-time code still cannot approve anything.
//!
//! # Validity without a trustworthy clock
//!
//! Pi-class devices have no real-time clock, so the device's wall clock is
//! never consulted. The rule:
//!
//! 1. the certificate's signature verifies under a pinned CA key (the
//!    `issuer` field names which), and its window is well-formed
//!    (`not_before <= not_after`);
//! 2. the approval's `issued_at` (the approver's clock, signed by the
//!    approver) lies inside `[not_before, not_after]`;
//! 3. `not_after` is not before the device's *time floor*: a lower bound on
//!    the current time that the device knows without its clock (the agent's
//!    build time, and the newest `issued_at` it has accepted before).
//!
//! A device whose clock reads 1970 or 2099 is therefore never locked out, and
//! a certificate known to have expired (by the floor) is refused. What this
//! gives up: an approver key that leaks after its certificate expired can
//! still sign approvals back-dated into the window, until the device's floor
//! passes `not_after`. Keep certificate lifetimes short (the CLI defaults to
//! 90 days) and rotate the CA pin when a key leaks.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::bounded::{BoundedString, FixedBytes};
use crate::codec::{encode_body, Message};
use crate::labels;

/// What a certified key may do.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub enum Role {
    /// May approve tunnels (devices accept its approvals).
    Approver,
    /// May look, not approve.
    Viewer,
}

/// The signed part of a certificate.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct CertificateBody {
    /// The CA key that signed it.
    pub issuer: FixedBytes<32>,
    /// The approver's name, as the device's log will show it.
    pub name: BoundedString<64>,
    /// The approver's Ed25519 public key.
    pub key: FixedBytes<32>,
    /// What the key may do.
    pub role: Role,
    /// The CA's serial number for this certificate.
    pub serial: u64,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
}

/// A CA-signed approver certificate.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct ApproverCertificate {
    /// What is certified.
    pub body: CertificateBody,
    /// The CA's Ed25519 signature over the labelled body.
    pub signature: FixedBytes<64>,
}

impl Message for ApproverCertificate {
    const KIND: u8 = 0x02;
    const NAME: &'static str = "approver certificate";
}

/// Why a certificate is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateError {
    /// The issuer is not among the CA keys this side pins.
    UnknownIssuer,
    /// The CA's signature does not verify.
    BadSignature,
    /// `not_before` is after `not_after`.
    MalformedValidity,
    /// The certificate expired before the time floor.
    Expired {
        /// End of validity.
        not_after: u64,
        /// The verifier's lower bound on the current time.
        time_floor: u64,
    },
    /// The certificate does not grant this role.
    WrongRole {
        /// The role required.
        required: Role,
        /// The role certified.
        certified: Role,
    },
    /// The approval was issued outside the certificate's validity window.
    IssuedOutsideValidity {
        /// The approval's issue time.
        issued_at: u64,
    },
    /// By a clock the verifier trusts, the certificate is not valid yet.
    NotYetValid {
        /// Start of validity.
        not_before: u64,
        /// The verifier's time.
        now: u64,
    },
}

impl core::fmt::Display for CertificateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnknownIssuer => f.write_str("the approver's certificate is not from a pinned support CA"),
            Self::BadSignature => f.write_str("the approver's certificate has an invalid CA signature"),
            Self::MalformedValidity => f.write_str("the approver's certificate has an empty validity window"),
            Self::Expired { not_after, time_floor } => write!(
                f,
                "the approver's certificate expired (valid until {not_after}, and it is at least {time_floor})"
            ),
            Self::WrongRole { required, certified } => {
                write!(f, "the certificate is for role {certified:?}, but {required:?} is required")
            }
            Self::IssuedOutsideValidity { issued_at } => {
                write!(f, "the approval was issued at {issued_at}, outside the certificate's validity")
            }
            Self::NotYetValid { not_before, now } => {
                write!(f, "the approver's certificate is valid only from {not_before} (it is {now})")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CertificateError {}

fn signed_bytes(body: &CertificateBody) -> alloc::vec::Vec<u8> {
    let mut m = alloc::vec::Vec::from(labels::CERTIFICATE);
    m.extend_from_slice(&encode_body(body));
    m
}

impl ApproverCertificate {
    /// Checks rule 1 and 3 of the module's validity rule and the role: the
    /// issuer is pinned, the signature verifies, the window is well-formed and
    /// not over by `time_floor`.
    pub fn verify(
        &self,
        pinned_cas: &[[u8; 32]],
        time_floor: u64,
        required: Role,
    ) -> Result<(), CertificateError> {
        let issuer = pinned_cas
            .iter()
            .find(|k| **k == self.body.issuer.0)
            .ok_or(CertificateError::UnknownIssuer)?;
        let vk = VerifyingKey::from_bytes(issuer).map_err(|_| CertificateError::UnknownIssuer)?;
        let sig = Signature::from_bytes(&self.signature.0);
        vk.verify_strict(&signed_bytes(&self.body), &sig)
            .map_err(|_| CertificateError::BadSignature)?;
        if self.body.not_before > self.body.not_after {
            return Err(CertificateError::MalformedValidity);
        }
        if self.body.not_after < time_floor {
            return Err(CertificateError::Expired {
                not_after: self.body.not_after,
                time_floor,
            });
        }
        if self.body.role != required {
            return Err(CertificateError::WrongRole {
                required,
                certified: self.body.role,
            });
        }
        Ok(())
    }

    /// The check of a verifier with a clock it trusts (the control plane,
    /// not the device): [`Self::verify`] with `now` as the floor, and not
    /// before the window either. An approver's clock set back cannot make
    /// an expired certificate pass here.
    pub fn verify_at(
        &self,
        pinned_cas: &[[u8; 32]],
        now: u64,
        required: Role,
    ) -> Result<(), CertificateError> {
        self.verify(pinned_cas, now, required)?;
        if now < self.body.not_before {
            return Err(CertificateError::NotYetValid {
                not_before: self.body.not_before,
                now,
            });
        }
        Ok(())
    }

    /// Rule 2: `issued_at` lies in the validity window.
    pub fn check_issued_at(&self, issued_at: u64) -> Result<(), CertificateError> {
        if issued_at < self.body.not_before || issued_at > self.body.not_after {
            return Err(CertificateError::IssuedOutsideValidity { issued_at });
        }
        Ok(())
    }
}

/// An Ed25519 signing key from a 32-byte seed (the support CA, or an approver).
pub struct SigningSeed(Zeroizing<[u8; 32]>);

impl SigningSeed {
    /// Wraps a 32-byte seed.
    pub fn new(seed: [u8; 32]) -> Self {
        Self(Zeroizing::new(seed))
    }

    fn key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.0)
    }

    /// The public key.
    pub fn public(&self) -> [u8; 32] {
        self.key().verifying_key().to_bytes()
    }

    /// An Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key().sign(message).to_bytes()
    }
}

/// The support organization's offline CA.
pub struct SupportCa(pub SigningSeed);

impl SupportCa {
    /// Certifies `key` as `name` with `role` for `[not_before, not_after]`.
    pub fn certify(
        &self,
        name: BoundedString<64>,
        key: [u8; 32],
        role: Role,
        serial: u64,
        not_before: u64,
        not_after: u64,
    ) -> ApproverCertificate {
        let body = CertificateBody {
            issuer: FixedBytes(self.0.public()),
            name,
            key: FixedBytes(key),
            role,
            serial,
            not_before,
            not_after,
        };
        let signature = FixedBytes(self.0.sign(&signed_bytes(&body)));
        ApproverCertificate { body, signature }
    }
}
