//! The approval box: what the admin sends the device, sealed and signed.
//!
//! * Sealed ([`crate::sealing`], label `approval box`) under the one-time
//!   secret and a fresh salt, so only the holder of the code can make one the
//!   device opens, and the control plane cannot read it.
//! * Associated data binds the tunnel id, the approval's sequence number and
//!   the device's public keys (the ML-KEM key by hash), so a box cannot be
//!   moved to another tunnel, request or approval.
//! * Signed by the approver over (associated data, salt, ciphertext) and
//!   carrying the approver's CA certificate, so the code alone is not enough.
//!
//! The device verifies certificate and signature first, then opens, then
//! checks the contents against its own request and configuration
//! ([`ApprovalContents::check_limits`]), all before changing anything.
//! [`SealedApproval::open_checked`] does all of it and is the only way to a
//! [`CheckedApproval`], which the device's PSK
//! ([`crate::hybrid_psk::derive_psk`]) requires.

use core::ops::Deref;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedBytes, BoundedVec, FixedBytes};
use crate::certificate::{ApproverCertificate, CertificateError, Role, SigningSeed};
use crate::codec::{decode_body, encode_body, CodecError, Message};
use crate::ids::{ApprovalSeq, TunnelId};
use crate::kem::{encapsulation_key_hash, KEM_CIPHERTEXT_LEN};
use crate::labels;
use crate::messages::request::MAX_PORTS;
use crate::one_time_code::OneTimeSecret;
use crate::sealing;
use crate::tunnel_keys::DevicePublicKeys;

/// The hub's UDP endpoint.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub enum RelayEndpoint {
    /// IPv4 address and port.
    V4([u8; 4], u16),
    /// IPv6 address and port.
    V6(FixedBytes<16>, u16),
}

/// The tunnel's virtual addresses (neither peer has a kernel interface).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct TunnelAddresses {
    /// The device's address inside the tunnel.
    pub device: [u8; 4],
    /// The admin's address inside the tunnel.
    pub admin: [u8; 4],
    /// The tunnel network's prefix length.
    pub prefix_len: u8,
}

impl TunnelAddresses {
    /// Both addresses in one network of 24 to 30 bits, distinct, neither the
    /// network nor the broadcast address.
    pub fn is_valid(&self) -> bool {
        if !(24..=30).contains(&self.prefix_len) {
            return false;
        }
        let mask = u32::MAX << (32 - u32::from(self.prefix_len));
        let d = u32::from_be_bytes(self.device);
        let a = u32::from_be_bytes(self.admin);
        let host = |x: u32| x & !mask;
        d != a
            && d & mask == a & mask
            && ![0, !mask].contains(&host(d))
            && ![0, !mask].contains(&host(a))
    }
}

/// What the approval tells the device.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct ApprovalContents {
    /// Where the hub listens.
    pub relay: RelayEndpoint,
    /// The admin's per-tunnel WireGuard public key.
    pub admin_wireguard: FixedBytes<32>,
    /// The admin's per-tunnel SSH public key (Ed25519).
    pub admin_ssh: FixedBytes<32>,
    /// The tunnel's virtual addresses.
    pub addresses: TunnelAddresses,
    /// The ML-KEM-768 ciphertext to the device's encapsulation key.
    pub kem_ciphertext: FixedBytes<KEM_CIPHERTEXT_LEN>,
    /// How long the tunnel may live once connected, in seconds.
    pub duration_secs: u32,
    /// The device ports the approval opens.
    pub ports: BoundedVec<u16, MAX_PORTS>,
    /// When the approver signed it (approver's clock, Unix seconds).
    pub issued_at: u64,
}

impl Message for ApprovalContents {
    const KIND: u8 = 0x03;
    const NAME: &'static str = "approval contents";
}

/// The largest sealed approval ciphertext.
pub const MAX_APPROVAL_CIPHERTEXT: usize = 2048;

