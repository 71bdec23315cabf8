//! A complete, deterministic fixture of the flow: a support CA, a certified
//! approver, a device's tunnel request and the admin's sealed approval.
#![allow(dead_code)]

use support_protocol::approval_box::{seal_approval, ApprovalContents, Approver, SealedApproval};
use support_protocol::bounded::{BoundedString, BoundedVec};
use support_protocol::certificate::{ApproverCertificate, SigningSeed, SupportCa};
use support_protocol::fixtures::{Approvers, Terms};
use support_protocol::ids::ApprovalSeq;
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
        let Approvers {
            ca,
            key: approver_key,
            certificate,
        } = Approvers::new(
            [0xca; 32],
            [0xa0 ^ n; 32],
            "alice@support",
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
        let contents = Terms::new(NOW).contents(&request.body.kem.0, &admin);
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
