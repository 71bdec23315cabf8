//! support-admin's output for programs and people: `audit --json` and
//! `status --json` against their documented schemas (admin/audit.schema.json,
//! admin/status.schema.json), readable times in `show`, `list` and `audit`,
//! and exit 255 for the tool's own failures in `exec` (the remote command's
//! status otherwise).

mod common;

use common::schema::violations;
use common::*;
use serde_json::Value;

fn schema() -> Value {
    serde_json::from_str(include_str!("../audit.schema.json")).expect("the schema is JSON")
}

fn status_schema() -> Value {
    serde_json::from_str(include_str!("../status.schema.json")).expect("the schema is JSON")
}

/// `status --json` (with `extra` arguments): the object, checked against
/// its schema, and the exit code, which must be the text output's.
fn status_json(run: impl Fn(&[&str]) -> std::process::Output, extra: &[&str]) -> (Value, i32) {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let problems = violations(&status_schema(), &v, "status");
    assert!(problems.is_empty(), "{problems:#?}\n{text}");
    let code = out.status.code().expect("exit code");
    let mut args = vec!["status"];
    args.extend_from_slice(extra);
    assert_eq!(
        run(&args).status.code(),
        Some(code),
        "status and status --json exit alike\n{text}"
    );
    (v, code)
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
    assert!(
        !dir.path().join("support-admin-session.1").exists(),
        "no page for the hidden internal command"
    );
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

#[test]
fn status_json_has_the_same_facts_with_the_same_exit_code() {
    // No identity at all: only that, and exit 1.
    let empty = tempdir();
    let (v, code) = status_json(|a| admin_in(empty.path(), a), &[]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["ready"], false);
    assert_eq!(v["identity"]["present"], false);
    assert!(
        v["identity"]["sealed"].is_null() && v["certificate"].is_null(),
        "{v:#}"
    );
    assert!(
        v["control_plane"].is_null() && v["provider"].is_null(),
        "{v:#}"
    );

    let lab = Lab::new(&DeviceSettings::default());
    let eng = |a: &[&str]| lab.eng.run(a);
    let (v, code) = status_json(eng, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["ready"], true);
    assert_eq!(v["identity"]["present"], true);
    assert_eq!(
        v["identity"]["sealed"], false,
        "the tests use no passphrase"
    );
    assert!(v["identity"]["path"]
        .as_str()
        .expect("path")
        .ends_with("identity.key"));
    let cert = &v["certificate"];
    assert_eq!(cert["name"], "alice");
    assert_eq!(cert["role"], "approver");
    assert_eq!(cert["serial"], 1);
    assert_eq!(cert["issuer"], lab.ca.public.as_str());
    assert_eq!(
        (&cert["expired"], &cert["expires_soon"]),
        (&Value::Bool(false), &Value::Bool(false))
    );
    let until = cert["valid_until"].as_u64().expect("seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        until > now + 89 * 86400 && until <= now + 90 * 86400,
        "{cert:#}"
    );
    let until_text = cert["valid_until_text"].as_str().expect("text");
    assert!(
        until_text.starts_with("20") && until_text.ends_with('Z'),
        "{until_text}"
    );
    let cp = &v["control_plane"];
    assert_eq!(cp["url"], lab.cp.url.as_str());
    assert_eq!(
        cp["pinned_keys"],
        serde_json::json!([hex::encode(lab.cp.public)])
    );
    assert_eq!(cp["reachable"], true);
    assert!(cp["error"].is_null(), "{cp:#}");
    assert_eq!(cp["tunnel_count"], 0);
    let provider = &v["provider"];
    assert_eq!(provider["name"], "local");
    assert_eq!(provider["ready"], true);
    assert!(provider["detail"]
        .as_str()
        .expect("detail")
        .starts_with("a relay on this machine"));
    assert_eq!(v["tunnels"], serde_json::json!([]));
    assert_eq!(v["handed_off"], serde_json::json!([]));

    // After an approve: the tunnel, connected, with its expiry.
    let (id, _) = lab.approve(&[], &["--yes"]);
    let (v, code) = status_json(eng, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["control_plane"]["tunnel_count"], 1);
    let tunnels = v["tunnels"].as_array().expect("tunnels");
    assert_eq!(tunnels.len(), 1, "{v:#}");
    let t = &tunnels[0];
    assert_eq!(t["id"], id.as_str());
    assert_eq!(t["state"], "connected");
    assert!(t["expires_at"].as_u64().expect("seconds") > now, "{t:#}");
    assert!(t["expires_at_text"].as_str().expect("text").ends_with('Z'));
    assert!(t["session_running"].is_boolean());

    // The control plane unreachable: said so, the tunnel's state unknown,
    // exit 1 like the text.
    let (v, code) = status_json(eng, &["--control-plane", "http://127.0.0.1:1"]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["ready"], false);
    let cp = &v["control_plane"];
    assert_eq!(cp["reachable"], false);
    assert_eq!(cp["url"], "http://127.0.0.1:1");
    assert!(!cp["error"].as_str().expect("error").is_empty(), "{cp:#}");
    assert!(cp["tunnel_count"].is_null(), "{cp:#}");
    assert_eq!(v["certificate"]["name"], "alice", "the rest is still there");
    assert_eq!(v["tunnels"][0]["id"], id.as_str());
    assert!(v["tunnels"][0]["state"].is_null(), "{v:#}");
    assert!(v["tunnels"][0]["expires_at"].is_null(), "{v:#}");

    // Not certified, and a wrong pinned key: reached is false too.
    let bob = Engineer::new(&lab.cp, None, "bob");
    let wrong = "ab".repeat(32);
    let (v, code) = status_json(|a| bob.run(a), &["--control-plane-key", &wrong]);
    assert_eq!(code, 1, "{v:#}");
    assert!(v["certificate"].is_null(), "{v:#}");
    assert_eq!(v["control_plane"]["reachable"], false);
    assert_eq!(
        v["control_plane"]["pinned_keys"],
        serde_json::json!([wrong])
    );

    // The checker refuses what the schema does not allow.
    let mut bad = v.clone();
    bad["control_plane"]["reachable"] = serde_json::json!("no");
    assert!(!violations(&status_schema(), &bad, "status").is_empty());
    let mut bad = v.clone();
    bad["surprise"] = serde_json::json!(1);
    assert!(!violations(&status_schema(), &bad, "status").is_empty());

    ok(&lab.eng.run(&["stop", &id]));
}
