//! Authentication, replays, hostile bodies and refused transitions.

mod common;

use common::*;
use support_protocol::messages::device::StoppedNotice;
use support_protocol::messages::{
    AdminRequest, AdminResponse, DeviceRequest, DeviceResponse, ErrorCode, StopReason,
};
use support_protocol::state::TunnelState;
use support_protocol::ApprovalSeq;

fn code_of<T: std::fmt::Debug>(r: &Result<T, support_protocol::messages::ApiError>) -> ErrorCode {
    r.as_ref().expect_err("expected an error").code
}

#[test]
fn the_auth_matrix() {
    let (server, c, approver) = Server::with_approver(&[]);
    let viewer = admin_key();
    let stranger = admin_key();
    server.enroll("victor", &viewer, "viewer");
    let a = Device::requested(&c);
    let b = Device::requested(&c);

    // Unknown admin key: refused.
    let r = c.admin_req(&stranger, list_req());
    assert_eq!(
        (r.0, code_of(&r.1.result)),
        (401, ErrorCode::Unauthenticated)
    );
    // A tunnel credential is not an admin key.
    let r = c.admin_req(&a.cred(), list_req());
    assert_eq!(code_of(&r.1.result), ErrorCode::Unauthenticated);

    // Viewer may look, not approve or stop.
    assert!(matches!(
        ok_admin(c.admin_req(&viewer, list_req())),
        AdminResponse::List { .. }
    ));
    assert!(matches!(
        ok_admin(c.admin_req(&viewer, AdminRequest::Show(a.id()))),
        AdminResponse::Show(_)
    ));
    let r = c.admin_req(
        &viewer,
        approve_req(&a, None, Approvers::new().approval(&a, 1)),
    );
    assert_eq!((r.0, code_of(&r.1.result)), (403, ErrorCode::Forbidden));
    let r = c.admin_req(&viewer, stop_req(a.id()));
    assert_eq!((r.0, code_of(&r.1.result)), (403, ErrorCode::Forbidden));

    // A's credential cannot read or change B's tunnel.
    let r = c.device_req(
        &a.cred(),
        DeviceRequest::Poll(support_protocol::messages::device::PollRequest {
            tunnel_id: b.id(),
            known: TunnelState::Pending,
            wait_secs: 0,
        }),
    );
    assert_eq!((r.0, code_of(&r.1.result)), (403, ErrorCode::Forbidden));
    let r = c.device_req(
        &a.cred(),
        DeviceRequest::Stopped(StoppedNotice {
            tunnel_id: b.id(),
            reason: StopReason::Owner,
        }),
    );
    assert_eq!(code_of(&r.1.result), ErrorCode::Forbidden);
    // Nor create a request carrying someone else's credential.
    let r = c.device_req(
        &a.cred(),
        DeviceRequest::Create(Box::new(b.request.clone())),
    );
    assert_eq!(code_of(&r.1.result), ErrorCode::Forbidden);
    // B is untouched.
    match ok_device(b.poll(&c, TunnelState::Approved(ApprovalSeq(9)), 0)) {
        DeviceResponse::Poll { state, .. } => assert_eq!(state, TunnelState::Pending),
        other => panic!("{other:?}"),
    }

    // A removed admin is refused at once.
    cli_ok(&[
        "admins",
        "remove",
        "--data",
        path_str(server.data()),
        "alice",
    ]);
    let r = c.admin_req(&approver, list_req());
    assert_eq!(code_of(&r.1.result), ErrorCode::Unauthenticated);
}

