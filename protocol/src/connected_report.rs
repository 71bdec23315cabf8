//! The device's "connected" report, sealed for the admin.
//!
//! Same construction as the approval box with its own label. It binds the
//! hash of the approval box the device accepted and carries the device's sshd
//! host keys, so the admin can pin them: the control plane relays the report
//! but cannot read it or substitute host keys.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::bounded::{BoundedBytes, BoundedString, BoundedVec, FixedBytes};
use crate::codec::{decode_body, encode_body, CodecError, Message};
use crate::ids::{ApprovalSeq, TunnelId};
use crate::labels;
use crate::one_time_code::OneTimeSecret;
use crate::sealing;

/// The most host keys a report carries.
pub const MAX_HOST_KEYS: usize = 4;

/// What the device reports once connected.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct ConnectedReport {
    /// The hash of the sealed approval the device accepted.
    pub accepted_box: FixedBytes<32>,
    /// The sshd host keys, in OpenSSH public-key format (`ssh-ed25519 AAAA...`).
    pub host_keys: BoundedVec<BoundedString<1024>, MAX_HOST_KEYS>,
}

impl Message for ConnectedReport {
    const KIND: u8 = 0x05;
    const NAME: &'static str = "connected report";
}

/// The report as it travels through the control plane.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct SealedReport {
    /// The fresh salt of the sealing key.
    pub salt: FixedBytes<32>,
    /// The sealed [`ConnectedReport`].
    pub ciphertext: BoundedBytes<4608>,
}

impl Message for SealedReport {
    const KIND: u8 = 0x06;
    const NAME: &'static str = "sealed report";
}

/// Why the admin refuses a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportError {
    /// The box does not open (altered, or for another tunnel, approval or code).
    Unopenable,
    /// The opened contents do not decode.
    Malformed(CodecError),
    /// The device accepted another approval than the one the admin sent.
    OtherApproval,
}

impl core::fmt::Display for ReportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unopenable => f.write_str(
                "the connected report does not open: it was altered or is for another tunnel",
            ),
            Self::Malformed(e) => write!(f, "the connected report is malformed: {e}"),
            Self::OtherApproval => {
                f.write_str("the device accepted a different approval than the one sent")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ReportError {}

fn binding(tunnel_id: TunnelId, seq: ApprovalSeq) -> [u8; 32] {
    labels::labelled_hash(
        labels::CONNECTED_REPORT,
        &[&tunnel_id.to_bytes(), &seq.0.to_be_bytes()],
    )
}

impl ConnectedReport {
    /// Seals the report for the admin. `salt` must be fresh random bytes.
    pub fn seal(
        &self,
        tunnel_id: TunnelId,
        seq: ApprovalSeq,
        secret: &OneTimeSecret,
        salt: [u8; 32],
    ) -> Result<SealedReport, crate::bounded::BoundError> {
        let aad = binding(tunnel_id, seq);
        let ct = sealing::seal(
            labels::CONNECTED_REPORT,
            secret,
            &salt,
            &aad,
            &encode_body(self),
        );
        Ok(SealedReport {
            salt: FixedBytes(salt),
            ciphertext: BoundedBytes::new(ct)?,
        })
    }
}

impl SealedReport {
    /// Opens the report and checks that it accepted the approval whose hash is `expected_box`.
    pub fn open(
        &self,
        tunnel_id: TunnelId,
        seq: ApprovalSeq,
        secret: &OneTimeSecret,
        expected_box: &[u8; 32],
    ) -> Result<ConnectedReport, ReportError> {
        let aad = binding(tunnel_id, seq);
        let plain = sealing::open(
            labels::CONNECTED_REPORT,
            secret,
            &self.salt.0,
            &aad,
            &self.ciphertext,
        )
        .map_err(|_| ReportError::Unopenable)?;
        let report: ConnectedReport =
            decode_body(plain.as_slice()).map_err(ReportError::Malformed)?;
        if !bool::from(report.accepted_box.0.ct_eq(expected_box)) {
            return Err(ReportError::OtherApproval);
        }
        Ok(report)
    }
}
