//! Fixtures for tests, benches and examples (feature `test-fixtures`): a
//! support CA with one certified approver, and the approval an admin makes,
//! built once here instead of in every crate's tests.
//!
//! Every key comes from a seed the caller passes, so a fixture is as
//! deterministic as its seeds. Nothing here is for production: the feature is
//! enabled only in `[dev-dependencies]`.
//!
//! ```
//! use support_protocol::fixtures::{Approvers, Terms};
//! use support_protocol::tunnel_keys::{AdminTunnelKeys, DeviceTunnelKeys};
//! use support_protocol::ApprovalSeq;
//!
//! let approvers = Approvers::new([2; 32], [3; 32], "alice", 0, u64::MAX / 2);
//! let device = DeviceTunnelKeys::from_seed([1; 32]);
//! let admin = AdminTunnelKeys::from_seed([4; 32]);
//! let sealed = approvers.approve(&device, &admin, &Terms::new(10), ApprovalSeq(1));
//! assert_eq!(sealed.approval_seq, ApprovalSeq(1));
//! ```

use crate::approval_box::{
    seal_approval, ApprovalContents, Approver, RelayEndpoint, SealedApproval, TunnelAddresses,
};
use crate::bounded::{BoundedString, BoundedVec, FixedBytes};
use crate::certificate::{ApproverCertificate, Role, SigningSeed, SupportCa};
use crate::ids::ApprovalSeq;
use crate::kem::{self, KEM_ENCAPSULATION_KEY_LEN};
use crate::messages::request::MAX_PORTS;
use crate::tunnel_keys::{AdminTunnelKeys, DeviceTunnelKeys};

/// The tunnel addresses `support-admin approve` uses: 10.77.0.2 (device)
/// and 10.77.0.3 (admin) in a /28.
pub const ADDRESSES: TunnelAddresses = TunnelAddresses {
    device: [10, 77, 0, 2],
    admin: [10, 77, 0, 3],
    prefix_len: 28,
};

/// A support CA and one approver it certified.
pub struct Approvers {
    /// The support CA.
    pub ca: SupportCa,
    /// The approver's signing key.
    pub key: SigningSeed,
    /// The approver's certificate (serial 1, role approver).
    pub certificate: ApproverCertificate,
}

impl Approvers {
    /// The CA of `ca_seed` certifies the key of `key_seed` as approver
    /// `name` (at most 64 bytes), valid from `not_before` to `not_after`.
    pub fn new(
        ca_seed: [u8; 32],
        key_seed: [u8; 32],
        name: &str,
        not_before: u64,
        not_after: u64,
    ) -> Self {
        let ca = SupportCa(SigningSeed::new(ca_seed));
        let key = SigningSeed::new(key_seed);
        let certificate = ca.certify(
            BoundedString::new(name).expect("a fixture's approver name fits"),
            key.public(),
            Role::Approver,
            1,
            not_before,
            not_after,
        );
        Self {
            ca,
            key,
            certificate,
        }
    }

    /// The CA's public key, as a device pins it.
    pub fn ca_key(&self) -> [u8; 32] {
        self.ca.0.public()
    }

    /// The approver, as [`seal_approval`] takes it.
    pub fn approver(&self) -> Approver<'_> {
        Approver {
            key: &self.key,
            certificate: &self.certificate,
        }
    }

    /// Seals and signs `contents` for `device`'s tunnel as approval `seq`.
    pub fn seal(
        &self,
        contents: &ApprovalContents,
        device: &DeviceTunnelKeys,
        seq: ApprovalSeq,
        salt: [u8; 32],
    ) -> SealedApproval {
        seal_approval(
            contents,
            device.tunnel_id(),
            &device.public_keys(),
            seq,
            &device.one_time_secret(),
            salt,
            &self.approver(),
        )
    }

    /// What `support-admin approve` posts: the admin with keys `admin`
    /// grants `device` the `terms` as approval `seq`, in a box salted with
    /// the admin's box salt.
    pub fn approve(
        &self,
        device: &DeviceTunnelKeys,
        admin: &AdminTunnelKeys,
        terms: &Terms,
        seq: ApprovalSeq,
    ) -> SealedApproval {
        let contents = terms.contents(&device.public_keys().kem.0, admin);
        self.seal(&contents, device, seq, admin.box_salt())
    }
}

/// What an approval grants, and when it was signed.
#[derive(Clone, Debug)]
pub struct Terms {
    /// Where the hub listens.
    pub relay: RelayEndpoint,
    /// How long the tunnel may live once connected.
    pub duration_secs: u32,
    /// The ports it opens.
    pub ports: BoundedVec<u16, MAX_PORTS>,
    /// When the approver signed (inside the certificate's validity).
    pub issued_at: u64,
}

impl Terms {
    /// A hub on 127.0.0.1:51820, one hour, port 22, signed at `issued_at`.
    /// Change a field with `Terms { duration_secs: 600, ..Terms::new(t) }`.
    pub fn new(issued_at: u64) -> Self {
        Self {
            relay: RelayEndpoint::V4([127, 0, 0, 1], 51820),
            duration_secs: 3600,
            ports: BoundedVec::try_from(&[22u16][..]).expect("one port fits"),
            issued_at,
        }
    }

    /// The contents the admin with keys `admin` writes on these terms, with
    /// the ML-KEM ciphertext to the device's encapsulation key `device_kem`
    /// and [`ADDRESSES`].
    pub fn contents(
        &self,
        device_kem: &[u8; KEM_ENCAPSULATION_KEY_LEN],
        admin: &AdminTunnelKeys,
    ) -> ApprovalContents {
        let (ct, _) = kem::encapsulate(device_kem, &admin.kem_randomness())
            .expect("a fixture device's ML-KEM key is valid");
        ApprovalContents {
            relay: self.relay,
            admin_wireguard: FixedBytes(admin.wireguard().public),
            admin_ssh: FixedBytes(admin.ssh_public()),
            addresses: ADDRESSES,
            kem_ciphertext: FixedBytes(ct),
            duration_secs: self.duration_secs,
            ports: self.ports.clone(),
            issued_at: self.issued_at,
        }
    }
}

/// The PSK of raw inputs, for tests that change one input at a time (no
/// program has a reason to: [`crate::hybrid_psk::derive_psk`] and
/// [`crate::hybrid_psk::derive_approver_psk`] fill the inputs from checked
/// values).
pub fn psk_from_inputs(inputs: &crate::hybrid_psk::PskInputs<'_>) -> zeroize::Zeroizing<[u8; 32]> {
    crate::hybrid_psk::derive(inputs)
}
