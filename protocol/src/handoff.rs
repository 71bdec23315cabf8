//! Hand-off: one engineer gives a live tunnel to another, through the
//! control plane as a mailbox it cannot read or forge.
//!
//! Two pieces, both signed with keys the support CA certified:
//!
//! * [`HandoffKey`]: the receiver's statement "seal hand-offs for me to this
//!   X25519 key", signed by the receiver's certified approver key and
//!   carrying that certificate. The key is the receiver's enrolled
//!   control-channel key (the one the control plane already knows them by),
//!   so nothing new needs to be enrolled; the signature is what stops a
//!   control plane from answering a lookup with a key of its own.
//! * [`HandoffPackage`]: the tunnel's secrets sealed to that key and signed
//!   by the sender's certified approver key, with the sender's certificate.
//!
//! # Sealing
//!
//! ECIES over X25519: the sender draws an ephemeral key `e`; `ikm =
//! X25519(e, receiver key)` (refused if not contributory, i.e. a low-order
//! receiver key); then the same HKDF-SHA256 + ChaCha20-Poly1305 construction
//! as the approval box ([`crate::sealing::seal_with`], label `handoff
//! package`), with a fresh 32-byte salt and the encoded [`HandoffHeader`] as
//! associated data. The header names the tunnel, the sender's certificate,
//! the receiver's name and key, the ephemeral public key and the issue time,
//! so none of them can be swapped without the box failing to open.
//!
//! The receiver's X25519 key is also its Noise IK static key. Reusing a DH key
//! across two protocols is sound here because both only ever feed DH outputs
//! into hash-based key derivations under different labels (Noise's BLAKE2s
//! chaining key, HKDF-SHA256 with this module's label); neither reveals a DH
//! output or acts as a decryption oracle for the other.
//!
//! # Signature
//!
//! Ed25519 by the sender's certified key over `label || header || salt ||
//! ciphertext` (each part length-prefixed, hashed with SHA-256).
//!
//! # Opening order
//!
//! tunnel id as expected → addressed to my key → certificate (pinned CA,
//! approver role, not expired at `now`, issued inside its window) →
//! signature → X25519 → decrypt. Each refusal is its own [`HandoffError`].

use alloc::vec::Vec;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::bounded::{BoundedBytes, BoundedString, FixedBytes};
use crate::certificate::{ApproverCertificate, CertificateError, Role, SigningSeed};
use crate::codec::{encode_body, Message};
use crate::ids::TunnelId;
use crate::labels;
use crate::sealing;

/// The largest hand-off plaintext (the sender's tunnel record).
pub const MAX_HANDOFF_SECRET: usize = 24 * 1024;
/// The largest hand-off ciphertext (plaintext and the 16-byte tag).
pub const MAX_HANDOFF_CIPHERTEXT: usize = MAX_HANDOFF_SECRET + 16;

/// A receiver's signed hand-off key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct HandoffKey {
    /// The receiver's certificate (names them, certifies `signature`'s key).
    pub certificate: ApproverCertificate,
    /// The X25519 key to seal to (the receiver's enrolled control-channel key).
    pub key: FixedBytes<32>,
    /// The receiver's certified key's signature over the labelled `key`.
    pub signature: FixedBytes<64>,
}

impl Message for HandoffKey {
    const KIND: u8 = 0x08;
    const NAME: &'static str = "hand-off key";
}

/// What the package's signature and associated data cover besides the box.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct HandoffHeader {
    /// The tunnel handed off.
    pub tunnel_id: TunnelId,
    /// The sender's certificate.
    pub from: ApproverCertificate,
    /// The receiver's name (as certified).
    pub to_name: BoundedString<64>,
    /// The receiver's X25519 key it is sealed to.
    pub to_key: FixedBytes<32>,
    /// The sender's ephemeral X25519 public key.
    pub ephemeral: FixedBytes<32>,
    /// When the sender made it (sender's clock, Unix seconds).
    pub issued_at: u64,
}