#[test]
fn every_state_changing_request_replayed_is_harmless() {
    let (_server, c, admin) = Server::with_approver(&[]);
    let d = Device::new();
    let approval = Approvers::new().approval(&d, 1);
    let replay = |path: &str, body: &[u8]| {
        let raw = post(&c.url, path, body);
        assert_eq!(raw.status, 200, "replay of {path} refused: {}", raw.status);
    };

    // Each call's exact HTTP body is posted twice (an attacker replaying the
    // replayable first Noise message).
    let create = d.create_body(&c);
    replay("/v1/device", &create);
    replay("/v1/device", &create);

    let approve = c
        .admin_body(&admin, &admin_call(approve_req(&d, None, approval.clone())))
        .1;
    replay("/v1/admin", &approve);
    replay("/v1/admin", &approve);

    let connected = c
        .device_body(&d.cred(), &device_call(d.connected_req(approval.hash(), 1)))
        .1;
    replay("/v1/device", &connected);
    replay("/v1/device", &connected);

    // The approve replayed after connect: the approval in force is unchanged.
    replay("/v1/admin", &approve);

    let stop = c.admin_body(&admin, &admin_call(stop_req(d.id()))).1;
    replay("/v1/admin", &stop);
    replay("/v1/admin", &stop);

    // One record per real change, none for the replays.
    assert_eq!(c.audit_actions(&admin, d.id()), the_whole_story());
    match ok_device(d.poll(&c, TunnelState::Pending, 0)) {
        DeviceResponse::Poll { state, .. } => assert_eq!(state, TunnelState::Stopped),
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_truncated_oversized_and_wrong_version_bodies_get_4xx_and_service_continues() {
    let server = Server::start(&[]);
    let c = server.client();
    let d = Device::new();
    let good = d.create_body(&c);
    let mut wrong_version = good.clone();
    wrong_version[0] = 9;
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty", vec![], 400),
        ("garbage", vec![0x41; 100], 400),
        ("truncated", good[..good.len() / 2].to_vec(), 401),
        ("one byte flipped", flipped, 401),
        ("wrong channel version", wrong_version, 400),
        ("oversized", vec![1u8; 70_000], 413),
    ];
    for (name, body, want) in cases {
        let raw = post(&c.url, "/v1/device", &body);
        assert_eq!(
            raw.status,
            want,
            "{name}: {}",
            String::from_utf8_lossy(&raw.body)
        );
        assert!(!raw.body.is_empty(), "{name}: a clear error text");
    }
    // A device call sent to the admin API.
    assert_eq!(post(&c.url, "/v1/admin", &good).status, 400);

    // Authenticated, but the inner envelope has an unknown version: an
    // encrypted error the device can read.
    let (cc, body) = support_protocol::control_channel::ClientCall::start(
        support_protocol::control_channel::Api::Device,
        &d.cred(),
        &c.server,
        seed(),
        &[7, 0x10, 0, 0],
    )
    .expect("starts");
    let raw = post(&c.url, "/v1/device", &body);
    assert_eq!(raw.status, 400);
    let reply: support_protocol::messages::DeviceReply =
        support_protocol::decode(&cc.finish(&raw.body).expect("reply opens")).expect("decodes");
    assert_eq!(code_of(&reply.result), ErrorCode::UnsupportedVersion);

    // Still serving.
    assert_eq!(get(&c.url, "/healthz").status, 200);
    assert!(matches!(
        ok_device(d.create(&c)),
        DeviceResponse::Created { .. }
    ));
}

#[test]
fn illegal_transitions_and_stale_approval_ids_are_refused() {
    let (_server, c, admin) = Server::with_approver(&[]);
    let approvers = Approvers::new();
    let d = Device::requested(&c);

    // Connecting before any approval.
    let notice = |seq| d.connected_req([0; 32], seq);
    let r = c.device_req(&d.cred(), notice(1));
    assert_eq!((r.0, code_of(&r.1.result)), (409, ErrorCode::InvalidState));

    // The compare-and-set: wrong expectation, or a number that does not follow.
    let r = c.admin_req(&admin, approve_req(&d, Some(1), approvers.approval(&d, 2)));
    assert_eq!(code_of(&r.1.result), ErrorCode::StaleApproval);
    let r = c.admin_req(&admin, approve_req(&d, None, approvers.approval(&d, 3)));
    assert_eq!(code_of(&r.1.result), ErrorCode::StaleApproval);
    ok_admin(c.admin_req(&admin, approve_req(&d, None, approvers.approval(&d, 1))));
    // Someone else approved in between: our "first" approval is now stale.
    let r = c.admin_req(&admin, approve_req(&d, None, approvers.approval(&d, 1)));
    assert_eq!((r.0, code_of(&r.1.result)), (409, ErrorCode::StaleApproval));
    // Re-approval (hub relaunch) with the next number works while not connected.
    assert_eq!(
        ok_admin(c.admin_req(&admin, approve_req(&d, Some(1), approvers.approval(&d, 2)))),
        AdminResponse::Approved(ApprovalSeq(2))
    );
    // Connecting with the replaced approval is refused; with the one in force it works.
    let r = c.device_req(&d.cred(), notice(1));
    assert_eq!(code_of(&r.1.result), ErrorCode::InvalidState);
    ok_device(c.device_req(&d.cred(), notice(2)));
    // No re-approval once connected.
    let r = c.admin_req(&admin, approve_req(&d, Some(2), approvers.approval(&d, 3)));
    assert_eq!(code_of(&r.1.result), ErrorCode::InvalidState);
    // Unknown tunnels.
    let other = Device::new();
    let r = c.admin_req(&admin, AdminRequest::Show(other.id()));
    assert_eq!((r.0, code_of(&r.1.result)), (404, ErrorCode::NotFound));
}

#[test]
fn creates_are_rate_limited_per_address() {
    let server = Server::start(&["--creates-per-minute-per-address", "3"]);
    let c = server.client();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let d = Device::new();
        statuses.push(d.create(&c).0);
    }
    assert!(statuses[..3].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[test]
fn a_new_server_key_is_served_beside_the_old_until_retired() {
    let server = Server::start(&[]);
    let d = Device::new();
    let old = server.public;
    cli_ok(&["keys", "rotate", "--data", path_str(server.data())]);
    let keys = server.public_keys();
    assert_eq!(keys.len(), 2);
    let new = keys[0];
    assert_ne!(new, old);
    for k in [old, new] {
        let c = Client::http(&server.url, k);
        assert_eq!(d.create(&c).0, 200);
    }
    cli_ok(&[
        "keys",
        "retire",
        "--data",
        path_str(server.data()),
        &hex::encode(old),
    ]);
    let (_, body) = Client::http(&server.url, old).device_body(
        &d.cred(),
        &support_protocol::messages::DeviceCall {
            request_id: rid(),
            request: DeviceRequest::Create(Box::new(d.request.clone())),
        },
    );
    assert_eq!(post(&server.url, "/v1/device", &body).status, 401);
}

#[test]
fn creates_are_rate_limited_overall_too() {
    let server = Server::start(&[
        "--creates-per-minute-per-address",
        "1000",
        "--creates-per-minute",
        "2",
    ]);
    let c = server.client();
    let statuses: Vec<u16> = (0..5).map(|_| Device::new().create(&c).0).collect();
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses[2..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[test]
fn connections_beyond_the_cap_are_closed_and_service_resumes_when_they_go() {
    use std::io::{Read, Write};
    let server = Server::start(&["--max-connections", "2"]);
    let addr = server.url.trim_start_matches("http://").to_string();
    // Two idle clients hold both slots (they never send a request). The
    // server accepts connections in the order they came, so these two are
    // taken before the third.
    let hold: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connects"))
        .collect();
    let mut third = std::net::TcpStream::connect(&addr).expect("the kernel still accepts");
    third
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let n = third.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "the capped connection was served: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // Once the two go, the server serves again (as soon as it has seen them close).
    drop(hold);
    wait_for("a served request after the cap", || {
        minreq::get(format!("{}/healthz", server.url))
            .with_timeout(5)
            .send()
            .is_ok_and(|r| r.status_code == 200)
    });
    assert!(
        server
            .metrics()
            .contains("support_cp_requests_total{route=\"connection-cap\",status=\"503\"}"),
        "the third connection was not counted as turned away at the cap"
    );
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use std::io::{Read, Write};
    let server = Server::start(&[]);
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).expect("connects");
    slow.write_all(b"POST /v1/device HTTP/1.1\r\nHost: x\r\n")
        .expect("writes");
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let start = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let held = start.elapsed();
    assert!(
        held < std::time::Duration::from_secs(20),
        "slow client held the connection for {held:?}"
    );
}
