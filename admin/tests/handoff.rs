//! Hand-off on real parts (the control-plane binary over HTTP, the local
//! relay, the real agent, Debian's sshd): alice approves and uses a tunnel,
//! hands it to bob through the control plane's mailbox; bob picks it up and
//! runs a command on the device; alice cannot connect any more; carol cannot
//! fetch bob's package; the audit shows the hand-off and the pick-up; and a
//! package altered in the control plane's store is refused by bob.

mod common;

use std::time::Duration;

use common::schema::violations;
use common::*;
use serde_json::Value;
use support_protocol::TunnelId;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Background session processes of tunnel `id` started from `home`.
fn sessions_of(home: &std::path::Path, id: &str) -> usize {
    let home = home.display().to_string();
    processes(|args| {
        args.windows(2).any(|w| w[0] == "session" && w[1] == id) && args.contains(&home)
    })
}

#[test]
fn bob_connects_after_alice_hands_off_and_alice_cannot_any_more() {
    let lab = Lab::new(&DeviceSettings::default());
    let bob = Engineer::new(&lab.cp, Some(&lab.ca), "bob");
    let carol = Engineer::new(&lab.cp, Some(&lab.ca), "carol");
    let (id, _) = lab.approve(&[], &["--yes"]);
    let user = format!("support-{id}");
    let alice_home = lab.eng.home.path();

    // alice works on the device; her session runs.
    let out = lab.eng.run(&["exec", &id, "--", "id -un"]);
    assert_eq!(ok(&out), format!("{user}\n"));
    assert_eq!(sessions_of(alice_home, &id), 1);

    // Refusals before anything is sent: an unknown name, and someone who
    // has not published a hand-off key yet. The tunnel stays alice's.
    let out = lab.eng.run(&["handoff", &id, "--to", "mallory"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nobody named 'mallory' is enrolled"),
        "{}",
        stderr(&out)
    );
    let out = lab.eng.run(&["handoff", &id, "--to", "bob"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bob is enrolled but has not published a hand-off key"),
        "{}",
        stderr(&out)
    );
    assert!(lab.eng.records_dir().join(format!("{id}.json")).exists());

    // bob and carol publish their keys (and have nothing waiting).
    for who in [&bob, &carol] {
        let out = who.run(&["handoffs"]);
        assert!(ok(&out).contains("No hand-offs wait for you."));
        assert!(stderr(&out).contains("your hand-off key is published"));
    }

    // alice hands off: her secrets are wiped, her session ends.
    let out = lab.eng.run(&["handoff", &id, "--to", "bob"]);
    assert_eq!(ok(&out).trim(), id);
    assert!(stderr(&out).contains("bob runs: support-admin pickup"));
    assert!(!lab.eng.records_dir().join(format!("{id}.json")).exists());
    assert!(!lab.eng.records_dir().join(&id).exists());
    wait_for("alice's session to end", Duration::from_secs(15), || {
        sessions_of(alice_home, &id) == 0
    });

    // alice can no longer connect: exit 255, naming bob.
    for cmd in [
        vec!["exec", id.as_str(), "--", "true"],
        vec!["connect", id.as_str()],
    ] {
        let out = lab.eng.run(&cmd);
        assert_eq!(out.status.code(), Some(255), "{cmd:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("was handed off to bob at"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
    let list = ok(&lab.eng.run(&["list"]));
    assert!(list.contains("(handed off to bob at"), "{list}");

    // carol sees nothing and cannot fetch bob's package.
    assert!(ok(&carol.run(&["handoffs"])).contains("No hand-offs wait for you."));
    let out = carol.run(&["pickup", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("no hand-off of tunnel {id} is waiting for you")),
        "{}",
        stderr(&out)
    );
    assert!(!carol.records_dir().join(format!("{id}.json")).exists());

    // bob sees it, picks it up, and works on the device through Debian's sshd.
    let waiting = ok(&bob.run(&["handoffs", "--json"]));
    let v: Value = serde_json::from_str(&waiting).expect("json");
    assert_eq!(v[0]["id"], id.as_str(), "{waiting}");
    assert_eq!(v[0]["from"], "alice", "{waiting}");
    let out = bob.run(&["pickup", &id[..6]]);
    assert_eq!(ok(&out).trim(), id);
    assert!(
        stderr(&out).contains("picked up tunnel"),
        "{}",
        stderr(&out)
    );
    let out = bob.run(&["exec", &id, "--", "id -un; hostname"]);
    assert!(ok(&out).starts_with(&format!("{user}\n")));
    // The mailbox is empty now; a second pick-up finds nothing.
    assert!(ok(&bob.run(&["handoffs"])).contains("No hand-offs wait for you."));
    assert_eq!(bob.run(&["pickup", &id]).status.code(), Some(1));

    // The audit shows the hand-off (by alice, to bob) and the pick-up (by bob, from alice).
    let out = ok(&bob.run(&["audit", &id, "--json"]));
    let v: Value = serde_json::from_str(&out).expect("json");
    let schema: Value =
        serde_json::from_str(include_str!("../audit.schema.json")).expect("the schema is JSON");
    let problems = violations(&schema, &v, "audit");
    assert!(problems.is_empty(), "{problems:#?}\n{out}");
    let rows = v.as_array().expect("array");
    let find = |kind: &str| {
        rows.iter()
            .find(|r| r["action"]["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {out}"))
    };
    let handed = find("handed_off");
    assert_eq!(handed["actor"]["name"], "alice");
    assert_eq!(handed["action"]["to"], "bob");
    assert_eq!(handed["tunnel"], id.as_str());
    let picked = find("picked_up");
    assert_eq!(picked["actor"]["name"], "bob");
    assert_eq!(picked["action"]["from"], "alice");
    assert!(picked["seq"].as_u64() > handed["seq"].as_u64());

    // bob ends it: the device tears down.
    ok(&bob.run(&["stop", &id]));
}

#[test]
fn a_package_altered_in_the_store_is_refused_by_the_receiver() {
    let mut lab = Lab::new(&DeviceSettings::default());
    let bob = Engineer::new(&lab.cp, Some(&lab.ca), "bob");
    ok(&bob.run(&["handoffs"]));
    let (id, _) = lab.approve(&[], &["--yes"]);
    ok(&lab.eng.run(&["handoff", &id, "--to", "bob"]));

    // Someone with the control plane's disk flips one bit of the sealed secrets.
    lab.cp.kill();
    let tunnel: TunnelId = id.parse().expect("id");
    support_control_plane::store::redb_store::tamper_handoff(
        &lab.cp.dir.path().join("store.redb"),
        tunnel,
    )
    .expect("tampers");
    lab.cp.launch();

    let out = bob.run(&["pickup", &id]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("REFUSED the hand-off of tunnel {id}"))
            && err.contains("the signature does not verify"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!bob.records_dir().join(format!("{id}.json")).exists());
    // Refused packages stay in the mailbox (nothing was picked up) and the
    // audit has no pick-up.
    let audit = ok(&bob.run(&["audit", &id]));
    assert!(audit.contains("handed off to bob"), "{audit}");
    assert!(!audit.contains("picked up"), "{audit}");
}
