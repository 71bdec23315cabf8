//! A complete, deterministic fixture of the flow: a support CA, a certified
//! approver, a device's tunnel request and the admin's sealed approval.
#![allow(dead_code)]

use support_protocol::approval_box::{
    seal_approval, ApprovalContents, Approver, RelayEndpoint, SealedApproval, TunnelAddresses,
};
use support_protocol::bounded::{BoundedString, BoundedVec, FixedBytes};
use support_protocol::certificate::{ApproverCertificate, Role, SigningSeed, SupportCa};
use support_protocol::ids::ApprovalSeq;
use support_protocol::kem;
use support_protocol::messages::{DeviceFacts, TunnelRequest};
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::tunnel_keys::{AdminTunnelKeys, DeviceTunnelKeys};

/// 2026-11-01T00:00:00Z
pub const NOW: u64 = 1_793_491_200;
pub const DAY: u64 = 86_400;

pub fn s<const N: usize>(text: &str) -> BoundedString<N> {
    BoundedString::new(text).expect("fixture text fits")
}

pub fn ports(p: &[u16]) -> BoundedVec<u16, 16> {
    BoundedVec::try_from(p).expect("fixture ports fit")
}

pub struct Fixture {
    pub ca: SupportCa,
    pub approver_key: SigningSeed,
    pub certificate: ApproverCertificate,
    pub device: DeviceTunnelKeys,
    pub request: TunnelRequest,
    pub code: OneTimeCode,
    pub admin: AdminTunnelKeys,
    pub contents: ApprovalContents,
}

pub fn facts() -> DeviceFacts {
    DeviceFacts {
        hostname: s("amplipi"),
        model: s("AmpliPi Pro"),
        firmware: s("0.4.7"),
        agent_version: s("0.1.0"),
    }
}

impl Fixture {
    pub fn new(n: u8) -> Self {
        let ca = SupportCa(SigningSeed::new([0xca; 32]));
        let approver_key = SigningSeed::new([0xa0 ^ n; 32]);
        let certificate = ca.certify(
            s("alice@support"),
            approver_key.public(),
            Role::Approver,
            7,
            NOW - DAY,
            NOW + 90 * DAY,
        );
        let device = DeviceTunnelKeys::from_seed([n; 32]);
        let request = TunnelRequest::new(
            &device,
            facts(),
            24 * 3600,
            ports(&[22, 80]),
            s("audio drops out"),
        );
        let code = OneTimeCode {
            tunnel_id: device.tunnel_id(),
            secret: device.one_time_secret(),
        };
        let admin = AdminTunnelKeys::from_seed([0x40 ^ n; 32]);
        let (ct, _) =
            kem::encapsulate(&request.body.kem.0, &admin.kem_randomness()).expect("valid key");
        let contents = ApprovalContents {
            relay: RelayEndpoint::V4([127, 0, 0, 1], 51820),
            admin_wireguard: FixedBytes(admin.wireguard().public),
            admin_ssh: FixedBytes(admin.ssh_public()),
            addresses: TunnelAddresses {
                device: [10, 77, 0, 2],
                admin: [10, 77, 0, 3],
                prefix_len: 28,
            },
            kem_ciphertext: FixedBytes(ct),
            duration_secs: 3600,
            ports: ports(&[22]),
            issued_at: NOW,
        };
        Self {
            ca,
            approver_key,
            certificate,
            device,
            request,
            code,
            admin,
            contents,
        }
    }

    pub fn seal(&self, seq: u32) -> SealedApproval {
        self.seal_with(seq, &self.contents, &self.approver_key, &self.certificate)
    }

    pub fn seal_with(
        &self,
        seq: u32,
        contents: &ApprovalContents,
        key: &SigningSeed,
        cert: &ApproverCertificate,
    ) -> SealedApproval {
        seal_approval(
            contents,
            self.code.tunnel_id,
            &self.request.device_public_keys(),
            ApprovalSeq(seq),
            &self.code.secret,
            [seq as u8; 32],
            &Approver {
                key,
                certificate: cert,
            },
        )
    }
}
