//! Prints the size on the wire of each message of the flow, as the control
//! channel carries it (envelope, then Noise IK framing).
//!
//! `cargo run -p support-protocol --example wire_sizes`

use support_protocol::approval_box::{
    seal_approval, ApprovalContents, Approver, RelayEndpoint, TunnelAddresses,
};
use support_protocol::bounded::{BoundedString, BoundedVec, FixedBytes};
use support_protocol::certificate::{Role, SigningSeed, SupportCa};
use support_protocol::connected_report::ConnectedReport;
use support_protocol::control_channel::{Api, ClientCall, StaticKeypair};
use support_protocol::ids::{ApprovalSeq, RequestId};
use support_protocol::kem;
use support_protocol::messages::admin::ApproveRequest;
use support_protocol::messages::device::{ConnectedNotice, PollRequest};
use support_protocol::messages::{
    AdminCall, AdminRequest, DeviceCall, DeviceFacts, DeviceReply, DeviceRequest, DeviceResponse,
    TunnelRequest,
};
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::{AdminTunnelKeys, DeviceTunnelKeys};

fn text<const N: usize>(s: &str) -> BoundedString<N> {
    BoundedString::new(s).unwrap_or_default()
}

fn main() {
    let device = DeviceTunnelKeys::from_seed([1; 32]);
    let facts = DeviceFacts {
        hostname: text("amplipi"),
        model: text("AmpliPi Pro"),
        firmware: text("0.4.7"),
        agent_version: text("0.1.0"),
    };
    let request = TunnelRequest::new(
        &device,
        facts,
        86_400,
        BoundedVec::try_from(&[22u16][..]).unwrap_or_default(),
        text("audio drops out"),
    );
    let ca = SupportCa(SigningSeed::new([2; 32]));
    let approver = SigningSeed::new([3; 32]);
    let cert = ca.certify(
        text("alice@support"),
        approver.public(),
        Role::Approver,
        1,
        0,
        u64::MAX / 2,
    );
    let admin = AdminTunnelKeys::from_seed([4; 32]);
    let (ct, _) = kem::encapsulate(&request.body.kem.0, &admin.kem_randomness())
        .unwrap_or(([0; 1088], [0; 32]));
    let contents = ApprovalContents {
        relay: RelayEndpoint::V4([203, 0, 113, 7], 51820),
        admin_wireguard: FixedBytes(admin.wireguard().public),
        admin_ssh: FixedBytes(admin.ssh_public()),
        addresses: TunnelAddresses {
            device: [10, 77, 0, 2],
            admin: [10, 77, 0, 3],
            prefix_len: 28,
        },
        kem_ciphertext: FixedBytes(ct),
        duration_secs: 86_400,
        ports: BoundedVec::try_from(&[22u16][..]).unwrap_or_default(),
        issued_at: 1_793_491_200,
    };
    let sealed = seal_approval(
        &contents,
        device.tunnel_id(),
        &device.public_keys(),
        ApprovalSeq(1),
        &device.one_time_secret(),
        admin.box_salt(),
        &Approver {
            key: &approver,
            certificate: &cert,
        },
    );
    let report = ConnectedReport {
        accepted_box: FixedBytes(sealed.hash()),
        host_keys: BoundedVec::new(vec![text(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq2dbx0ZmJVbQ1G2Nf2w7XbRQq9nq4V9uTq4yJp8b4Y root@amplipi",
        )])
        .unwrap_or_default(),
    }
    .seal(device.tunnel_id(), ApprovalSeq(1), &device.one_time_secret(), [5; 32]);

    let cp = StaticKeypair::from_secret([6; 32]);
    // Calls travel in Noise IK message 1 (client), answers in message 2 (server).
    let noise = |api: Option<Api>, payload: &[u8]| match api {
        Some(api) => ClientCall::start(api, &device.credential(), &cp.public, [7; 32], payload)
            .map_or(0, |(_, b)| b.len()),
        None => 1 + 32 + 16 + payload.len(),
    };
    let rows: Vec<(&str, Vec<u8>, Option<Api>)> = vec![
        (
            "device: create (request with ML-KEM key)",
            support_protocol::encode(&DeviceCall {
                request_id: RequestId(1),
                request: DeviceRequest::Create(Box::new(request.clone())),
            })
            .unwrap_or_default(),
            Some(Api::Device),
        ),
        (
            "device: long-poll",
            support_protocol::encode(&DeviceCall {
                request_id: RequestId(2),
                request: DeviceRequest::Poll(PollRequest {
                    tunnel_id: device.tunnel_id(),
                    known: TunnelState::Pending,
                    wait_secs: 25,
                }),
            })
            .unwrap_or_default(),
            Some(Api::Device),
        ),
        (
            "control plane: long-poll answer with approval box",
            support_protocol::encode(&DeviceReply {
                request_id: RequestId(2),
                result: Ok(DeviceResponse::Poll {
                    state: TunnelState::Approved(ApprovalSeq(1)),
                    approval: Some(Box::new(sealed.clone())),
                }),
            })
            .unwrap_or_default(),
            None,
        ),
        (
            "admin: approve (sealed approval box)",
            support_protocol::encode(&AdminCall {
                request_id: RequestId(3),
                request: AdminRequest::Approve(Box::new(ApproveRequest {
                    tunnel_id: device.tunnel_id(),
                    expected: None,
                    approval: sealed.clone(),
                })),
            })
            .unwrap_or_default(),
            Some(Api::Admin),
        ),
        (
            "device: connected (sealed report)",
            match report {
                Ok(report) => support_protocol::encode(&DeviceCall {
                    request_id: RequestId(4),
                    request: DeviceRequest::Connected(ConnectedNotice {
                        tunnel_id: device.tunnel_id(),
                        approval_seq: ApprovalSeq(1),
                        report,
                    }),
                })
                .unwrap_or_default(),
                Err(_) => Vec::new(),
            },
            Some(Api::Device),
        ),
    ];
    println!("{:<52} {:>9} {:>12}", "message", "envelope", "HTTP body");
    for (name, bytes, api) in rows {
        println!("{name:<52} {:>9} {:>12}", bytes.len(), noise(api, &bytes));
    }
    println!(
        "(approval box alone: {} bytes; certificate: {} bytes)",
        support_protocol::encode(&sealed).map_or(0, |b| b.len()),
        support_protocol::encode(&cert).map_or(0, |b| b.len())
    );
}
