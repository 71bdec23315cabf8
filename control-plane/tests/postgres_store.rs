//! The PostgreSQL store's own guarantees, on a throwaway cluster of each
//! test's own: its backup (a redb file) holds every row, and hand-off
//! posts racing on two replicas are decided as the redb store decides
//! them.

mod common;

use std::sync::{Arc, Barrier};

use common::postgres::{new_database, Cluster};
use support_control_plane::store::postgres::PgStore;
use support_control_plane::store::redb_store::RedbStore;
use support_control_plane::store::sample;
use support_control_plane::store::{Store, TunnelRecord};
use support_protocol::TunnelId;

const NOW: u64 = 1_800_000_000;

/// Everything a store holds, read through the `Store` calls.
fn contents(store: &dyn Store) -> String {
    let tunnels = store.list_tunnels(None, None, 1000).expect("lists");
    let handoffs: Vec<_> = tunnels
        .iter()
        .map(|t| store.handoff(t.id()).expect("reads"))
        .collect();
    format!(
        "{tunnels:?}\n{:?}\n{:?}\n{handoffs:?}\n{:?}\n{:?}\n{:?}",
        store.admins().expect("reads"),
        store.handoff_key("bob").expect("reads"),
        store.audit_page(None, 0, 1000).expect("reads"),
        store.count_by_state().expect("counts"),
        store.verify_audit().expect("verifies"),
    )
}

#[test]
fn a_backup_holds_every_row_even_the_tunnels_at_both_ends_of_the_id_range() {
    let cluster = Cluster::start();
    let store = PgStore::open(&new_database(&cluster.url)).expect("opens");
    sample::fill(&store, NOW);
    // Ids are the devices' to choose: the first and last keys too.
    for (seed, id) in [(20, 0), (21, u64::MAX)] {
        let mut t: TunnelRecord = sample::tunnel(seed, NOW);
        t.request.body.tunnel_id = TunnelId(id);
        store
            .insert_tunnel(&t, sample::draft(&t), NOW)
            .expect("inserts");
    }
    let before = contents(&store);

    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("backup.redb");
    store.backup(&out).expect("backs up");
    let copy = RedbStore::open(&out).expect("the backup is a redb store");
    assert_eq!(contents(&copy), before);
    for id in [0, u64::MAX] {
        assert!(
            copy.tunnel(TunnelId(id)).expect("reads").is_some(),
            "tunnel {id} is in the backup"
        );
    }
    assert!(
        store.backup(&out).is_err(),
        "a backup never overwrites a file"
    );
}

#[test]
fn replayed_hand_off_posts_racing_on_two_replicas_are_stored_and_audited_once() {
    let cluster = Cluster::start();
    let db = new_database(&cluster.url);
    let a: Arc<dyn Store> = Arc::new(PgStore::open(&db).expect("opens"));
    let b: Arc<dyn Store> = Arc::new(PgStore::open(&db).expect("opens"));
    let posted = sample::fill(a.as_ref(), NOW);
    let id = posted.tunnel_id;
    let audited = |s: &dyn Store| s.audit_page(Some(id), 0, 1000).expect("reads").len();
    // The same post again, from eight threads on two replicas at once,
    // each after its tunnel's hand-off was taken: the first re-posts it,
    // the others are replays.
    for round in 0..20 {
        let draft = sample::draft(&sample::tunnel(1, NOW));
        assert!(a
            .take_handoff(id, "bob", draft.clone(), NOW)
            .expect("takes"));
        let before = audited(a.as_ref());
        let barrier = Arc::new(Barrier::new(8));
        let posts: Vec<_> = (0..8)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let (record, draft, barrier) = (posted.clone(), draft.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.post_handoff(&record, draft, NOW).expect("posts")
                })
            })
            .collect();
        for p in posts {
            assert_eq!(p.join().expect("poster"), Ok(()), "round {round}");
        }
        assert_eq!(
            audited(a.as_ref()) - before,
            1,
            "round {round}: one post, one audit record"
        );
        let stored = a.handoff(id).expect("reads").expect("waits");
        assert_eq!(
            (stored.package, stored.to),
            (posted.package.clone(), posted.to.clone())
        );
    }
    assert_eq!(
        a.verify_audit().expect("verifies"),
        b.verify_audit().expect("verifies")
    );
}

#[test]
fn a_replica_without_its_store_setting_neither_serves_nor_operates_on_an_empty_redb_store() {
    let cluster = Cluster::start();
    let db = new_database(&cluster.url);
    let mut server = common::Server::start_on(
        tempfile::tempdir().expect("temp dir"),
        Some(db.clone()),
        &[],
    );
    let admin = common::admin_key();
    server.enroll("alice", &admin, "approver");
    server.stop();
    let data = server.data().to_path_buf();
    let admins = |store: Option<&str>| {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(["admins", "list", "--data"])
            .arg(&data)
            .env_remove("SUPPORT_CP_STORE");
        if let Some(url) = store {
            cmd.args(["--store", url]);
        }
        cmd.output().expect("runs")
    };

    // As an operator who forgot where the replica keeps its store.
    let out = admins(None);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("keeps its store in PostgreSQL") && said.contains("--store"),
        "{said}"
    );
    assert!(
        !data.join("store.redb").exists(),
        "an empty redb store was started beside the real one"
    );
    // Nor does the replica serve from one, should its setting get lost.
    let said = common::serve_refused(&data, None);
    assert!(said.contains("keeps its store in PostgreSQL"), "{said}");
    assert!(!data.join("store.redb").exists());

    let out = admins(Some(&db));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice"));
}
