//! The in-process tier: the `Service` over a real store in a temp dir, its
//! clock an argument, and the warp routes driven without a socket. What
//! depends on time is checked to the second here without waiting for it;
//! the binary tests (lifecycle, security, durability, service_unit) keep
//! what only the real parts show: the sweeper's timer, sockets and
//! timeouts, signals, restarts, kill -9, the CLI.

mod common;

use std::sync::Arc;

use common::in_process::{caller, peer, InProcess, Setup, PEER};
use common::*;
use support_control_plane::config::CreateLimits;
use support_control_plane::service::{DeviceOutcome, ServiceConfig};
use support_control_plane::store::AdminRole;
use support_protocol::audit::AuditAction;
use support_protocol::control_channel::StaticKeypair;
use support_protocol::messages::device::PollRequest;
use support_protocol::messages::{
    AdminRequest, AdminResponse, ApiError, DeviceRequest, DeviceResponse, ErrorCode, TunnelRequest,
};
use support_protocol::state::TunnelState;
use support_protocol::ApprovalSeq;

/// The service's clock at the start of each test.
const T: u64 = 1_800_000_000;

/// A control plane in this process with "alice" enrolled as an approver.
fn staffed(setup: Setup) -> (Arc<InProcess>, StaticKeypair) {
    let cp = InProcess::with(setup);
    let admin = admin_key();
    cp.enroll("alice", &admin, AdminRole::Approver);
    (cp, admin)
}

fn config(change: impl FnOnce(&mut ServiceConfig)) -> Setup {
    let mut config = ServiceConfig::default();
    change(&mut config);
    Setup {
        config,
        ..Setup::default()
    }
}

/// A device call on the service at `now` (one that answers at once).
fn device(
    cp: &InProcess,
    d: &Device,
    request: DeviceRequest,
    now: u64,
) -> Result<DeviceResponse, ApiError> {
    match cp
        .service
        .device_call(caller(&d.cred()), device_call(request), now)
    {
        DeviceOutcome::Reply(r) => r.result,
        DeviceOutcome::Wait { .. } => panic!("the call waited"),
    }
}

fn create(cp: &InProcess, d: &Device, now: u64) -> Result<DeviceResponse, ApiError> {
    device(cp, d, d.create_req(), now)
}

/// An admin call on the service at `now`.
fn admin(
    cp: &InProcess,
    key: &StaticKeypair,
    request: AdminRequest,
    now: u64,
) -> Result<AdminResponse, ApiError> {
    cp.service
        .admin_call(caller(key), admin_call(request), now)
        .result
}

fn state(cp: &InProcess, d: &Device) -> TunnelState {
    cp.store()
        .tunnel(d.id())
        .expect("reads")
        .expect("the tunnel is stored")
        .state
}

fn code<T: std::fmt::Debug>(r: Result<T, ApiError>) -> ErrorCode {
    r.expect_err("refused").code
}

