//! ML-KEM-768 (FIPS 203) wrappers over the `ml-kem` crate, on raw byte arrays.
//!
//! Randomness is an argument (the key seed, the encapsulation's `m`) so the
//! protocol stays deterministic and has known-answer tests.

use ml_kem::kem::{Decapsulate, KeyExport};
use ml_kem::{DecapsulationKey768, EncapsulationKey768};

use crate::labels;

/// Bytes of an ML-KEM-768 encapsulation key.
pub const KEM_ENCAPSULATION_KEY_LEN: usize = 1184;
/// Bytes of an ML-KEM-768 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;

/// The encapsulation key is not a valid ML-KEM-768 key (FIPS 203 modulus check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidKemKey;

impl core::fmt::Display for InvalidKemKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the ML-KEM-768 encapsulation key is invalid")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for InvalidKemKey {}

/// The device's ML-KEM-768 decapsulation key.
pub struct KemDecapsulationKey(DecapsulationKey768);

impl KemDecapsulationKey {
    /// The key whose 64-byte FIPS 203 seed (d || z) is `seed`.
    pub fn from_seed(seed: &[u8; 64]) -> Self {
        Self(DecapsulationKey768::from_seed((*seed).into()))
    }

    /// The encapsulation key, to publish.
    pub fn encapsulation_key_bytes(&self) -> [u8; KEM_ENCAPSULATION_KEY_LEN] {
        self.0.encapsulation_key().to_bytes().into()
    }

    /// The shared secret inside `ciphertext`. ML-KEM decapsulation never fails:
    /// a forged ciphertext yields an unrelated secret (implicit rejection), and
    /// the PSK then simply does not match.
    pub fn decapsulate(&self, ciphertext: &[u8; KEM_CIPHERTEXT_LEN]) -> [u8; 32] {
        self.0.decapsulate(&(*ciphertext).into()).into()
    }
}

/// Encapsulates to `encapsulation_key` with randomness `m`: returns the
/// ciphertext and the shared secret.
pub fn encapsulate(
    encapsulation_key: &[u8; KEM_ENCAPSULATION_KEY_LEN],
    m: &[u8; 32],
) -> Result<([u8; KEM_CIPHERTEXT_LEN], [u8; 32]), InvalidKemKey> {
    let ek = EncapsulationKey768::new(&(*encapsulation_key).into()).map_err(|_| InvalidKemKey)?;
    let (ct, shared) = ek.encapsulate_deterministic(&(*m).into());
    Ok((ct.into(), shared.into()))
}

/// The hash by which boxes and the PSK bind an encapsulation key.
pub fn encapsulation_key_hash(encapsulation_key: &[u8; KEM_ENCAPSULATION_KEY_LEN]) -> [u8; 32] {
    labels::labelled_hash(labels::KEM_KEY_HASH, &[encapsulation_key])
}

/// The hash by which the PSK binds a ciphertext.
pub fn ciphertext_hash(ciphertext: &[u8; KEM_CIPHERTEXT_LEN]) -> [u8; 32] {
    labels::labelled_hash(labels::KEM_CIPHERTEXT_HASH, &[ciphertext])
}
