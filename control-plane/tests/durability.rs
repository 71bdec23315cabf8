//! Restarts, crashes, backups, the audit chain, expiry and shutdown.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use support_protocol::audit::AuditAction;
use support_protocol::messages::{AdminRequest, AdminResponse, DeviceResponse, StopReason};
use support_protocol::state::TunnelState;
use support_protocol::ApprovalSeq;

#[test]
fn data_survives_a_restart() {
    let (mut server, c, admin) = Server::with_approver(&[]);
    let d = Device::requested(&c);
    ok_admin(c.admin_req(
        &admin,
        approve_req(&d, None, Approvers::new().approval(&d, 1)),
    ));
    let key_before = server.public;
    server.stop();
    server.launch();
    assert_eq!(server.public, key_before, "the static key persists");
    match ok_admin(
        server
            .client()
            .admin_req(&admin, AdminRequest::Show(d.id())),
    ) {
        AdminResponse::Show(t) => {
            assert_eq!(t.summary.state, TunnelState::Approved(ApprovalSeq(1)));
            assert_eq!(t.request, d.request);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn editing_an_audit_record_in_the_store_makes_audit_verify_fail() {
    let (mut server, c, admin) = Server::with_approver(&[]);
    let d = Device::requested(&c);
    ok_admin(c.admin_req(&admin, stop_req(d.id())));
    server.stop();
    let verify = || cli(&["audit", "verify", "--data", path_str(server.data())]);
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 records"));
    server.tamper_audit_record(2);
    let out = verify();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("breaks at record 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_backup_taken_while_serving_restores_to_a_working_service() {
    let (server, c, admin) = Server::with_approver(&[]);
    let d = Device::requested(&c);
    let restore = tempfile::tempdir().expect("temp dir");
    cli_ok(&[
        "backup",
        "--data",
        path_str(server.data()),
        "--out",
        path_str(&restore.path().join("store.redb")),
    ]);
    // The keys are files; an operator copies them alongside.
    std::process::Command::new("cp")
        .arg("-a")
        .arg(server.data().join("server-keys"))
        .arg(restore.path())
        .status()
        .expect("cp");
    // A backup is a redb store file, whichever store the server used.
    let restored = Server::start_on(restore, None, &[]);
    match ok_admin(
        restored
            .client()
            .admin_req(&admin, AdminRequest::Show(d.id())),
    ) {
        AdminResponse::Show(t) => assert_eq!(t.request, d.request),
        other => panic!("{other:?}"),
    }
    cli_ok(&["audit", "verify", "--data", path_str(restored.data())]);
}

#[test]
fn after_kill_9_during_a_burst_every_acknowledged_request_is_stored() {
    let extra = permissive_limits();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (mut server, client, admin) = Server::with_approver(&extra);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let d = Device::new();
                    let (cc, body) = client.device_body(&d.cred(), &device_call(d.create_req()));
                    let Ok(resp) = minreq::post(format!("{}/v1/device", client.url))
                        .with_body(body)
                        .with_timeout(5)
                        .send()
                    else {
                        continue;
                    };
                    if resp.status_code != 200 {
                        continue;
                    }
                    let Ok(plain) = cc.finish(resp.as_bytes()) else {
                        continue;
                    };
                    let reply: support_protocol::messages::DeviceReply =
                        support_protocol::decode(&plain).expect("decodes");
                    if matches!(reply.result, Ok(DeviceResponse::Created { .. })) {
                        acked.lock().expect("lock").push(d.request.clone());
                    }
                }
            })
        })
        .collect();
    // kill -9 in the middle of the burst, once enough has been acknowledged
    // to mean something.
    wait_for("100 acknowledged creates", || {
        acked.lock().expect("lock").len() >= 100
    });
    server.crash();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 20,
        "the burst was too small to mean anything: {}",
        acked.len()
    );
    server.launch();
    let c = server.client();
    for req in &acked {
        match ok_admin(c.admin_req(&admin, AdminRequest::Show(req.body.tunnel_id))) {
            AdminResponse::Show(t) => assert_eq!(&t.request, req),
            other => panic!("{other:?}"),
        }
    }
    eprintln!("{} acknowledged creates all survived kill -9", acked.len());
}