/// A tunnel's secrets, sealed to the receiver and signed by the sender.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct HandoffPackage {
    /// Who, to whom, which tunnel.
    pub header: HandoffHeader,
    /// The fresh salt of the sealing key.
    pub salt: FixedBytes<32>,
    /// The sealed secrets.
    pub ciphertext: BoundedBytes<MAX_HANDOFF_CIPHERTEXT>,
    /// The sender's signature.
    pub signature: FixedBytes<64>,
}

impl Message for HandoffPackage {
    const KIND: u8 = 0x09;
    const NAME: &'static str = "hand-off package";
}

/// Why a hand-off key or package is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffError {
    /// The package is about another tunnel than the one it was filed under.
    WrongTunnel {
        /// The tunnel expected.
        expected: TunnelId,
        /// The tunnel the package names.
        found: TunnelId,
    },
    /// The package is sealed to another key than ours.
    NotForMe,
    /// The signer's certificate is not acceptable.
    Certificate(CertificateError),
    /// The certificate names someone else than expected.
    WrongName,
    /// The signature does not verify.
    BadSignature,
    /// The receiver's key is not a usable X25519 key (low order).
    WeakKey,
    /// The box does not open: altered bytes, or sealed to another key.
    Unopenable,
    /// The secrets are larger than [`MAX_HANDOFF_SECRET`].
    TooLarge,
}

impl core::fmt::Display for HandoffError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::WrongTunnel { expected, found } => write!(
                f,
                "the hand-off filed under tunnel {expected} is for tunnel {found}: it was re-addressed"
            ),
            Self::NotForMe => {
                f.write_str("the hand-off is sealed to another key than your enrolled key")
            }
            Self::Certificate(e) => write!(f, "the signer's certificate is not acceptable: {e}"),
            Self::WrongName => f.write_str("the certificate names someone else"),
            Self::BadSignature => {
                f.write_str("the signature does not verify: the bytes were altered")
            }
            Self::WeakKey => f.write_str("the receiver's key is not a usable X25519 key"),
            Self::Unopenable => f.write_str(
                "the sealed secrets do not open: they were altered, or sealed to another key",
            ),
            Self::TooLarge => f.write_str("the tunnel's secrets are too large to hand off"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for HandoffError {}

fn check_certificate(
    cert: &ApproverCertificate,
    pinned_cas: &[[u8; 32]],
    now: u64,
    issued_at: u64,
) -> Result<VerifyingKey, HandoffError> {
    cert.verify(pinned_cas, now, Role::Approver)
        .and_then(|()| cert.check_issued_at(issued_at))
        .map_err(HandoffError::Certificate)?;
    VerifyingKey::from_bytes(&cert.body.key.0).map_err(|_| HandoffError::BadSignature)
}

fn key_message(key: &[u8; 32]) -> [u8; 32] {
    labels::labelled_hash(labels::HANDOFF_KEY, &[key])
}

impl HandoffKey {
    /// The receiver's statement for `key`, signed by `approver` (certified by `certificate`).
    pub fn sign(key: [u8; 32], approver: &SigningSeed, certificate: &ApproverCertificate) -> Self {
        Self {
            certificate: certificate.clone(),
            key: FixedBytes(key),
            signature: FixedBytes(approver.sign(&key_message(&key))),
        }
    }

    /// Checks it as the sender must before sealing to it: the certificate
    /// verifies under a pinned CA with the approver role, is valid at `now`,
    /// names `name`, and its key signed `key`.
    pub fn verify(
        &self,
        pinned_cas: &[[u8; 32]],
        now: u64,
        name: &str,
    ) -> Result<(), HandoffError> {
        let vk = check_certificate(&self.certificate, pinned_cas, now, now)?;
        if self.certificate.body.name.as_str() != name {
            return Err(HandoffError::WrongName);
        }
        vk.verify_strict(
            &key_message(&self.key.0),
            &Signature::from_bytes(&self.signature.0),
        )
        .map_err(|_| HandoffError::BadSignature)
    }
}

fn signed_message(header: &HandoffHeader, salt: &[u8; 32], ciphertext: &[u8]) -> [u8; 32] {
    labels::labelled_hash(
        labels::HANDOFF_SIGNATURE,
        &[&encode_body(header), salt, ciphertext],
    )
}

/// Everything the sender brings to [`seal_handoff`].
pub struct HandoffSender<'a> {
    /// The sender's certified approver key.
    pub key: &'a SigningSeed,
    /// Its certificate.
    pub certificate: &'a ApproverCertificate,
}

