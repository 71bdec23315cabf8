//! Per-tunnel key material, derived from one random seed per side.
//!
//! The device keeps a single 32-byte seed per tunnel (0600 on disk, wiped at
//! the end) and derives every key from it with HKDF-SHA256 under distinct
//! labels, so the keys are independent: learning one reveals nothing about
//! the others. The admin does the same with its own seed.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::bounded::FixedBytes;
use crate::control_channel::StaticKeypair;
use crate::ids::TunnelId;
use crate::kem::{KemDecapsulationKey, KEM_ENCAPSULATION_KEY_LEN};
use crate::labels;
use crate::one_time_code::OneTimeSecret;

/// An X25519 key pair as raw bytes (WireGuard keys; boringtun takes raw arrays).
#[derive(Clone)]
pub struct X25519Keypair {
    /// The private key. Never leaves the side that made it.
    pub secret: Zeroizing<[u8; 32]>,
    /// The public key.
    pub public: [u8; 32],
}

impl X25519Keypair {
    /// The key pair whose private key is `secret`.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let s = x25519_dalek::StaticSecret::from(secret);
        let public = x25519_dalek::PublicKey::from(&s).to_bytes();
        Self {
            secret: Zeroizing::new(secret),
            public,
        }
    }
}

impl core::fmt::Debug for X25519Keypair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "X25519Keypair {{ public: {:?}, secret: <redacted> }}",
            FixedBytes(self.public)
        )
    }
}

fn expand<const N: usize>(salt: &[u8], seed: &[u8; 32], info: &[u8]) -> Zeroizing<[u8; N]> {
    let hk = Hkdf::<Sha256>::new(Some(salt), seed);
    let mut out = Zeroizing::new([0u8; N]);
    // N is at most 64 here, far below HKDF-SHA256's 8160-byte limit.
    hk.expand(info, out.as_mut()).unwrap_or_default();
    out
}

/// The device's public keys for one tunnel, as sent in its request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DevicePublicKeys {
    /// The control-channel credential (Noise static key): the tunnel's only
    /// credential at the control plane.
    pub credential: [u8; 32],
    /// The device's WireGuard public key.
    pub wireguard: [u8; 32],
    /// The device's ML-KEM-768 encapsulation key.
    pub kem: FixedBytes<KEM_ENCAPSULATION_KEY_LEN>,
}

/// Everything secret the device holds for one tunnel, from one seed.
pub struct DeviceTunnelKeys {
    seed: Zeroizing<[u8; 32]>,
}

impl DeviceTunnelKeys {
    /// Derives the tunnel's keys from 32 random bytes.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            seed: Zeroizing::new(seed),
        }
    }

    /// The seed, to store (0600) so a restarted agent can resume the tunnel.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    fn derive<const N: usize>(&self, what: &[u8]) -> Zeroizing<[u8; N]> {
        expand(labels::DEVICE_KEYS, &self.seed, what)
    }

    /// The tunnel id (random, since the seed is).
    pub fn tunnel_id(&self) -> TunnelId {
        let b = self.derive::<8>(b"tunnel id");
        TunnelId::from_random(*b)
    }

    /// The one-time secret carried by the one-time code.
    pub fn one_time_secret(&self) -> OneTimeSecret {
        OneTimeSecret::from_bytes(*self.derive::<16>(b"one-time secret"))
    }

    /// The control-channel credential.
    pub fn credential(&self) -> StaticKeypair {
        StaticKeypair::from_secret(*self.derive::<32>(b"control credential"))
    }

    /// The WireGuard key pair.
    pub fn wireguard(&self) -> X25519Keypair {
        X25519Keypair::from_secret(*self.derive::<32>(b"wireguard"))
    }

    /// The ML-KEM-768 decapsulation key.
    pub fn kem(&self) -> KemDecapsulationKey {
        KemDecapsulationKey::from_seed(&self.derive::<64>(b"ml-kem-768"))
    }

    /// All public keys, as the request carries them.
    pub fn public_keys(&self) -> DevicePublicKeys {
        DevicePublicKeys {
            credential: self.credential().public,
            wireguard: self.wireguard().public,
            kem: FixedBytes(self.kem().encapsulation_key_bytes()),
        }
    }
}

/// Everything secret the admin holds for one tunnel (one approval), from one seed.
pub struct AdminTunnelKeys {
    seed: Zeroizing<[u8; 32]>,
}

impl AdminTunnelKeys {
    /// Derives the admin's per-tunnel keys from 32 random bytes.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            seed: Zeroizing::new(seed),
        }
    }

    /// The seed, to store (0600) until the tunnel ends.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    fn derive<const N: usize>(&self, what: &[u8]) -> Zeroizing<[u8; N]> {
        expand(labels::ADMIN_KEYS, &self.seed, what)
    }

    /// The admin's WireGuard key pair.
    pub fn wireguard(&self) -> X25519Keypair {
        X25519Keypair::from_secret(*self.derive::<32>(b"wireguard"))
    }

    /// The 32-byte seed of the admin's per-tunnel Ed25519 SSH key.
    pub fn ssh_key_seed(&self) -> Zeroizing<[u8; 32]> {
        self.derive::<32>(b"ssh ed25519")
    }

    /// The public half of the per-tunnel SSH key.
    pub fn ssh_public(&self) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&self.ssh_key_seed())
            .verifying_key()
            .to_bytes()
    }

    /// The randomness for the ML-KEM encapsulation (FIPS 203 `m`).
    pub fn kem_randomness(&self) -> Zeroizing<[u8; 32]> {
        self.derive::<32>(b"ml-kem encapsulation")
    }

    /// The fresh salt of the approval box.
    pub fn box_salt(&self) -> [u8; 32] {
        *self.derive::<32>(b"approval box salt")
    }
}
