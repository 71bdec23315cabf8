//! Two replicas on one PostgreSQL database (a throwaway cluster of each
//! test's own, Debian's server run by scripts/pg-scratch): a long-poll held
//! on one wakes for an approval posted on the other, a replica killed with
//! -9 loses nothing it acknowledged and its devices go on with the other,
//! and so does a database restarted under load.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::postgres::{new_database, Cluster};
use common::*;
use support_protocol::control_channel::StaticKeypair;
use support_protocol::messages::device::PollRequest;
use support_protocol::messages::{
    AdminRequest, AdminResponse, DeviceReply, DeviceRequest, DeviceResponse, TunnelRequest,
};
use support_protocol::state::TunnelState;
use support_protocol::ApprovalSeq;

/// Two replicas of one control plane: one database, one set of server
/// keys (copied, as the operator deploys them), separate data dirs.
struct Pair {
    a: Server,
    b: Server,
    admin: StaticKeypair,
}

fn pair(db: &str) -> Pair {
    let extra = permissive_limits();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let a = Server::start_on(
        tempfile::tempdir().expect("temp dir"),
        Some(db.into()),
        &extra,
    );
    let b_dir = tempfile::tempdir().expect("temp dir");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(a.data().join("server-keys"))
        .arg(b_dir.path())
        .status()
        .expect("cp");
    assert!(copied.success());
    let b = Server::start_on(b_dir, Some(db.into()), &extra);
    assert_eq!(a.public, b.public, "both replicas serve the same key");
    // A replica answers before its LISTEN connection is up; a change made
    // on the other one before then would reach its polls only by timeout.
    wait_for_listeners(db, 2);
    let admin = admin_key();
    // Enrolled through replica A's operator socket; B reads the same table.
    a.enroll("alice", &admin, "approver");
    Pair { a, b, admin }
}

/// Waits until `n` replicas LISTEN on the database `url` names: their
/// LISTEN connections have run `LISTEN` (or, later, their ping).
fn wait_for_listeners(url: &str, n: usize) {
    use support_control_plane::store::postgres::LISTENER_NAME;
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{LISTENER_NAME}' \
         AND (query LIKE 'LISTEN%' OR query = 'SELECT 1')"
    );
    wait_for(&format!("{n} replicas to LISTEN"), || {
        common::postgres::psql(url, &sql).trim() == n.to_string()
    });
}

/// A long-poll that reports a dead server instead of panicking.
fn poll_raw(
    c: &Client,
    d: &Device,
    known: TunnelState,
) -> std::thread::JoinHandle<(Instant, Option<DeviceReply>)> {
    let (c, cred) = (c.clone(), d.cred());
    let poll = PollRequest {
        tunnel_id: d.id(),
        known,
        wait_secs: 25,
    };
    std::thread::spawn(move || {
        let (cc, body) = c.device_body(&cred, &device_call(DeviceRequest::Poll(poll)));
        let reply = minreq::post(format!("{}/v1/device", c.url))
            .with_body(body)
            .with_timeout(60)
            .send()
            .ok()
            .filter(|r| r.status_code == 200)
            .map(|r| {
                let plain = cc.finish(r.as_bytes()).expect("opens the reply");
                support_protocol::decode(&plain).expect("decodes")
            });
        (Instant::now(), reply)
    })
}

fn approved(reply: DeviceReply) -> TunnelState {
    match reply.result {
        Ok(DeviceResponse::Poll { state, .. }) => state,
        other => panic!("{other:?}"),
    }
}

/// Polls on `on`, approves on `via`; returns how long after the approval
/// was acknowledged the poll returned (zero if it returned first).
fn wake_across(on: &Server, via: &Server, admin: &StaticKeypair) -> Duration {
    let d = Device::requested(&on.client());
    let poller = poll_raw(&on.client(), &d, TunnelState::Pending);
    on.wait_for_long_polls(1);
    let approval = Approvers::new().approval(&d, 1);
    ok_admin(
        via.client()
            .admin_req(admin, approve_req(&d, None, approval)),
    );
    let acked = Instant::now();
    let (returned, reply) = poller.join().expect("poller");
    let reply = reply.expect("the poll is answered");
    assert_eq!(approved(reply), TunnelState::Approved(ApprovalSeq(1)));
    returned.saturating_duration_since(acked)
}