/// Seals `secrets` of `tunnel_id` to the receiver's verified `to` key and
/// signs it. `ephemeral_seed` and `salt` are fresh randomness.
pub fn seal_handoff(
    tunnel_id: TunnelId,
    secrets: &[u8],
    to: &HandoffKey,
    from: &HandoffSender<'_>,
    ephemeral_seed: [u8; 32],
    salt: [u8; 32],
    issued_at: u64,
) -> Result<HandoffPackage, HandoffError> {
    if secrets.len() > MAX_HANDOFF_SECRET {
        return Err(HandoffError::TooLarge);
    }
    let e = x25519_dalek::StaticSecret::from(ephemeral_seed);
    let shared = e.diffie_hellman(&x25519_dalek::PublicKey::from(to.key.0));
    if !shared.was_contributory() {
        return Err(HandoffError::WeakKey);
    }
    let header = HandoffHeader {
        tunnel_id,
        from: from.certificate.clone(),
        to_name: to.certificate.body.name.clone(),
        to_key: to.key,
        ephemeral: FixedBytes(x25519_dalek::PublicKey::from(&e).to_bytes()),
        issued_at,
    };
    let aad = encode_body(&header);
    let ct = sealing::seal_with(labels::HANDOFF_BOX, shared.as_bytes(), &salt, &aad, secrets);
    let ciphertext = BoundedBytes::new(ct).map_err(|_| HandoffError::TooLarge)?;
    let signature = FixedBytes(from.key.sign(&signed_message(&header, &salt, &ciphertext)));
    Ok(HandoffPackage {
        header,
        salt: FixedBytes(salt),
        ciphertext,
        signature,
    })
}

