//! The WireGuard pre-shared key: one-time secret + ML-KEM-768.
//!
//! ```text
//! PSK = HKDF-SHA256(
//!     salt = "support-tunnel v1 hybrid psk",
//!     ikm  = ML-KEM shared secret || one-time secret,
//!     info = label || tunnel id || device WG public || admin WG public
//!                  || H(ML-KEM encapsulation key) || H(ML-KEM ciphertext))
//! ```
//!
//! What each input defends against:
//! * **ML-KEM shared secret**: a recorder who later breaks X25519 (a quantum
//!   computer) recovers WireGuard's Diffie-Hellman results, but not this; the
//!   PSK is mixed into every WireGuard handshake, so the traffic stays sealed.
//! * **One-time secret**: should ML-KEM turn out weak, the PSK still needs the
//!   code that only the owner and the engineer saw; and a control plane that
//!   swaps the KEM key cannot produce a matching PSK.
//! * **Tunnel id and both WireGuard public keys**: the PSK belongs to exactly
//!   this pair of peers in this tunnel; it is useless anywhere else.
//! * **Hashes of the encapsulation key and ciphertext**: bind the KEM
//!   transcript (as X-Wing does), so a substituted key or ciphertext that
//!   happened to yield a known shared secret still gives another PSK.
//!
//! HKDF-Extract over the concatenation is a sound combiner: the output is
//! pseudorandom if either secret is (the same shape as TLS 1.3 hybrid key
//! exchange).
//!
//! Two entry points, one derivation: the device's [`derive_psk`] takes a
//! [`CheckedApproval`], so it runs only after the approval was verified,
//! opened and checked; the approver's [`derive_approver_psk`] takes a
//! [`VerifiedRequest`] and what it wrote itself, because the approver is the
//! approval's author and has nothing to open.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::approval_box::CheckedApproval;
use crate::ids::TunnelId;
use crate::kem::{
    ciphertext_hash, encapsulation_key_hash, KEM_CIPHERTEXT_LEN, KEM_ENCAPSULATION_KEY_LEN,
};
use crate::labels;
use crate::one_time_code::OneTimeSecret;
use crate::request_tag::VerifiedRequest;

/// Everything the PSK is derived from, field by field. The two entry points
/// fill it from a [`CheckedApproval`] (the device) or a [`VerifiedRequest`]
/// (the approver); tests that vary one input at a time use
/// `fixtures::psk_from_inputs` (feature `test-fixtures`).
pub struct PskInputs<'a> {
    /// The one-time secret.
    pub one_time_secret: &'a OneTimeSecret,
    /// The ML-KEM-768 shared secret.
    pub kem_shared_secret: &'a [u8; 32],
    /// The tunnel.
    pub tunnel_id: TunnelId,
    /// The device's WireGuard public key.
    pub device_wireguard: &'a [u8; 32],
    /// The admin's WireGuard public key.
    pub admin_wireguard: &'a [u8; 32],
    /// The device's ML-KEM encapsulation key.
    pub kem_encapsulation_key: &'a [u8; KEM_ENCAPSULATION_KEY_LEN],
    /// The admin's ML-KEM ciphertext.
    pub kem_ciphertext: &'a [u8; KEM_CIPHERTEXT_LEN],
}

/// The device's 32-byte WireGuard PSK, from the approval it verified,
/// opened and checked ([`crate::approval_box::SealedApproval::open_checked`]):
/// the tunnel, both device keys the box was bound to, and the admin's key
/// and ciphertext all come from `approval`; the shared secret is the
/// device's decapsulation of `approval.kem_ciphertext`.
pub fn derive_psk(
    approval: &CheckedApproval,
    one_time_secret: &OneTimeSecret,
    kem_shared_secret: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    derive(&PskInputs {
        one_time_secret,
        kem_shared_secret,
        tunnel_id: approval.tunnel_id(),
        device_wireguard: &approval.device().wireguard,
        admin_wireguard: &approval.admin_wireguard.0,
        kem_encapsulation_key: &approval.device().kem.0,
        kem_ciphertext: &approval.kem_ciphertext.0,
    })
}

/// The approver's 32-byte WireGuard PSK (the same value the device derives).
///
/// The approver takes no [`CheckedApproval`] because it has none to take: it
/// is the author of the approval (it chose the admin key, made the ML-KEM
/// ciphertext and wrote the contents). Its one input from outside, the
/// device's request, it takes only as a [`VerifiedRequest`]: the tunnel and
/// both device keys come from the request whose tag the one-time code
/// verified. The device has no verified request of its own to give, so its
/// only way to a PSK stays [`derive_psk`], which skips no check.
pub fn derive_approver_psk(
    request: &VerifiedRequest,
    one_time_secret: &OneTimeSecret,
    kem_shared_secret: &[u8; 32],
    admin_wireguard: &[u8; 32],
    kem_ciphertext: &[u8; KEM_CIPHERTEXT_LEN],
) -> Zeroizing<[u8; 32]> {
    let body = request.body();
    derive(&PskInputs {
        one_time_secret,
        kem_shared_secret,
        tunnel_id: request.tunnel_id(),
        device_wireguard: &body.wireguard.0,
        admin_wireguard,
        kem_encapsulation_key: &body.kem.0,
        kem_ciphertext,
    })
}

pub(crate) fn derive(inputs: &PskInputs<'_>) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 48]);
    ikm[..32].copy_from_slice(inputs.kem_shared_secret);
    ikm[32..].copy_from_slice(inputs.one_time_secret.as_bytes());
    let hk = Hkdf::<Sha256>::new(Some(labels::HYBRID_PSK), ikm.as_ref());
    let mut psk = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA256 output length.
    hk.expand_multi_info(
        &[
            labels::HYBRID_PSK,
            &inputs.tunnel_id.to_bytes(),
            inputs.device_wireguard,
            inputs.admin_wireguard,
            &encapsulation_key_hash(inputs.kem_encapsulation_key),
            &ciphertext_hash(inputs.kem_ciphertext),
        ],
        psk.as_mut(),
    )
    .unwrap_or_default();
    psk
}