#[test]
fn a_poll_held_on_replica_a_wakes_within_200_ms_of_an_approval_on_replica_b() {
    let cluster = Cluster::start();
    let p = pair(&new_database(&cluster.url));
    let mut waits = Vec::new();
    for _ in 0..5 {
        waits.push(wake_across(&p.a, &p.b, &p.admin));
        waits.push(wake_across(&p.b, &p.a, &p.admin));
    }
    eprintln!("cross-replica wake-ups after the approval's answer: {waits:?}");
    let slowest = waits.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(200),
        "a poll woke {slowest:?} after the approval on the other replica"
    );
}

#[test]
fn kill_9_of_the_replica_holding_a_poll_and_the_device_goes_on_with_the_other() {
    let cluster = Cluster::start();
    let mut p = pair(&new_database(&cluster.url));
    let d = Device::requested(&p.a.client());
    let poller = poll_raw(&p.a.client(), &d, TunnelState::Pending);
    p.a.wait_for_long_polls(1);
    p.a.crash();
    let (_, reply) = poller.join().expect("poller");
    assert!(reply.is_none(), "a killed replica answered: {reply:?}");

    // The device's next poll goes to B, which knows its request.
    let poller = poll_raw(&p.b.client(), &d, TunnelState::Pending);
    p.b.wait_for_long_polls(1);
    let approval = Approvers::new().approval(&d, 1);
    ok_admin(
        p.b.client()
            .admin_req(&p.admin, approve_req(&d, None, approval)),
    );
    let (_, reply) = poller.join().expect("poller");
    assert_eq!(
        approved(reply.expect("B answers")),
        TunnelState::Approved(ApprovalSeq(1))
    );
}

/// Creates from 8 threads, spread over `urls`, until `stop`; each request
/// the control plane acknowledged is pushed to the returned list.
struct Burst {
    acked: Arc<Mutex<Vec<TunnelRequest>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Burst {
    fn start(clients: &[Client]) -> Burst {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..8)
            .map(|i| {
                let client = clients[i % clients.len()].clone();
                let (acked, stop) = (acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let d = Device::new();
                        let (cc, body) =
                            client.device_body(&d.cred(), &device_call(d.create_req()));
                        let Ok(resp) = minreq::post(format!("{}/v1/device", client.url))
                            .with_body(body)
                            .with_timeout(5)
                            .send()
                        else {
                            // A dead replica: back off instead of spinning.
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        };
                        if resp.status_code != 200 {
                            continue;
                        }
                        let Ok(plain) = cc.finish(resp.as_bytes()) else {
                            continue;
                        };
                        let reply: DeviceReply = support_protocol::decode(&plain).expect("decodes");
                        if matches!(reply.result, Ok(DeviceResponse::Created { .. })) {
                            acked.lock().expect("lock").push(d.request.clone());
                        }
                    }
                })
            })
            .collect();
        Burst {
            acked,
            stop,
            workers,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    fn wait_for(&self, n: usize) {
        wait_for(&format!("{n} acknowledged creates"), || self.acked() >= n);
    }

    fn finish(self) -> Vec<TunnelRequest> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.join().expect("worker");
        }
        let acked = self.acked.lock().expect("lock").clone();
        acked
    }
}

