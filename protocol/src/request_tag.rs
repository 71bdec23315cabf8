//! The request tag: a MAC over everything the device asks for, keyed from
//! the one-time secret.
//!
//! tag = HMAC-SHA256(PRK, label || postcard(request body) || 0x01) with
//! PRK = HKDF-Extract(salt = label, ikm = one-time secret), i.e. HKDF-Expand
//! with the body as info. The request body holds the tunnel id, the
//! credential and WireGuard keys, the ML-KEM encapsulation key, the facts, the
//! duration, the ports and the note. The control plane stores the tag but
//! cannot recompute it: the admin, who has the code, verifies it before
//! launching anything, so a control plane that swaps a key or widens the ports
//! is caught.

use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::bounded::FixedBytes;
use crate::codec::encode_body;
use crate::labels;
use crate::messages::request::{RequestBody, TunnelRequest};
use crate::one_time_code::OneTimeSecret;

/// The 32-byte request tag.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct RequestTag(pub FixedBytes<32>);

/// The request does not match its tag: something between the device and the
/// admin (the control plane) changed it, or the code belongs to another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagMismatch;

impl core::fmt::Display for TagMismatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(
            "the request does not match its tag: the control plane altered it, or the code is for another request",
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TagMismatch {}

/// Computes the tag of `body` under the one-time secret.
pub fn compute(secret: &OneTimeSecret, body: &RequestBody) -> RequestTag {
    // HKDF-Expand is HMAC-SHA256(PRK, info || 0x01): with the body as info it
    // is a MAC keyed by the PRK extracted from the one-time secret.
    let hk = Hkdf::<Sha256>::new(Some(labels::REQUEST_TAG), secret.as_bytes());
    let mut tag = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    hk.expand_multi_info(&[labels::REQUEST_TAG, &encode_body(body)], &mut tag)
        .unwrap_or_default();
    RequestTag(FixedBytes(tag))
}

/// Verifies `request`'s tag in constant time.
pub fn verify(secret: &OneTimeSecret, request: &TunnelRequest) -> Result<(), TagMismatch> {
    let expected = compute(secret, &request.body);
    if bool::from(expected.0 .0.ct_eq(&request.tag.0 .0)) {
        Ok(())
    } else {
        Err(TagMismatch)
    }
}
