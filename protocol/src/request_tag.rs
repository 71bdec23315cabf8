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
use crate::ids::TunnelId;
use crate::labels;
use crate::messages::request::{RequestBody, TunnelRequest};
use crate::one_time_code::OneTimeSecret;
use crate::tunnel_keys::DevicePublicKeys;

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

/// A request whose tag verified under the one-time secret: proof, in the
/// type, that the control plane did not alter what the device asked for.
///
/// Only [`verify`] makes one (the field is private and there is no
/// `Deserialize`), so code that takes a `&VerifiedRequest` (the admin's hub
/// launch) cannot be reached with a request nobody checked.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedRequest {
    request: TunnelRequest,
}

impl VerifiedRequest {
    /// The request, tag included.
    pub fn request(&self) -> &TunnelRequest {
        &self.request
    }

    /// What the device asked for.
    pub fn body(&self) -> &RequestBody {
        &self.request.body
    }

    /// The tunnel the request is for.
    pub fn tunnel_id(&self) -> TunnelId {
        self.request.body.tunnel_id
    }

    /// The device's public keys as the verified request states them.
    pub fn device_public_keys(&self) -> DevicePublicKeys {
        self.request.device_public_keys()
    }

    /// The request, giving up the proof.
    pub fn into_request(self) -> TunnelRequest {
        self.request
    }
}

/// Verifies `request`'s tag in constant time; on success the request comes
/// back as a [`VerifiedRequest`].
pub fn verify(
    secret: &OneTimeSecret,
    request: &TunnelRequest,
) -> Result<VerifiedRequest, TagMismatch> {
    let expected = compute(secret, &request.body);
    if bool::from(expected.0 .0.ct_eq(&request.tag.0 .0)) {
        Ok(VerifiedRequest {
            request: request.clone(),
        })
    } else {
        Err(TagMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::{BoundedString, BoundedVec};
    use crate::messages::DeviceFacts;
    use crate::tunnel_keys::DeviceTunnelKeys;

    fn request(keys: &DeviceTunnelKeys) -> TunnelRequest {
        TunnelRequest::new(
            keys,
            DeviceFacts {
                hostname: BoundedString::new("h").unwrap_or_default(),
                model: BoundedString::new("m").unwrap_or_default(),
                firmware: BoundedString::new("f").unwrap_or_default(),
                agent_version: BoundedString::new("a").unwrap_or_default(),
            },
            600,
            BoundedVec::try_from(&[22u16][..]).unwrap_or_default(),
            BoundedString::new("").unwrap_or_default(),
        )
    }

    #[test]
    fn only_a_request_whose_tag_verifies_becomes_a_verified_request() {
        let keys = DeviceTunnelKeys::from_seed([1; 32]);
        let r = request(&keys);
        let v = verify(&keys.one_time_secret(), &r).expect("verifies");
        assert_eq!(v.request(), &r);
        assert_eq!(v.body(), &r.body);
        assert_eq!(v.tunnel_id(), keys.tunnel_id());
        assert_eq!(v.device_public_keys(), keys.public_keys());
        assert_eq!(v.into_request(), r);

        let other = DeviceTunnelKeys::from_seed([2; 32]);
        assert_eq!(verify(&other.one_time_secret(), &r), Err(TagMismatch));
        let mut altered = r.clone();
        altered.body.duration_secs += 1;
        assert_eq!(verify(&keys.one_time_secret(), &altered), Err(TagMismatch));
    }
}