/// The approval as it travels through the control plane.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct SealedApproval {
    /// Which approval of the tunnel this is.
    pub approval_seq: ApprovalSeq,
    /// The fresh salt of the sealing key.
    pub salt: FixedBytes<32>,
    /// The sealed [`ApprovalContents`].
    pub ciphertext: BoundedBytes<MAX_APPROVAL_CIPHERTEXT>,
    /// The approver's certificate.
    pub certificate: ApproverCertificate,
    /// The approver's signature.
    pub signature: FixedBytes<64>,
}

impl Message for SealedApproval {
    const KIND: u8 = 0x04;
    const NAME: &'static str = "sealed approval";
}

/// Why the device refuses an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalError {
    /// The approver's certificate is not acceptable.
    Certificate(CertificateError),
    /// The approver's signature does not verify.
    BadSignature,
    /// The box does not open (altered, or for another tunnel, approval or code).
    Unopenable,
    /// The opened contents do not decode.
    Malformed(CodecError),
    /// The approval is not newer than one already accepted.
    NotNewer {
        /// This approval's number.
        got: ApprovalSeq,
        /// The newest accepted before.
        accepted: ApprovalSeq,
    },
    /// The approval exceeds what the device asked for or allows.
    Limits(LimitError),
}

impl core::fmt::Display for ApprovalError {
    // No "approval refused" here: whoever reports the error names the
    // approval and says it was refused (the agent: "REFUSED, nothing
    // changed: approval #2: ...").
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Certificate(e) => write!(f, "{e}"),
            Self::BadSignature => f.write_str("the approver's signature does not verify"),
            Self::Unopenable => {
                f.write_str("the box does not open (altered, or sealed for another tunnel or code)")
            }
            Self::Malformed(e) => write!(f, "{e}"),
            Self::NotNewer { accepted, .. } => {
                write!(f, "not newer than the accepted approval {accepted}")
            }
            Self::Limits(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ApprovalError {}

/// Why an approval's contents exceed what the device asked for or allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    /// A port that was not requested or is not allowed by the device's config.
    PortNotAllowed(u16),
    /// No ports at all.
    NoPorts,
    /// Longer than requested or than the config's maximum (or zero).
    DurationNotAllowed {
        /// The approval's duration.
        approved: u32,
        /// The most the device accepts.
        max: u32,
    },
    /// The tunnel addresses are not a usable pair.
    BadAddresses,
}

impl core::fmt::Display for LimitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PortNotAllowed(p) => write!(
                f,
                "port {p} was not requested or is not allowed on this device"
            ),
            Self::NoPorts => f.write_str("the approval opens no ports"),
            Self::DurationNotAllowed { approved, max } => {
                write!(
                    f,
                    "a duration of {approved} s is not allowed (at most {max} s, and not 0)"
                )
            }
            Self::BadAddresses => f.write_str("the tunnel addresses are not a usable pair"),
        }
    }
}

/// What the device lets an approval open: its own request (from its own
/// record, never from the control plane) and its configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits<'a> {
    /// The ports the device asked for.
    pub requested_ports: &'a [u16],
    /// The duration the device asked for.
    pub requested_duration_secs: u32,
    /// The ports the device's configuration allows.
    pub allowed_ports: &'a [u16],
    /// The longest tunnel the device's configuration allows.
    pub max_duration_secs: u32,
}

impl ApprovalContents {
    /// Checks the approval against the device's own request and config: no
    /// port beyond both, no duration beyond both (nor zero), sane addresses.
    ///
    /// A predicate only: [`SealedApproval::open_checked`] calls it and is the
    /// way to a [`CheckedApproval`].
    pub fn check_limits(
        &self,
        requested_ports: &[u16],
        requested_duration_secs: u32,
        config_ports: &[u16],
        config_max_duration_secs: u32,
    ) -> Result<(), LimitError> {
        if self.ports.is_empty() {
            return Err(LimitError::NoPorts);
        }
        if let Some(&p) = self
            .ports
            .iter()
            .find(|p| !requested_ports.contains(p) || !config_ports.contains(p))
        {
            return Err(LimitError::PortNotAllowed(p));
        }
        let max = requested_duration_secs.min(config_max_duration_secs);
        if self.duration_secs == 0 || self.duration_secs > max {
            return Err(LimitError::DurationNotAllowed {
                approved: self.duration_secs,
                max,
            });
        }
        if !self.addresses.is_valid() {
            return Err(LimitError::BadAddresses);
        }
        Ok(())
    }
}