/// Every request in `acked` is stored, as it was sent, and the audit
/// chain the writers of both replicas extended is whole.
fn all_present(on: &Server, admin: &StaticKeypair, acked: &[TunnelRequest]) {
    let c = on.client();
    for req in acked {
        match ok_admin(c.admin_req(admin, AdminRequest::Show(req.body.tunnel_id))) {
            AdminResponse::Show(t) => assert_eq!(&t.request, req),
            other => panic!("{other:?}"),
        }
    }
    let out = cli_ok(&["audit", "verify", "--data", path_str(on.data())]);
    eprintln!(
        "{} acknowledged creates all present; {}",
        acked.len(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
}

#[test]
fn kill_9_of_a_replica_during_a_burst_of_creates_loses_no_acknowledged_create() {
    let cluster = Cluster::start();
    let mut p = pair(&new_database(&cluster.url));
    let burst = Burst::start(&[p.a.client(), p.b.client()]);
    burst.wait_for(100);
    p.a.crash();
    // B goes on acknowledging after A died.
    let at_kill = burst.acked();
    burst.wait_for(at_kill + 50);
    let acked = burst.finish();
    all_present(&p.b, &p.admin, &acked);
}

#[test]
fn a_postgresql_restart_during_a_burst_loses_no_acknowledged_create_and_wakes_still_cross() {
    let cluster = Cluster::start();
    let p = pair(&new_database(&cluster.url));
    let burst = Burst::start(&[p.a.client(), p.b.client()]);
    burst.wait_for(100);
    cluster.restart();
    // Both replicas reconnect and acknowledge again.
    let at_restart = burst.acked();
    burst.wait_for(at_restart + 100);
    let acked = burst.finish();
    all_present(&p.a, &p.admin, &acked);
    // Each replica's LISTEN connection came back too: polls still wake for
    // approvals on the other replica.
    wait_for_listeners(&cluster.url, 2);
    wake_across(&p.a, &p.b, &p.admin);
    wake_across(&p.b, &p.a, &p.admin);
}

#[test]
fn sweepers_and_purges_on_two_replicas_at_once_expire_and_delete_each_tunnel_once() {
    use support_control_plane::config::CreateLimits;
    use support_control_plane::service::{unix_now, Service, ServiceConfig};
    use support_control_plane::store::postgres::PgStore;
    use support_control_plane::store::{AuditDraft, Store, TunnelRecord};
    use support_protocol::audit::{Actor, AuditAction};
    use support_protocol::messages::TunnelStateKind;

    let cluster = Cluster::start();
    let db = new_database(&cluster.url);
    let limits = CreateLimits {
        per_address_per_minute: 1,
        per_address_burst: 1,
        per_minute: 1,
    };
    let replica = || {
        let store: Arc<dyn Store> = Arc::new(PgStore::open(&db).expect("opens"));
        Arc::new(Service::new(
            store,
            ServiceConfig {
                retention_secs: 0,
                unapproved_retention_secs: 0,
                ..ServiceConfig::default()
            },
            limits.limiter(Instant::now()),
        ))
    };
    let (a, b) = (replica(), replica());
    let now = unix_now();
    let n = 300;
    for _ in 0..n {
        let request = Device::new().request;
        let record = TunnelRecord {
            state: TunnelState::Pending,
            created_at: now - 20,
            expires_at: now - 10,
            approval: None,
            report: None,
            stop_reason: None,
            request,
        };
        let draft = AuditDraft {
            actor: Actor::System,
            tunnel_id: Some(record.id()),
            action: AuditAction::Requested,
        };
        a.store()
            .insert_tunnel(&record, draft, now)
            .expect("inserts");
    }

    // Both sweep at once, each until nothing is due.
    let sweep = |s: Arc<Service>| {
        std::thread::spawn(move || {
            let mut total = 0;
            loop {
                match s.sweep_expired(now).expect("sweeps") {
                    0 => return total,
                    k => total += k,
                }
            }
        })
    };
    let (ja, jb) = (sweep(a.clone()), sweep(b.clone()));
    let (ea, eb) = (ja.join().expect("a"), jb.join().expect("b"));
    eprintln!("replica A expired {ea}, replica B {eb}");
    assert_eq!(ea + eb, n, "each tunnel expired exactly once");
    let expired_records = a
        .store()
        .audit_page(None, 0, 10 * n)
        .expect("reads")
        .into_iter()
        .filter(|r| r.entry.action == AuditAction::Expired)
        .count();
    assert_eq!(expired_records, n, "one Expired audit record per tunnel");
    assert_eq!(a.store().verify_audit().expect("reads"), Ok(2 * n as u64));

    // Both purge at once: each ended tunnel goes once, the counts stay true.
    let purge = |s: Arc<Service>| {
        std::thread::spawn(move || {
            let mut total = 0;
            loop {
                match s.purge_ended(now + 1).expect("purges") {
                    0 => return total,
                    k => total += k,
                }
            }
        })
    };
    let (pa, pb) = (purge(a.clone()), purge(b.clone()));
    let (pa, pb) = (pa.join().expect("a"), pb.join().expect("b"));
    eprintln!("replica A purged {pa}, replica B {pb}");
    assert_eq!(pa + pb, n);
    assert!(b
        .store()
        .list_tunnels(None, None, 10)
        .expect("lists")
        .is_empty());
    let counts = b.store().count_by_state().expect("counts");
    assert!(
        counts.iter().all(|(_, c)| *c == 0),
        "counts after the purge: {counts:?}"
    );
    assert_eq!(
        counts.iter().find(|(k, _)| *k == TunnelStateKind::Expired),
        Some(&(TunnelStateKind::Expired, 0))
    );
}