#[test]
fn pending_requests_go_stale_after_the_pending_window_and_wake_their_poll() {
    // The operator's cap (2 s) is below the device's window (24 h).
    let server = Server::start(&["--max-pending-window-secs", "2"]);
    let c = server.client();
    let d = Device::requested(&c);
    let start = Instant::now();
    match ok_device(d.poll(&c, TunnelState::Pending, 20)) {
        DeviceResponse::Poll { state, .. } => assert_eq!(state, TunnelState::Expired),
        other => panic!("{other:?}"),
    }
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "the sweeper woke the poll late: {waited:?}"
    );
}

#[test]
fn sigterm_ends_long_polls_cleanly() {
    let mut server = Server::start(&[]);
    let c = server.client();
    let d = Device::requested(&c);
    let poller = d.poll_in_background(&c, TunnelState::Pending);
    server.wait_for_long_polls(1);
    let start = Instant::now();
    server.stop();
    let stopped_in = start.elapsed();
    match ok_device(poller.join().expect("poller").1) {
        DeviceResponse::Poll { state, .. } => assert_eq!(state, TunnelState::Pending),
        other => panic!("{other:?}"),
    }
    assert!(
        stopped_in < Duration::from_secs(10),
        "shutdown waited for the poll timeout: {stopped_in:?}"
    );
}

#[test]
fn health_and_metrics_are_served() {
    let server = Server::start(&[]);
    let d = Device::new();
    ok_device(d.create(&server.client()));
    assert_eq!(get(&server.url, "/healthz").status, 200);
    let m = get(&server.url, "/metrics");
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("support_cp_requests_total{route=\"/v1/device\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("support_cp_tunnels{state=\"pending\"} 1"),
        "{text}"
    );
    assert!(text.contains("support_cp_long_polls_waiting 0"), "{text}");
    assert!(text.contains("support_cp_store_seconds_count"), "{text}");
}

#[test]
fn ended_tunnels_are_deleted_after_the_retention_period_and_their_audit_stays() {
    let (server, c, admin) = Server::with_approver(&["--retention-secs", "1"]);
    let (ended, live) = (Device::requested(&c), Device::requested(&c));
    ok_admin(c.admin_req(&admin, stop_req(ended.id())));
    wait_for("the ended tunnel's purge", || {
        c.admin_req(&admin, AdminRequest::Show(ended.id())).0 == 404
    });
    // The live one stays; the counts follow; the audit chain is intact and
    // still tells the ended tunnel's story.
    assert_eq!(c.admin_req(&admin, AdminRequest::Show(live.id())).0, 200);
    let text = String::from_utf8_lossy(&get(&server.url, "/metrics").body).to_string();
    assert!(
        text.contains("support_cp_tunnels{state=\"pending\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("support_cp_tunnels{state=\"stopped\"} 0"),
        "{text}"
    );
    cli_ok(&["audit", "verify", "--data", path_str(server.data())]);
    assert_eq!(
        c.audit_actions(&admin, ended.id()),
        vec![
            AuditAction::Requested,
            AuditAction::Stopped(StopReason::Admin)
        ]
    );
}

#[test]
fn a_request_is_kept_for_the_devices_window_within_the_bounds() {
    let server = Server::start(&["--max-pending-window-secs", "864000"]);
    let c = server.client();
    let admin = admin_key();
    server.enroll("op", &admin, "viewer");
    let kept = |asked: u32| {
        let mut d = Device::new();
        d.request = d.request.clone().with_pending_window(&d.keys, asked);
        match ok_device(d.create(&c)) {
            DeviceResponse::Created {
                stale_after_secs, ..
            } => {
                let shown = match ok_admin(c.admin_req(&admin, AdminRequest::Show(d.id()))) {
                    AdminResponse::Show(t) => t.summary.expires_at - t.summary.created_at,
                    other => panic!("{other:?}"),
                };
                assert_eq!(
                    u64::from(stale_after_secs),
                    shown,
                    "the device is told what is kept"
                );
                shown
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(kept(3 * 86400), 3 * 86400, "the device's own window");
    assert_eq!(kept(30 * 86400), 10 * 86400, "the operator's cap");
    assert_eq!(kept(1), 60, "the protocol's floor");
}
