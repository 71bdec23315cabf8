//! The engineer's keys on disk: 0600, sealed with a passphrase when one is
//! given, and unusable without it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::*;

fn run(home: &std::path::Path, pass: &str, args: &[&str]) -> std::process::Output {
    Command::new(ADMIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .env("SUPPORT_ADMIN_PASSPHRASE", pass)
        .stdin(Stdio::null())
        .output()
        .expect("runs")
}

#[test]
fn keys_are_private_and_sealed_with_the_passphrase() {
    let home = tempdir();
    let out = run(home.path(), "correct horse battery", &["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sealed with your passphrase"), "{text}");
    let key = home.path().join("identity.key");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stored = std::fs::read_to_string(&key).expect("key");
    assert!(stored.contains("pbkdf2-hmac-sha256"), "{stored}");
    // The keys it printed are public; the stored file reveals neither secret.
    assert!(!stored.contains("control_plane_secret"));

    // A second init never overwrites an identity.
    let out = run(home.path(), "x", &["init"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));

    // Using the keys needs the passphrase.
    let args = [
        "--control-plane",
        "http://127.0.0.1:9",
        "--control-plane-key",
        &"ab".repeat(32),
        "list",
    ];
    let out = run(home.path(), "wrong", &args);
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    let out = run(home.path(), "correct horse battery", &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unreachable"),
        "the key opened, the call went out: {err}"
    );

    // The CA's key too, and a certificate for someone else's key is refused.
    let ca_home = tempdir();
    let out = run(ca_home.path(), "ca secret", &["ca", "init"]);
    assert!(out.status.success());
    let ca_key = std::fs::read_to_string(ca_home.path().join("ca/ca.key")).expect("ca key");
    assert!(ca_key.contains("pbkdf2-hmac-sha256"));
    let out = run(
        ca_home.path(),
        "ca secret",
        &["ca", "sign", "bob", &"cd".repeat(32)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = home.path().join("bob.cert");
    std::fs::write(&cert, &out.stdout).expect("cert");
    let out = run(
        home.path(),
        "correct horse battery",
        &["init", "--certificate", cert.to_str().expect("utf-8")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("for another key"));
}
