//! support-admin's output for programs and people: `audit --json` against
//! its documented schema (admin/audit.schema.json), readable times in
//! `show`, `list` and `audit`, and exit 255 for the tool's own failures in
//! `exec` (the remote command's status otherwise).

mod common;

use common::schema::violations;
use common::*;
use serde_json::Value;

fn schema() -> Value {
    serde_json::from_str(include_str!("../audit.schema.json")).expect("the schema is JSON")
}

#[test]
fn audit_json_follows_its_documented_schema() {
    let lab = Lab::new(&DeviceSettings::default());
    // Approved, connected, stopped by support.
    let (id, _) = lab.approve(&[], &["--yes"]);
    ok(&lab.eng.run(&["stop", &id]));
    // Refused by the device: a certificate from another CA.
    let rogue_ca = Ca::new();
    let rogue = Engineer::new(&lab.cp, Some(&rogue_ca), "mallory");
    let (refused, code) = lab.device.request(&[]);
    let out = rogue.run(&[
        "approve",
        &code,
        "--provider",
        "local",
        "--yes",
        "--wait",
        "30",
    ]);
    assert!(!out.status.success());

    let out = ok(&lab.eng.run(&["audit", "--json"]));
    let v: Value = serde_json::from_str(&out).expect("json");
    let problems = violations(&schema(), &v, "audit");
    assert!(problems.is_empty(), "{problems:#?}\n{out}");

    let kinds: Vec<String> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            let a = &r["action"];
            match a["reason"]["kind"].as_str() {
                Some(reason) => format!("stopped/{reason}"),
                None => a["kind"].as_str().expect("kind").to_string(),
            }
        })
        .collect();
    for want in [
        "admin_added",
        "requested",
        "approved",
        "connected",
        "stopped/support",
        "stopped/refused",
    ] {
        assert!(kinds.iter().any(|k| k == want), "{want} in {kinds:?}");
    }
    let refusal = v
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["tunnel"] == refused.to_string().as_str() && r["action"]["kind"] == "stopped")
        .expect("the refusal");
    assert_eq!(refusal["actor"], serde_json::json!({"kind": "device"}));
    assert!(refusal["action"]["reason"]["text"]
        .as_str()
        .expect("text")
        .contains("not from a pinned support CA"));

    // The checker itself refuses what the schema does not allow.
    let mut bad = v.clone();
    bad[0]["actor"] = serde_json::json!("Admin(\"alice\")");
    assert!(!violations(&schema(), &bad, "audit").is_empty());
    let mut bad = v.clone();
    bad[0]["action"]["kind"] = serde_json::json!("launched_missiles");
    assert!(!violations(&schema(), &bad, "audit").is_empty());

    // People get times, not epoch seconds, and no literal null.
    let text = ok(&lab.eng.run(&["audit"]));
    assert!(text.contains(" 20") && text.contains("Z "), "{text}");
    let shown = ok(&lab.eng.run(&["show", &id]));
    assert!(!shown.contains("null"), "{shown}");
    assert!(shown.contains(" ago)"), "{shown}");
    let listed = ok(&lab.eng.run(&["list"]));
    assert!(listed.contains("EXPIRES"), "{listed}");
}

#[test]
fn exec_exits_255_for_its_own_failures_and_with_the_remote_status_otherwise() {
    let lab = Lab::new(&DeviceSettings::default());
    let (id, _) = lab.approve(&[], &["--yes"]);
    let out = lab.eng.run(&["exec", &id, "--", "exit 1"]);
    assert_eq!(out.status.code(), Some(1), "the remote command's status");
    let out = lab.eng.run(&["exec", "ffffffffffffffff", "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(255),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&lab.eng.run(&["stop", &id]));
    let out = lab.eng.run(&["exec", &id, "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(255),
        "a stopped tunnel: the tool failed"
    );
    let user = id
        .parse::<support_protocol::TunnelId>()
        .expect("id")
        .support_user();
    let gone = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while user_exists(&user) && std::time::Instant::now() < gone {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !user_exists(&user),
        "the device removed the user after the stop; it said:\n{}\n{}",
        lab.device.daemon_stderr(),
        String::from_utf8_lossy(&lab.device.run(&["log", &id]).stdout)
    );
    assert_no_access_left(&user);
}

#[test]
fn completions_and_man_pages() {
    let out = std::process::Command::new(ADMIN)
        .args(["completions", "bash"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("_support__admin()") && text.contains("ssh-config"),
        "{text}"
    );
    let dir = tempdir();
    let out = std::process::Command::new(ADMIN)
        .arg("man")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(out.status.success());
    let page = std::fs::read_to_string(dir.path().join("support-admin-approve.1")).expect("page");
    assert!(page.contains(".TH support-admin-approve 1"), "{page}");
    assert!(page.contains("pre\\-flight"), "{page}");
    assert!(dir.path().join("support-admin.1").exists());
}

#[test]
fn status_says_who_you_are_and_what_is_not_ready() {
    let lab = Lab::new(&DeviceSettings::default());
    let (id, _) = lab.approve(&[], &["--yes"]);
    ok(&lab.eng.run(&["exec", &id, "--", "true"]));
    let out = lab.eng.run(&["status"]);
    let text = ok(&out);
    for want in [
        "NOT sealed",
        "certificate  alice, Approver, serial",
        "reached with its pinned key",
        "provider     local: a relay on this machine",
        &format!("tunnel       {id}: connected, expires "),
        "session running",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    // An engineer who is not certified, with a wrong control-plane key.
    let bob = Engineer::new(&lab.cp, None, "bob");
    let out = bob.run(&["status", "--control-plane-key", &"ab".repeat(32)]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("certificate  none"), "{text}");
    assert!(text.contains("control plane NOT reached"), "{text}");
    ok(&lab.eng.run(&["stop", &id]));
}
