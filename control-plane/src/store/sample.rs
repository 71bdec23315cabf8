//! Sample rows for the stores' tests (both engines, and the PostgreSQL
//! tests under `tests/`): built through the `Store` calls alone, so the
//! same data goes into either store.

use support_protocol::audit::{Actor, AuditAction};
use support_protocol::bounded::{BoundedString, BoundedVec};
use support_protocol::certificate::{Role, SigningSeed, SupportCa};
use support_protocol::control_channel::StaticKeypair;
use support_protocol::handoff::{seal_handoff, HandoffKey, HandoffSender};
use support_protocol::messages::{DeviceFacts, TunnelRequest};
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::DeviceTunnelKeys;

use super::{AdminRecord, AdminRole, AuditDraft, HandoffRecord, Store, TunnelRecord};

fn text<const N: usize>(s: &str) -> BoundedString<N> {
    BoundedString::new(s).expect("fits")
}

/// A pending tunnel of the device whose keys come from `seed`.
pub fn tunnel(seed: u8, now: u64) -> TunnelRecord {
    let keys = DeviceTunnelKeys::from_seed([seed; 32]);
    let facts = DeviceFacts {
        hostname: text("amplipi"),
        model: text("AmpliPi"),
        firmware: text("0.4.7"),
        agent_version: text("0.1.0"),
    };
    let ports = BoundedVec::try_from(&[22u16][..]).expect("fits");
    TunnelRecord {
        request: TunnelRequest::new(&keys, facts, 3600, ports, text("help")),
        state: TunnelState::Pending,
        created_at: now,
        expires_at: now + 3600,
        approval: None,
        report: None,
        stop_reason: None,
    }
}

/// An audit draft about `r`.
pub fn draft(r: &TunnelRecord) -> AuditDraft {
    AuditDraft {
        actor: Actor::System,
        tunnel_id: Some(r.id()),
        action: AuditAction::Requested,
    }
}

/// Puts a row in every table of `store`, through the `Store` calls
/// alone: a live tunnel with a hand-off waiting (returned), an ended one,
/// two admins and a hand-off key.
pub fn fill(store: &dyn Store, now: u64) -> HandoffRecord {
    let (live, ended) = (tunnel(1, now), tunnel(2, now));
    for r in [&live, &ended] {
        store.insert_tunnel(r, draft(r), now).expect("inserts");
    }
    store
        .update_tunnel(ended.id(), now, &mut |r| {
            r.state = TunnelState::Stopped;
            Ok(None)
        })
        .expect("updates")
        .expect("exists")
        .expect("changes");
    let ca = SupportCa(SigningSeed::new([3; 32]));
    let (alice, bob) = (SigningSeed::new([4; 32]), SigningSeed::new([5; 32]));
    let cert = |name: &str, key: &SigningSeed| {
        ca.certify(text(name), key.public(), Role::Approver, 1, 0, u64::MAX / 2)
    };
    let (alice_cert, bob_cert) = (cert("alice", &alice), cert("bob", &bob));
    let bob_channel = StaticKeypair::from_secret([6; 32]);
    for (name, channel) in [("alice", [7; 32]), ("bob", bob_channel.public)] {
        let admin = AdminRecord {
            name: name.into(),
            key: channel,
            role: AdminRole::Approver,
        };
        store
            .put_admin(&admin, Actor::System, now)
            .expect("enrolls");
    }
    let bob_key = HandoffKey::sign(bob_channel.public, &bob, &bob_cert);
    store.put_handoff_key("bob", &bob_key).expect("stores");
    let from = HandoffSender {
        key: &alice,
        certificate: &alice_cert,
    };
    let package = seal_handoff(
        live.id(),
        b"secrets",
        &bob_key,
        &from,
        [8; 32],
        [9; 32],
        now,
    )
    .expect("seals");
    let record = HandoffRecord {
        tunnel_id: live.id(),
        from: "alice".into(),
        to: "bob".into(),
        package,
        posted_at: now,
        expires_at: 0,
    };
    store
        .post_handoff(&record, draft(&live), now)
        .expect("posts")
        .expect("accepted");
    record
}
