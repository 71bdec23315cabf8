//! The device's own boundaries: the config file's ownership, the local
//! socket's group, hostile socket input, requests beyond the config.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

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

/// The agent binary, copied where every user can run it: the checkout (and
/// its target directory) may be one only root can enter (/root, mktemp -d).
fn reachable_agent(w: &World) -> std::path::PathBuf {
    let copy = w.device.dir.path().join("support-agent");
    if !copy.exists() {
        std::fs::copy(agent_bin(), &copy).expect("copy the agent");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    copy
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
            .args(["-u", &self.0, "--"])
            .arg(reachable_agent(w))
            .arg("--config")
            .arg(&w.device.config)
            .args(args)
            .output()
            .expect("runuser")
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        // Whatever still runs as it (a helper a test started) goes first:
        // userdel refuses a user with processes.
        for _ in 0..100 {
            let _ = Command::new("pkill")
                .args(["-KILL", "-u", &self.0])
                .status();
            let alive = Command::new("pgrep")
                .args(["-u", &self.0])
                .stdout(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !alive {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = Command::new("userdel")
            .args(["--force", "--remove", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
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
    let out = member.agent(&w, &["list", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id.to_string()));

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

#[test]
fn support_sessions_cannot_starve_the_owners_socket() {
    let w = world();
    let fake_support = TempUser::new(&[
        "--gid",
        "support",
        "--comment",
        "support-tunnel 00000000 0000000000000000",
    ]);
    // A support session holds a dozen idle connections to the socket.
    let mut holder = Command::new("runuser")
        .args(["-u", &fake_support.0, "--", "python3", "-c"])
        .arg(
            "import socket, sys, time\n\
             s = [socket.socket(socket.AF_UNIX) for _ in range(12)]\n\
             [c.connect(sys.argv[1]) for c in s]\n\
             print('ready', flush=True)\n\
             time.sleep(30)",
        )
        .arg(w.device.socket())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("ready");
    assert_eq!(line.trim(), "ready");
    // The owner's web UI (a group member) is still served at once.
    let member = TempUser::new(&["--groups", "support"]);
    let out = member.agent(&w, &["status", "--json"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"daemon_running\": true"));
}

#[test]
fn support_sessions_cannot_read_the_owners_records() {
    let w = world();
    let s = w.connect(&[], &Terms::default());
    let agent = reachable_agent(&w);
    let state = w.device.state_dir();
    for cmd in [
        format!("cat {}/log/{}.log", state.display(), s.id),
        format!("cat {}/status.json", state.display()),
        format!("ls {}/log", state.display()),
        format!(
            "{} --config {} log {}",
            agent.display(),
            w.device.config.display(),
            s.id
        ),
        format!(
            "{} --config {} list",
            agent.display(),
            w.device.config.display()
        ),
    ] {
        let out = ssh(&w.eng, &s, &w.sshd.host_key, &cmd);
        assert!(!out.status.success(), "{cmd} must fail for a support user");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("approved"), "{cmd}: {text}");
    }
    // Its own tunnel's status, and nothing else, is what it may see.
    let out = ssh(
        &w.eng,
        &s,
        &w.sshd.host_key,
        &format!(
            "{} --config {} status --json",
            agent.display(),
            w.device.config.display()
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let tunnels = v["tunnels"].as_array().expect("tunnels");
    assert_eq!(tunnels.len(), 1, "{v}");
    assert_eq!(tunnels[0]["id"], s.id.to_string());
    assert!(w.device.run(&["stop", "--all"]).status.success());
}

/// A sudoers drop-in, removed on drop.
struct SudoersRule(std::path::PathBuf);

impl Drop for SudoersRule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_sudoers_rule_for_the_whole_group_stops_support_users_being_made() {
    // A group of this test's own, so the rule grants nobody real anything.
    let group = format!(
        "stg{:08x}",
        u32::from_le_bytes(random32()[..4].try_into().expect("4"))
    );
    let w = World::new(
        &DeviceSettings {
            extra: format!("group = \"{group}\"\n"),
            ..DeviceSettings::default()
        },
        None,
    );
    let (id, code) = w.device.request(&["--duration", "30m"]);
    // AmpliPi installed such a rule for the original (099_support-nopasswd).
    let rule = SudoersRule(format!("/etc/sudoers.d/zz-{group}").into());
    std::fs::write(&rule.0, format!("%{group} ALL=(ALL) NOPASSWD: ALL\n")).expect("write");
    let _s = approve(&w.cp, &w.eng, &code, &Terms::default());
    wait_for("the tunnel to fail", Duration::from_secs(30), || {
        String::from_utf8_lossy(&w.device.run(&["status", "--json"]).stdout)
            .contains("\"end_reason\": \"failed\"")
    });
    let log = String::from_utf8_lossy(&w.device.run(&["log", &id.to_string()]).stdout).to_string();
    assert!(log.contains("grants the whole"), "{log}");
    assert!(!user_exists(&id.support_user()), "no user was made");

    let out = w.device.run(&["request"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("zz-{group}: %{group} ALL=(ALL) NOPASSWD: ALL")),
        "{err}"
    );
    assert!(err.contains("migrate-from-original"), "{err}");
}
