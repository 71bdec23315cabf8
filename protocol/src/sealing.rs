//! The sealing construction shared by the approval box and the connected report.
//!
//! key = HKDF-SHA256(salt = a fresh random 32-byte salt, ikm = one-time secret,
//! info = the box's label || associated data); ciphertext =
//! ChaCha20-Poly1305(key, nonce = 0, associated data, plaintext). A key is
//! used for exactly one message: the salt is fresh per box, and because the
//! associated data (tunnel, approval number, keys) is in the key derivation
//! too, even a reused salt gives another key for another approval, so the
//! fixed nonce is never reused under a key.
//! Only the device and whoever holds the one-time code can seal or open.
//! [`seal_with`]/[`open_with`] are the same construction under other input
//! key material (the hand-off package: an X25519 shared secret).

use alloc::vec::Vec;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::one_time_code::OneTimeSecret;

/// A box did not open: wrong one-time secret, wrong associated data (another
/// tunnel or approval), or altered bytes. The three are deliberately indistinguishable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

impl core::fmt::Display for OpenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(
            "the sealed box does not open: it was altered, or sealed for another tunnel or code",
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for OpenError {}

fn cipher(label: &[u8], ikm: &[u8], salt: &[u8; 32], aad: &[u8]) -> ChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA256 output length.
    hk.expand_multi_info(&[label, aad], key.as_mut())
        .unwrap_or_default();
    ChaCha20Poly1305::new(key.as_ref().into())
}

/// Seals `plaintext` under the one-time secret and `salt`, binding `aad`.
pub fn seal(
    label: &[u8],
    secret: &OneTimeSecret,
    salt: &[u8; 32],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    seal_with(label, secret.as_bytes(), salt, aad, plaintext)
}

/// [`seal`] under any input key material (the hand-off package uses an
/// X25519 shared secret): the same HKDF and ChaCha20-Poly1305 construction.
pub fn seal_with(
    label: &[u8],
    ikm: &[u8],
    salt: &[u8; 32],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    cipher(label, ikm, salt, aad)
        .encrypt(
            &[0u8; 12].into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        // ChaCha20-Poly1305 encryption only fails for inputs beyond 256 GiB.
        .unwrap_or_default()
}

/// Opens a box sealed by [`seal`] with the same label, secret, salt and `aad`.
pub fn open(
    label: &[u8],
    secret: &OneTimeSecret,
    salt: &[u8; 32],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    open_with(label, secret.as_bytes(), salt, aad, ciphertext)
}

/// Opens a box sealed by [`seal_with`].
pub fn open_with(
    label: &[u8],
    ikm: &[u8],
    salt: &[u8; 32],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    cipher(label, ikm, salt, aad)
        .decrypt(
            &[0u8; 12].into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| OpenError)
}