/// A poll (asking for no wait) on the service at `now`: what renews a
/// pending request's lease.
fn poll(cp: &InProcess, d: &Device, now: u64) -> TunnelState {
    let request = DeviceRequest::Poll(PollRequest {
        tunnel_id: d.id(),
        known: TunnelState::Pending,
        wait_secs: 0,
    });
    match device(cp, d, request, now) {
        Ok(DeviceResponse::Poll { state, .. }) => state,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pending_request_goes_stale_at_the_end_of_the_devices_window_to_the_second() {
    let cp = InProcess::start();
    let d = Device::new();
    let window = match create(&cp, &d, T).expect("created") {
        DeviceResponse::Created {
            stale_after_secs, ..
        } => u64::from(stale_after_secs),
        other => panic!("{other:?}"),
    };
    assert_eq!(window, 24 * 3600, "the device's default window");
    // The device keeps polling (here every 20 minutes, a long outage's worth).
    let mut at = T;
    while at + 1200 < T + window {
        at += 1200;
        assert_eq!(poll(&cp, &d, at), TunnelState::Pending);
        assert_eq!(cp.service.sweep_expired(at).expect("sweeps"), 0);
    }
    assert_eq!(cp.service.sweep_expired(T + window - 1).expect("sweeps"), 0);
    assert_eq!(state(&cp, &d), TunnelState::Pending);
    assert_eq!(cp.service.sweep_expired(T + window).expect("sweeps"), 1);
    assert_eq!(state(&cp, &d), TunnelState::Expired);
    assert_eq!(cp.service.sweep_expired(T + window + 1).expect("sweeps"), 0);
    match cp.service.poll_now(caller(&d.cred()), d.id()) {
        Ok(DeviceResponse::Poll { state, approval }) => {
            assert_eq!((state, approval), (TunnelState::Expired, None));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_request_nobody_polls_expires_after_the_heartbeat_and_is_deleted_soon_after() {
    let (cp, alice) = staffed(config(|c| {
        c.pending_heartbeat_secs = 600;
        c.unapproved_retention_secs = 300;
        c.retention_secs = 100_000;
    }));
    let (fake, real, served) = (Device::new(), Device::new(), Device::new());
    for d in [&fake, &real, &served] {
        match create(&cp, d, T).expect("created") {
            // The owner is still told the device's whole window.
            DeviceResponse::Created {
                stale_after_secs, ..
            } => assert_eq!(stale_after_secs, 24 * 3600),
            other => panic!("{other:?}"),
        }
    }
    // Admins see the device's window too, not the lease.
    let listed = match admin(&cp, &alice, AdminRequest::Show(fake.id()), T).expect("shown") {
        AdminResponse::Show(t) => t.summary.expires_at,
        other => panic!("{other:?}"),
    };
    assert_eq!(listed, T + 24 * 3600);
    // The real device polls every 4 minutes; the fake one never does.
    for at in (T + 240..=T + 1200).step_by(240) {
        poll(&cp, &real, at);
        poll(&cp, &served, at);
    }
    assert_eq!(cp.service.sweep_expired(T + 599).expect("sweeps"), 0);
    assert_eq!(cp.service.sweep_expired(T + 600).expect("sweeps"), 1);
    assert_eq!(state(&cp, &fake), TunnelState::Expired);
    assert_eq!(state(&cp, &real), TunnelState::Pending);
    // An approved and stopped tunnel keeps the full retention.
    let approval = Approvers::new().approval(&served, 1);
    admin(&cp, &alice, approve_req(&served, None, approval), T + 1200).expect("approved");
    admin(&cp, &alice, stop_req(served.id()), T + 1201).expect("stopped");
    admin(&cp, &alice, stop_req(real.id()), T + 1201).expect("stopped");
    // Past the heartbeat after its last poll, the real one would go too.
    assert_eq!(cp.service.purge_ended(T + 900).expect("purges"), 0);
    assert_eq!(cp.service.purge_ended(T + 901).expect("purges"), 1);
    assert_eq!(cp.store().tunnel(fake.id()).expect("reads"), None);
    assert_eq!(cp.service.purge_ended(T + 1501).expect("purges"), 0);
    assert_eq!(cp.service.purge_ended(T + 1502).expect("purges"), 1);
    assert_eq!(cp.store().tunnel(real.id()).expect("reads"), None);
    assert_eq!(state(&cp, &served), TunnelState::Stopped);
    assert_eq!(
        cp.service.purge_ended(T + 1201 + 100_000).expect("purges"),
        0
    );
    assert_eq!(
        cp.service.purge_ended(T + 1202 + 100_000).expect("purges"),
        1
    );
    // Their stories stay in the audit log.
    assert_eq!(
        cp.store()
            .audit_page(Some(fake.id()), 0, 10)
            .expect("reads")
            .into_iter()
            .map(|r| r.entry.action)
            .collect::<Vec<_>>(),
        vec![AuditAction::Requested, AuditAction::Expired]
    );
}

#[test]
fn an_approval_nobody_connects_with_lapses_after_the_approval_window() {
    let (cp, alice) = staffed(config(|c| c.approval_window_secs = 600));
    let d = Device::new();
    create(&cp, &d, T).expect("created");
    let approval = Approvers::new().approval(&d, 1);
    let at = T + 10;
    assert_eq!(
        admin(&cp, &alice, approve_req(&d, None, approval), at),
        Ok(AdminResponse::Approved(ApprovalSeq(1)))
    );
    assert_eq!(cp.service.sweep_expired(at + 599).expect("sweeps"), 0);
    assert_eq!(state(&cp, &d), TunnelState::Approved(ApprovalSeq(1)));
    assert_eq!(cp.service.sweep_expired(at + 600).expect("sweeps"), 1);
    assert_eq!(state(&cp, &d), TunnelState::Expired);
    // Too late to connect with it.
    let r = device(&cp, &d, d.connected_req([0; 32], 1), at + 601);
    assert_eq!(code(r), ErrorCode::InvalidState);
}

#[test]
fn a_connected_tunnel_ends_after_the_duration_the_device_asked_for() {
    let (cp, alice) = staffed(Setup::default());
    let d = Device::new();
    create(&cp, &d, T).expect("created");
    let approval = Approvers::new().approval(&d, 1);
    admin(&cp, &alice, approve_req(&d, None, approval.clone()), T).expect("approved");
    let at = T + 30;
    assert_eq!(
        device(&cp, &d, d.connected_req(approval.hash(), 1), at),
        Ok(DeviceResponse::Ack)
    );
    let duration = u64::from(d.request.body.duration_secs);
    assert_eq!(
        cp.service.sweep_expired(at + duration - 1).expect("sweeps"),
        0
    );
    assert_eq!(state(&cp, &d), TunnelState::Connected(ApprovalSeq(1)));
    assert_eq!(cp.service.sweep_expired(at + duration).expect("sweeps"), 1);
    assert_eq!(state(&cp, &d), TunnelState::Expired);
    let actions: Vec<_> = cp
        .store()
        .audit_page(Some(d.id()), 0, 10)
        .expect("reads")
        .into_iter()
        .map(|r| (r.entry.at, r.entry.action))
        .collect();
    assert_eq!(
        actions,
        vec![
            (T, AuditAction::Requested),
            (T, AuditAction::Approved(ApprovalSeq(1))),
            (at, AuditAction::Connected(ApprovalSeq(1))),
            (at + duration, AuditAction::Expired),
        ]
    );
}

#[test]
fn ended_tunnels_are_deleted_once_the_retention_has_passed_and_their_audit_stays() {
    let (cp, alice) = staffed(config(|c| c.retention_secs = 100));
    let (ended, live) = (Device::new(), Device::new());
    create(&cp, &ended, T).expect("created");
    create(&cp, &live, T).expect("created");
    let stopped_at = T + 1;
    admin(&cp, &alice, stop_req(ended.id()), stopped_at).expect("stopped");
    assert_eq!(cp.service.purge_ended(stopped_at + 100).expect("purges"), 0);
    assert_eq!(state(&cp, &ended), TunnelState::Stopped);
    assert_eq!(cp.service.purge_ended(stopped_at + 101).expect("purges"), 1);
    assert_eq!(cp.store().tunnel(ended.id()).expect("reads"), None);
    assert_eq!(
        code(admin(&cp, &alice, AdminRequest::Show(ended.id()), T + 200)),
        ErrorCode::NotFound
    );
    // The live one stays, the counts follow, the audit keeps the story.
    assert_eq!(state(&cp, &live), TunnelState::Pending);
    let counts = cp.store().count_by_state().expect("counts");
    let count = |name: &str| counts.iter().find(|(k, _)| k.name() == name).map(|c| c.1);
    assert_eq!((count("pending"), count("stopped")), (Some(1), Some(0)));
    assert_eq!(
        cp.store()
            .audit_page(Some(ended.id()), 0, 10)
            .expect("reads")
            .len(),
        2
    );
    assert_eq!(cp.store().verify_audit().expect("reads"), Ok(4));
}

#[test]
fn the_live_tunnel_cap_answers_unavailable_until_a_tunnel_ends() {
    let (cp, alice) = staffed(config(|c| c.max_live_tunnels = 2));
    let (a, b, c) = (Device::new(), Device::new(), Device::new());
    create(&cp, &a, T).expect("created");
    create(&cp, &b, T).expect("created");
    assert_eq!(code(create(&cp, &c, T)), ErrorCode::Unavailable);
    // A replayed create still answers: it adds nothing.
    assert!(matches!(
        create(&cp, &a, T + 1),
        Ok(DeviceResponse::Created { .. })
    ));
    admin(&cp, &alice, stop_req(a.id()), T + 2).expect("stopped");
    assert!(matches!(
        create(&cp, &c, T + 3),
        Ok(DeviceResponse::Created { .. })
    ));
}

#[test]
fn requests_beyond_the_limits_or_not_the_callers_are_refused_with_the_reason() {
    let cp = InProcess::with(config(|c| c.max_duration_secs = 1800));
    let mut d = Device::new();
    let body = d.request.body.clone();
    let long = d.request.clone();
    let e = create(&cp, &d, T).expect_err("too long");
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::Malformed, "duration must be 1 to 1800 seconds")
    );
    d.request = TunnelRequest::new(&d.keys, body.facts, 1800, body.ports, body.note);
    create(&cp, &d, T).expect("created");
    // The same id with other contents is another tunnel.
    let e = device(&cp, &d, DeviceRequest::Create(Box::new(long)), T).expect_err("refused");
    assert_eq!(e.code, ErrorCode::AlreadyExists);
    // Another credential can neither file nor read this one's request.
    let other = Device::new();
    let r = device(&cp, &other, d.create_req(), T);
    assert_eq!(code(r), ErrorCode::Forbidden);
    let r = cp.service.poll_now(caller(&other.cred()), d.id());
    assert_eq!(code(r), ErrorCode::Forbidden);
}

#[test]
fn creates_are_limited_per_address_and_a_replay_costs_nothing() {
    let cp = InProcess::with(Setup {
        creates: CreateLimits {
            per_address_per_minute: 2,
            per_address_burst: 2,
            per_minute: 1000,
        },
        ..Setup::default()
    });
    let from = |d: &Device, addr: &str| {
        let mut who = caller(&d.cred());
        who.addr = addr.parse().expect("ip");
        match cp.service.device_call(who, device_call(d.create_req()), T) {
            DeviceOutcome::Reply(r) => r.result.map(|_| ()).map_err(|e| e.code),
            DeviceOutcome::Wait { .. } => panic!("a create waited"),
        }
    };
    let first = Device::new();
    assert_eq!(from(&first, "203.0.113.1"), Ok(()));
    assert_eq!(from(&Device::new(), "203.0.113.1"), Ok(()));
    assert_eq!(
        from(&Device::new(), "203.0.113.1"),
        Err(ErrorCode::RateLimited)
    );
    assert_eq!(from(&first, "203.0.113.1"), Ok(()), "a replay answers");
    assert_eq!(from(&Device::new(), "203.0.113.2"), Ok(()));
}

#[test]
fn the_http_status_mirrors_the_encrypted_error() {
    let (cp, alice) = staffed(config(|c| {
        c.max_duration_secs = 3600;
        c.max_live_tunnels = 3;
    }));
    let viewer = admin_key();
    cp.enroll("victor", &viewer, AdminRole::Viewer);
    let c = cp.client();
    let d = Device::requested(&c);
    let approvers = Approvers::new();
    let mut long = Device::new();
    let body = long.request.body.clone();
    long.request = TunnelRequest::new(&long.keys, body.facts, 7200, body.ports, body.note);
    let status = |r: (u16, support_protocol::messages::AdminReply)| {
        (r.0, r.1.result.expect_err("refused").code)
    };
    let device_status = |r: (u16, support_protocol::messages::DeviceReply)| {
        (r.0, r.1.result.expect_err("refused").code)
    };
    assert_eq!(
        status(c.admin_req(&admin_key(), list_req())),
        (401, ErrorCode::Unauthenticated)
    );
    assert_eq!(
        status(c.admin_req(&viewer, stop_req(d.id()))),
        (403, ErrorCode::Forbidden)
    );
    assert_eq!(
        status(c.admin_req(&alice, AdminRequest::Show(Device::new().id()))),
        (404, ErrorCode::NotFound)
    );
    assert_eq!(
        status(c.admin_req(&alice, approve_req(&d, None, approvers.approval(&d, 2)))),
        (409, ErrorCode::StaleApproval)
    );
    assert_eq!(
        device_status(c.device_req(&d.cred(), d.connected_req([0; 32], 1))),
        (409, ErrorCode::InvalidState)
    );
    assert_eq!(device_status(long.create(&c)), (400, ErrorCode::Malformed));
    Device::requested(&c);
    Device::requested(&c);
    assert_eq!(
        device_status(Device::new().create(&c)),
        (503, ErrorCode::Unavailable)
    );
    assert_eq!(cp.get("/healthz").status, 200);
    assert_eq!(cp.post("/v1/device", &[0x41; 100]).status, 400);
    assert_eq!(cp.post("/v1/device", &vec![1; 70_000]).status, 413);
}

#[test]
fn a_trusted_proxys_forwarded_for_names_the_address_a_create_counts_against() {
    let cp = InProcess::with(Setup {
        creates: CreateLimits {
            per_address_per_minute: 1,
            per_address_burst: 1,
            per_minute: 1000,
        },
        trusted_proxies: vec!["10.0.0.1".parse().expect("ip")],
        ..Setup::default()
    });
    let c = cp.client();
    let create_via = |from: &str, forwarded_for: &str| {
        let body = Device::new().create_body(&c);
        cp.request(
            "POST",
            "/v1/device",
            &body,
            peer(from),
            &[("x-forwarded-for", forwarded_for)],
        )
        .status
    };
    let proxy = "10.0.0.1:5000";
    assert_eq!(create_via(proxy, "203.0.113.1"), 200);
    assert_eq!(create_via(proxy, "203.0.113.1"), 429, "the same client");
    assert_eq!(create_via(proxy, "203.0.113.2"), 200, "another client");
    // From anyone else the header is ignored: the peer counts.
    assert_eq!(create_via(PEER, "203.0.113.3"), 200);
    assert_eq!(create_via(PEER, "203.0.113.4"), 429);

    // A proxy that adds a line of its own (HAProxy's `option forwardfor`)
    // rather than extending the client's: every line counts, so the
    // client's own line, whatever it claims, does not name the client.
    let create_with_lines = |client_says: &str, proxy_says: &str| {
        let body = Device::new().create_body(&c);
        cp.request(
            "POST",
            "/v1/device",
            &body,
            peer(proxy),
            &[
                ("x-forwarded-for", client_says),
                ("x-forwarded-for", proxy_says),
            ],
        )
        .status
    };
    assert_eq!(create_with_lines("198.51.100.1", "203.0.113.5"), 200);
    assert_eq!(
        create_with_lines("198.51.100.2", "203.0.113.5"),
        429,
        "a new first line is not a new client"
    );
}