/// The associated data: what a box is bound to.
fn binding(tunnel_id: TunnelId, seq: ApprovalSeq, device: &DevicePublicKeys) -> [u8; 32] {
    labels::labelled_hash(
        labels::APPROVAL_BOX,
        &[
            &tunnel_id.to_bytes(),
            &seq.0.to_be_bytes(),
            &device.credential,
            &device.wireguard,
            &encapsulation_key_hash(&device.kem),
        ],
    )
}

fn signed_message(aad: &[u8; 32], salt: &[u8; 32], ciphertext: &[u8]) -> [u8; 32] {
    labels::labelled_hash(labels::APPROVAL_SIGNATURE, &[aad, salt, ciphertext])
}

/// What the admin needs to seal and sign an approval.
pub struct Approver<'a> {
    /// The approver's signing key.
    pub key: &'a SigningSeed,
    /// Its certificate from the support CA.
    pub certificate: &'a ApproverCertificate,
}

/// Seals and signs `contents` for the tunnel `tunnel_id` whose device keys are `device`.
pub fn seal_approval(
    contents: &ApprovalContents,
    tunnel_id: TunnelId,
    device: &DevicePublicKeys,
    approval_seq: ApprovalSeq,
    secret: &OneTimeSecret,
    salt: [u8; 32],
    approver: &Approver<'_>,
) -> SealedApproval {
    let aad = binding(tunnel_id, approval_seq, device);
    let ciphertext = sealing::seal(
        labels::APPROVAL_BOX,
        secret,
        &salt,
        &aad,
        &encode_body(contents),
    );
    let signature = approver.key.sign(&signed_message(&aad, &salt, &ciphertext));
    SealedApproval {
        approval_seq,
        salt: FixedBytes(salt),
        // The contents are bounded well below the ciphertext bound.
        ciphertext: BoundedBytes::new(ciphertext).unwrap_or_default(),
        certificate: approver.certificate.clone(),
        signature: FixedBytes(signature),
    }
}

/// An approval the device verified, opened and checked against its limits,
/// for its own tunnel and keys.
///
/// Only [`SealedApproval::open_checked`] makes one (the fields are private and
/// there is no `Deserialize`), so what requires it (the device's PSK, the
/// device's peer configuration) cannot be reached with contents that skipped
/// a check. It reads as its [`ApprovalContents`] (`Deref`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CheckedApproval {
    tunnel_id: TunnelId,
    seq: ApprovalSeq,
    device: DevicePublicKeys,
    contents: ApprovalContents,
    box_hash: [u8; 32],
}

impl CheckedApproval {
    /// The tunnel it was opened for.
    pub fn tunnel_id(&self) -> TunnelId {
        self.tunnel_id
    }

    /// Which approval of the tunnel it is.
    pub fn seq(&self) -> ApprovalSeq {
        self.seq
    }

    /// The device keys the box was bound to (and opened with).
    pub fn device(&self) -> &DevicePublicKeys {
        &self.device
    }

    /// What it says.
    pub fn contents(&self) -> &ApprovalContents {
        &self.contents
    }

    /// The sealed approval's hash, which the connected report binds
    /// ([`SealedApproval::hash`]).
    pub fn box_hash(&self) -> [u8; 32] {
        self.box_hash
    }
}

impl Deref for CheckedApproval {
    type Target = ApprovalContents;

    fn deref(&self) -> &ApprovalContents {
        &self.contents
    }
}

/// What the device trusts when it verifies an approval.
pub struct Trust<'a> {
    /// The pinned support-CA public keys.
    pub ca_keys: &'a [[u8; 32]],
    /// The device's lower bound on the current time (see [`crate::certificate`]).
    pub time_floor: u64,
    /// The newest approval the device accepted for this tunnel, if any.
    pub accepted: Option<ApprovalSeq>,
}

