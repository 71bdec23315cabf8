//! The full lifecycle through both APIs, over real HTTP, with a real store.

mod common;

use std::time::Duration;

use common::*;
use support_protocol::messages::device::StoppedNotice;
use support_protocol::messages::{
    AdminRequest, AdminResponse, DeviceRequest, DeviceResponse, StopReason, TunnelStateKind,
};
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::request_tag;
use support_protocol::state::TunnelState;
use support_protocol::ApprovalSeq;

#[test]
fn request_approve_connect_stop_through_both_apis() {
    let (server, c, admin) = Server::with_approver(&[]);
    let approvers = Approvers::new();
    let d = Device::new();

    // Device requests; the request goes stale after the device's window (24 h by default).
    match ok_device(d.create(&c)) {
        DeviceResponse::Created {
            tunnel_id,
            stale_after_secs,
        } => {
            assert_eq!(tunnel_id, d.id());
            assert!(
                (86390..=86400).contains(&stale_after_secs),
                "{stale_after_secs}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Admin lists and shows it; the tag verifies with the code the owner read out.
    match ok_admin(c.admin_req(&admin, list_req())) {
        AdminResponse::List { tunnels, .. } => {
            assert_eq!(tunnels.len(), 1);
            assert_eq!(tunnels[0].state, TunnelState::Pending);
            assert_eq!(tunnels[0].facts.hostname.as_str(), "amplipi");
        }
        other => panic!("{other:?}"),
    }
    let code = OneTimeCode {
        tunnel_id: d.id(),
        secret: d.keys.one_time_secret(),
    };
    let code = OneTimeCode::parse(&code.to_display_string()).expect("parses");
    let detail = match ok_admin(c.admin_req(&admin, AdminRequest::Show(code.tunnel_id))) {
        AdminResponse::Show(d) => d,
        other => panic!("{other:?}"),
    };
    request_tag::verify(&code.secret, &detail.request)
        .expect("the control plane passed the request on unaltered");

    // Approve; the device's poll returns the very box.
    let approval = approvers.approval(&d, 1);
    assert_eq!(
        ok_admin(c.admin_req(&admin, approve_req(&d, None, approval.clone()))),
        AdminResponse::Approved(ApprovalSeq(1))
    );
    match ok_device(d.poll(&c, TunnelState::Pending, 20)) {
        DeviceResponse::Poll {
            state,
            approval: Some(got),
        } => {
            assert_eq!(state, TunnelState::Approved(ApprovalSeq(1)));
            assert_eq!(*got, approval);
        }
        other => panic!("{other:?}"),
    }

    // Connected, with the sealed report the admin can open.
    assert_eq!(
        ok_device(c.device_req(&d.cred(), d.connected_req(approval.hash(), 1))),
        DeviceResponse::Ack
    );
    let detail = match ok_admin(c.admin_req(&admin, AdminRequest::Show(d.id()))) {
        AdminResponse::Show(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(detail.summary.state, TunnelState::Connected(ApprovalSeq(1)));
    let sealed_report = detail.report.expect("report stored");
    sealed_report
        .open(d.id(), ApprovalSeq(1), &code.secret, &approval.hash())
        .expect("admin opens the report");

    // The admin stops it; the device's next poll says so.
    assert_eq!(
        ok_admin(c.admin_req(&admin, stop_req(d.id()))),
        AdminResponse::Stopped
    );
    match ok_device(d.poll(&c, TunnelState::Connected(ApprovalSeq(1)), 20)) {
        DeviceResponse::Poll { state, .. } => assert_eq!(state, TunnelState::Stopped),
        other => panic!("{other:?}"),
    }

    // The audit log tells the story, and its chain is intact.
    assert_eq!(c.audit_actions(&admin, d.id()), the_whole_story());
    cli_ok(&["audit", "verify", "--data", path_str(server.data())]);
}

#[test]
fn a_long_poll_returns_promptly_after_an_approval() {
    let (server, c, admin) = Server::with_approver(&[]);
    let d = Device::requested(&c);
    let approval = Approvers::new().approval(&d, 1);
    let poller = d.poll_in_background(&c, TunnelState::Pending);
    // The poll is held: the server counts it as waiting.
    server.wait_for_long_polls(1);
    ok_admin(c.admin_req(&admin, approve_req(&d, None, approval.clone())));
    let (elapsed, r) = poller.join().expect("poller");
    match ok_device(r) {
        DeviceResponse::Poll {
            state,
            approval: got,
        } => {
            assert_eq!(state, TunnelState::Approved(ApprovalSeq(1)));
            assert_eq!(got.as_deref(), Some(&approval));
        }
        other => panic!("{other:?}"),
    }
    // Answered on the approval, not at the 25 s timeout.
    assert!(elapsed < Duration::from_secs(10), "poll took {elapsed:?}");
    server.wait_for_long_polls(0);
}

#[test]
fn the_device_reports_stop_and_the_state_is_final() {
    let (_server, c, admin) = Server::with_approver(&[]);
    let d = Device::requested(&c);
    let notice = StoppedNotice {
        tunnel_id: d.id(),
        reason: StopReason::Owner,
    };
    assert_eq!(
        ok_device(c.device_req(&d.cred(), DeviceRequest::Stopped(notice))),
        DeviceResponse::Ack
    );
    let r = c.admin_req(
        &admin,
        approve_req(&d, None, Approvers::new().approval(&d, 1)),
    );
    assert_eq!(r.0, 409);
    assert_eq!(
        r.1.result.expect_err("refused").code,
        support_protocol::messages::ErrorCode::InvalidState
    );
    match ok_admin(c.admin_req(
        &admin,
        AdminRequest::List(support_protocol::messages::admin::ListQuery {
            state: Some(TunnelStateKind::Stopped),
            after: None,
            limit: 10,
        }),
    )) {
        AdminResponse::List { tunnels, .. } => assert_eq!(tunnels.len(), 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn settings_come_from_the_config_file_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("cp.toml");
    std::fs::write(
        &config,
        "max_pending_window = \"2m\"\nlog_format = \"json\"\n",
    )
    .expect("writes config");
    let server = Server::start(&["--config", path_str(&config)]);
    let d = Device::new();
    match ok_device(d.create(&server.client())) {
        DeviceResponse::Created {
            stale_after_secs, ..
        } => assert!((110..=120).contains(&stale_after_secs)),
        other => panic!("{other:?}"),
    }
    let server = Server::start(&["--config", path_str(&config), "--max-pending-window", "1m"]);
    match ok_device(d.create(&server.client())) {
        DeviceResponse::Created {
            stale_after_secs, ..
        } => assert!((50..=60).contains(&stale_after_secs)),
        other => panic!("{other:?}"),
    }
    // A typo in the file is an error, not a silently ignored setting.
    std::fs::write(&config, "aproval_window_secs = 5\n").expect("writes config");
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            path_str(&config),
            "--data",
            path_str(dir.path()),
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
