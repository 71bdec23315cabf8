//! The device's own boundaries: the config file's ownership, the local
//! socket's group, hostile socket input, requests beyond the config.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

fn world() -> World {
    World::new(&DeviceSettings::default(), None)
}

#[test]
fn a_config_file_others_could_change_is_refused() {
    let w = world();
    let cfg = &w.device.config;
    std::fs::set_permissions(cfg, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = w.device.run(&["status"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.contains("lets others change it"), "{err}");

    std::fs::set_permissions(cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::os::unix::fs::chown(cfg, Some(65534), None).expect("chown");
    let out = w.device.run(&["status"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.contains("owned by uid 65534, not root"), "{err}");
    std::os::unix::fs::chown(cfg, Some(0), None).expect("chown");

    let text = std::fs::read_to_string(cfg).expect("read");
    std::fs::write(cfg, format!("suddo = true\n{text}")).expect("write");
    let out = w.device.run(&["status"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.contains("suddo"), "unknown keys are named: {err}");
}

/// A throwaway Unix user, removed on drop.
struct TempUser(String);

impl TempUser {
    fn new(extra: &[&str]) -> TempUser {
        let name = format!(
            "st{:08x}",
            u32::from_le_bytes(random32()[..4].try_into().expect("4"))
        );
        let st = Command::new("useradd")
            .args(extra)
            .arg(&name)
            .status()
            .expect("useradd");
        assert!(st.success());
        TempUser(name)
    }

    fn agent(&self, w: &World, args: &[&str]) -> std::process::Output {
        Command::new("runuser")
            .args(["-u", &self.0, "--", &agent_bin(), "--config"])
            .arg(&w.device.config)
            .args(args)
            .output()
            .expect("runuser")
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).status();
    }
}

#[test]
fn the_local_socket_serves_root_and_the_support_group_only() {
    let w = world();
    let outsider = TempUser::new(&[]);
    for cmd in [&["status"][..], &["request"], &["stop", "--all"]] {
        let out = outsider.agent(&w, cmd);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success(),
            "{cmd:?} must fail for {}",
            outsider.0
        );
        assert!(
            err.contains("only root and the support group"),
            "{cmd:?}: {err}"
        );
    }

    // The device's web UI runs as a member of the group: status works.
    let member = TempUser::new(&["--groups", "support"]);
    let out = member.agent(&w, &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"daemon_running\": true"));
    // ...and so does the owner's record, without root.
    let (id, _) = w.device.request(&[]);
    let out = member.agent(&w, &["log"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("tunnel {id}")));
    let out = outsider.agent(&w, &["log"]);
    assert!(!out.status.success(), "the owner log is not world-readable");

    // A support session (in the group, made by the agent) cannot request a
    // new tunnel for itself: only the owner can.
    let fake_support = TempUser::new(&[
        "--gid",
        "support",
        "--comment",
        "support-tunnel 00000000 0000000000000000",
    ]);
    for cmd in [&["request"][..], &["stop", "--all"], &["repair"]] {
        let out = fake_support.agent(&w, cmd);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{cmd:?}");
        assert!(err.contains("only the owner can"), "{cmd:?}: {err}");
    }
    let out = fake_support.agent(&w, &["status"]);
    assert!(out.status.success(), "a support session may look");
}

#[test]
fn hostile_socket_input_gets_an_error_and_the_daemon_lives_on() {
    let w = world();
    let sock = w.device.socket();
    for bytes in [
        b"not json\n".to_vec(),
        b"{\"op\":\"format_disk\"}\n".to_vec(),
        b"{\"op\":\"status\",\"extra\":1}\n".to_vec(),
        vec![b'x'; 100_000],
        vec![0xff; 10],
    ] {
        let answer = raw_socket(&sock, &bytes);
        assert!(answer.contains("\"ok\":false"), "{answer}");
    }
    // A client that trickles its request is cut off, not waited for.
    let mut slow = std::os::unix::net::UnixStream::connect(&sock).expect("connects");
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    std::io::Write::write_all(&mut slow, b"{").expect("writes");
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut slow, &mut answer);
    assert!(answer.contains("took too long"), "{answer}");
    let out = w.device.run(&["status"]);
    assert!(out.status.success(), "the daemon still answers");
}

#[test]
fn requests_beyond_the_config_are_refused_with_the_reason() {
    let w = world();
    for (args, expect) in [
        (
            &["--ports", "8080"][..],
            "port 8080 is not in this device's allowlist",
        ),
        (
            &["--duration", "5h"],
            "is not allowed here (at most 1h 00m)",
        ),
        (&["--duration", "0"], "a duration of zero is not allowed"),
        (&["--ports", "22,x"], "'x' is not a port number"),
    ] {
        let mut all = vec!["request"];
        all.extend_from_slice(args);
        let out = w.device.run(&all);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}