impl SealedApproval {
    /// The hash the device's connected report binds to.
    pub fn hash(&self) -> [u8; 32] {
        labels::labelled_hash(labels::BOX_HASH, &[&encode_body(self)])
    }

    /// Verifies, opens and checks the approval for the device's own tunnel:
    /// everything [`Self::open`] checks, then the limits
    /// ([`ApprovalContents::check_limits`], failing as
    /// [`ApprovalError::Limits`]). The only way to a [`CheckedApproval`].
    pub fn open_checked(
        &self,
        tunnel_id: TunnelId,
        device: &DevicePublicKeys,
        secret: &OneTimeSecret,
        trust: &Trust<'_>,
        limits: &Limits<'_>,
    ) -> Result<CheckedApproval, ApprovalError> {
        let contents = self.open(tunnel_id, device, secret, trust)?;
        contents
            .check_limits(
                limits.requested_ports,
                limits.requested_duration_secs,
                limits.allowed_ports,
                limits.max_duration_secs,
            )
            .map_err(ApprovalError::Limits)?;
        Ok(CheckedApproval {
            tunnel_id,
            seq: self.approval_seq,
            device: device.clone(),
            contents,
            box_hash: self.hash(),
        })
    }

    /// What a party without the one-time secret can check (the control
    /// plane, before it stores the approval): the certificate under
    /// `ca_keys`, of the approver role and valid at `now` by that party's own
    /// clock ([`ApproverCertificate::verify_at`]), and the approver's
    /// signature over this box for this tunnel and these device keys.
    /// Returns the certified approver's name. The device checks all of it
    /// again, against its own trust ([`Self::open_checked`]).
    pub fn verify_signer(
        &self,
        tunnel_id: TunnelId,
        device: &DevicePublicKeys,
        ca_keys: &[[u8; 32]],
        now: u64,
    ) -> Result<&str, ApprovalError> {
        self.certificate
            .verify_at(ca_keys, now, Role::Approver)
            .map_err(ApprovalError::Certificate)?;
        let aad = binding(tunnel_id, self.approval_seq, device);
        self.check_signature(&aad)?;
        Ok(self.certificate.body.name.as_str())
    }

    /// The certified approver's signature over the box bound to `aad`.
    fn check_signature(&self, aad: &[u8; 32]) -> Result<(), ApprovalError> {
        let vk = VerifyingKey::from_bytes(&self.certificate.body.key.0)
            .map_err(|_| ApprovalError::BadSignature)?;
        vk.verify_strict(
            &signed_message(aad, &self.salt.0, &self.ciphertext),
            &Signature::from_bytes(&self.signature.0),
        )
        .map_err(|_| ApprovalError::BadSignature)
    }

    /// Verifies and opens the approval for the device's own tunnel: newer
    /// than any accepted, certificate, signature, box, issue time. Limits are
    /// not checked: [`Self::open_checked`] checks both, and only its
    /// [`CheckedApproval`] goes on to a PSK.
    pub fn open(
        &self,
        tunnel_id: TunnelId,
        device: &DevicePublicKeys,
        secret: &OneTimeSecret,
        trust: &Trust<'_>,
    ) -> Result<ApprovalContents, ApprovalError> {
        if let Some(accepted) = trust.accepted {
            if self.approval_seq <= accepted {
                return Err(ApprovalError::NotNewer {
                    got: self.approval_seq,
                    accepted,
                });
            }
        }
        self.certificate
            .verify(trust.ca_keys, trust.time_floor, Role::Approver)
            .map_err(ApprovalError::Certificate)?;
        let aad = binding(tunnel_id, self.approval_seq, device);
        self.check_signature(&aad)?;
        let plain = sealing::open(
            labels::APPROVAL_BOX,
            secret,
            &self.salt.0,
            &aad,
            &self.ciphertext,
        )
        .map_err(|_| ApprovalError::Unopenable)?;
        let contents: ApprovalContents =
            decode_body(plain.as_slice()).map_err(ApprovalError::Malformed)?;
        self.certificate
            .check_issued_at(contents.issued_at)
            .map_err(ApprovalError::Certificate)?;
        Ok(contents)
    }
}