impl HandoffPackage {
    /// Verifies and opens, in the module's order. `expected` is the tunnel
    /// the package was filed under, `my_secret` the receiver's X25519 private
    /// key, `now` the receiver's clock. Returns the secrets.
    pub fn open(
        &self,
        expected: TunnelId,
        pinned_cas: &[[u8; 32]],
        now: u64,
        my_secret: &[u8; 32],
    ) -> Result<Zeroizing<Vec<u8>>, HandoffError> {
        let h = &self.header;
        if h.tunnel_id != expected {
            return Err(HandoffError::WrongTunnel {
                expected,
                found: h.tunnel_id,
            });
        }
        let me = x25519_dalek::StaticSecret::from(*my_secret);
        if x25519_dalek::PublicKey::from(&me).to_bytes() != h.to_key.0 {
            return Err(HandoffError::NotForMe);
        }
        let vk = check_certificate(&h.from, pinned_cas, now, h.issued_at)?;
        vk.verify_strict(
            &signed_message(h, &self.salt.0, &self.ciphertext),
            &Signature::from_bytes(&self.signature.0),
        )
        .map_err(|_| HandoffError::BadSignature)?;
        let shared = me.diffie_hellman(&x25519_dalek::PublicKey::from(h.ephemeral.0));
        if !shared.was_contributory() {
            return Err(HandoffError::WeakKey);
        }
        sealing::open_with(
            labels::HANDOFF_BOX,
            shared.as_bytes(),
            &self.salt.0,
            &encode_body(h),
            &self.ciphertext,
        )
        .map_err(|_| HandoffError::Unopenable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::SupportCa;

    const NOW: u64 = 1_800_000_000;

    struct Person {
        cp: [u8; 32],
        approver: SigningSeed,
        cert: ApproverCertificate,
    }

    fn ca(seed: u8) -> SupportCa {
        SupportCa(SigningSeed::new([seed; 32]))
    }

    fn person(ca: &SupportCa, name: &str, n: u8, role: Role) -> Person {
        let approver = SigningSeed::new([n; 32]);
        let cert = ca.certify(
            BoundedString::new(name).expect("test"),
            approver.public(),
            role,
            u64::from(n),
            NOW - 100,
            NOW + 86400,
        );
        Person {
            cp: [n.wrapping_add(100); 32],
            approver,
            cert,
        }
    }

    fn public(secret: &[u8; 32]) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
    }

    fn key_of(p: &Person) -> HandoffKey {
        HandoffKey::sign(public(&p.cp), &p.approver, &p.cert)
    }

    fn package(a: &Person, to: &HandoffKey, id: TunnelId) -> HandoffPackage {
        seal_handoff(
            id,
            b"the tunnel's secrets",
            to,
            &HandoffSender {
                key: &a.approver,
                certificate: &a.cert,
            },
            [7; 32],
            [8; 32],
            NOW,
        )
        .expect("test")
    }

    fn pinned(ca: &SupportCa) -> [[u8; 32]; 1] {
        [ca.0.public()]
    }

    #[test]
    fn the_receiver_opens_what_the_sender_sealed() {
        let ca = ca(1);
        let (a, b) = (
            person(&ca, "alice", 2, Role::Approver),
            person(&ca, "bob", 3, Role::Approver),
        );
        let bk = key_of(&b);
        bk.verify(&pinned(&ca), NOW, "bob").expect("test");
        let p = package(&a, &bk, TunnelId(42));
        let opened = p
            .open(TunnelId(42), &pinned(&ca), NOW + 10, &b.cp)
            .expect("test");
        assert_eq!(&opened[..], b"the tunnel's secrets");
        // It survives the wire.
        let again: HandoffPackage = crate::decode(&crate::encode(&p).expect("test")).expect("test");
        assert_eq!(again, p);
    }

    #[test]
    fn a_lookup_answer_with_another_key_or_name_is_refused() {
        let ca = ca(1);
        let b = person(&ca, "bob", 3, Role::Approver);
        let mut swapped = key_of(&b);
        swapped.key = FixedBytes(public(&[99; 32]));
        assert_eq!(
            swapped.verify(&pinned(&ca), NOW, "bob"),
            Err(HandoffError::BadSignature)
        );
        assert_eq!(
            key_of(&b).verify(&pinned(&ca), NOW, "carol"),
            Err(HandoffError::WrongName)
        );
        let viewer = person(&ca, "bob", 4, Role::Viewer);
        assert!(matches!(
            key_of(&viewer).verify(&pinned(&ca), NOW, "bob"),
            Err(HandoffError::Certificate(
                CertificateError::WrongRole { .. }
            ))
        ));
        let other_ca = ca_other();
        assert!(matches!(
            key_of(&b).verify(&pinned(&other_ca), NOW, "bob"),
            Err(HandoffError::Certificate(CertificateError::UnknownIssuer))
        ));
        assert!(matches!(
            key_of(&b).verify(&pinned(&ca), NOW + 2 * 86400, "bob"),
            Err(HandoffError::Certificate(CertificateError::Expired { .. }))
        ));
    }

    fn ca_other() -> SupportCa {
        ca(9)
    }

    #[test]
    fn tampered_readdressed_or_misfiled_packages_are_refused() {
        let ca = ca(1);
        let (a, b, c) = (
            person(&ca, "alice", 2, Role::Approver),
            person(&ca, "bob", 3, Role::Approver),
            person(&ca, "carol", 5, Role::Approver),
        );
        let p = package(&a, &key_of(&b), TunnelId(42));
        let open =
            |p: &HandoffPackage, who: &Person| p.open(TunnelId(42), &pinned(&ca), NOW, &who.cp);

        // Someone else's key cannot open it.
        assert_eq!(open(&p, &c), Err(HandoffError::NotForMe));
        // Filed under another tunnel.
        assert_eq!(
            p.open(TunnelId(43), &pinned(&ca), NOW, &b.cp),
            Err(HandoffError::WrongTunnel {
                expected: TunnelId(43),
                found: TunnelId(42)
            })
        );
        // One flipped bit of the ciphertext, the salt, or the header.
        let mut t = p.clone();
        let mut ct = t.ciphertext.to_vec();
        ct[3] ^= 1;
        t.ciphertext = BoundedBytes::new(ct).expect("test");
        assert_eq!(open(&t, &b), Err(HandoffError::BadSignature));
        let mut t = p.clone();
        t.salt.0[0] ^= 1;
        assert_eq!(open(&t, &b), Err(HandoffError::BadSignature));
        let mut t = p.clone();
        t.header.issued_at += 1;
        assert_eq!(open(&t, &b), Err(HandoffError::BadSignature));
        // Re-addressed to carol (header rewritten): carol's key still cannot open it.
        let mut t = p.clone();
        t.header.to_key = FixedBytes(public(&c.cp));
        assert_eq!(open(&t, &c), Err(HandoffError::BadSignature));
        // Re-signed by a certified insider over a tampered box: signature ok, box refuses.
        let mut t = p.clone();
        let mut ct = t.ciphertext.to_vec();
        ct[0] ^= 1;
        t.ciphertext = BoundedBytes::new(ct).expect("test");
        t.header.from = c.cert.clone();
        t.signature = FixedBytes(c.approver.sign(&signed_message(
            &t.header,
            &t.salt.0,
            &t.ciphertext,
        )));
        assert_eq!(open(&t, &b), Err(HandoffError::Unopenable));
        // A sender whose certificate is not from the pinned CA.
        let rogue = person(&ca_other(), "alice", 2, Role::Approver);
        let t = package(&rogue, &key_of(&b), TunnelId(42));
        assert!(matches!(
            open(&t, &b),
            Err(HandoffError::Certificate(CertificateError::UnknownIssuer))
        ));
        // A viewer cannot hand off.
        let viewer = person(&ca, "victor", 6, Role::Viewer);
        let t = package(&viewer, &key_of(&b), TunnelId(42));
        assert!(matches!(
            open(&t, &b),
            Err(HandoffError::Certificate(
                CertificateError::WrongRole { .. }
            ))
        ));
    }

    #[test]
    fn low_order_keys_and_oversized_secrets_are_refused() {
        let ca = ca(1);
        let (a, b) = (
            person(&ca, "alice", 2, Role::Approver),
            person(&ca, "bob", 3, Role::Approver),
        );
        let mut weak = key_of(&b);
        weak.key = FixedBytes([0; 32]);
        let sender = HandoffSender {
            key: &a.approver,
            certificate: &a.cert,
        };
        assert_eq!(
            seal_handoff(TunnelId(1), b"x", &weak, &sender, [7; 32], [8; 32], NOW),
            Err(HandoffError::WeakKey)
        );
        let big = alloc::vec![0u8; MAX_HANDOFF_SECRET + 1];
        assert_eq!(
            seal_handoff(
                TunnelId(1),
                &big,
                &key_of(&b),
                &sender,
                [7; 32],
                [8; 32],
                NOW
            ),
            Err(HandoffError::TooLarge)
        );
        // The largest allowed fits one message.
        let max = alloc::vec![0u8; MAX_HANDOFF_SECRET];
        let p = seal_handoff(
            TunnelId(1),
            &max,
            &key_of(&b),
            &sender,
            [7; 32],
            [8; 32],
            NOW,
        )
        .expect("test");
        assert!(crate::encode(&p).is_ok());
    }
}
