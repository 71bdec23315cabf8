//! Prints the size on the wire of each message of the flow, as the control
//! channel carries it (envelope, then Noise IK framing).
//!
//! `cargo run -p support-protocol --example wire_sizes`

use support_protocol::approval_box::RelayEndpoint;
use support_protocol::bounded::{BoundedString, BoundedVec, FixedBytes};
use support_protocol::connected_report::ConnectedReport;
use support_protocol::control_channel::{Api, ClientCall, StaticKeypair};
use support_protocol::fixtures::{Approvers, Terms};
use support_protocol::ids::{ApprovalSeq, RequestId};
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
    let approvers = Approvers::new([2; 32], [3; 32], "alice@support", 0, u64::MAX / 2);
    let admin = AdminTunnelKeys::from_seed([4; 32]);
    let terms = Terms {
        relay: RelayEndpoint::V4([203, 0, 113, 7], 51820),
        duration_secs: 86_400,
        ..Terms::new(1_793_491_200)
    };
    let sealed = approvers.approve(&device, &admin, &terms, ApprovalSeq(1));
    let cert = &approvers.certificate;
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
        support_protocol::encode(cert).map_or(0, |b| b.len())
    );
}
