//! The device lifecycle on real parts: request, approve, SSH with sudo,
//! stop, expiry, crash and resume, a wrong wall clock.

mod common;

use std::time::{Duration, Instant};

use common::*;
use support_protocol::state::TunnelState;

#[test]
fn request_approve_ssh_with_sudo_then_owner_stop_leaves_nothing() {
    let w = World::new(&DeviceSettings::default(), None);
    let (id, code) = w
        .device
        .request(&["--duration", "30m", "--note", "no sound"]);
    let mut s = approve(&w.cp, &w.eng, &code, &Terms::default());
    w.wait_connected(&s);
    s.connect();
    let user = s.user();

    // The access the agent made: a user in the support group, a restricted
    // key that OpenSSH expires on its own, a sudoers drop-in.
    assert!(user_exists(&user));
    let keys = std::fs::read_to_string(format!("/home/{user}/.ssh/authorized_keys")).expect("keys");
    assert!(
        keys.starts_with("restrict,pty,from=\"127.0.0.1,::1\",expiry-time=\""),
        "{keys}"
    );
    let sudoers = std::fs::read_to_string(format!("/etc/sudoers.d/support-tunnel-{user}"))
        .expect("sudoers drop-in");
    assert!(
        sudoers.contains(&format!("{user} ALL=(ALL:ALL) NOTAFTER=")),
        "sudo itself expires the grant: {sudoers}"
    );

    let out = ssh(
        &w.eng,
        &s,
        &w.sshd.host_key,
        "sudo -n true && id -un && id -Gn",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ssh: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with(&format!("{user}\n")), "{text}");
    assert!(text.contains("support"), "{text}");

    // A session that stays open while the owner presses stop.
    let mut held = ssh_command(&w.eng, &s, &w.sshd.host_key, "sleep 120", 15);
    let mut session = held.command.spawn().expect("ssh");
    wait_for("the held session's sleep", Duration::from_secs(15), || {
        std::process::Command::new("pgrep")
            .args(["-u", &user, "sleep"])
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });

    let stopped = Instant::now();
    let out = w.device.run(&["stop", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let returned = stopped.elapsed();
    assert!(
        returned < Duration::from_secs(2),
        "the owner's stop takes effect within 2 s (took {returned:?})"
    );
    assert_no_access_left(&user);
    // The held session is cut (its processes were killed with the user).
    wait_for(
        "the held SSH session to end",
        Duration::from_secs(2),
        || session.try_wait().ok().flatten().is_some(),
    );
    wait_for(
        "the control plane to record the stop",
        Duration::from_secs(20),
        || w.cp.state(&w.eng.cp_key, id) == TunnelState::Stopped,
    );
    assert!(!ssh_with_timeout(&w.eng, &s, &w.sshd.host_key, "true", 3)
        .status
        .success());

    // The owner's record: who approved, which key, the connections.
    let log = String::from_utf8_lossy(&w.device.run(&["log", &id.to_string()]).stdout).to_string();
    assert!(
        log.contains("approved (#1) by alice (certificate 7)"),
        "{log}"
    );
    assert!(log.contains("SHA256:"), "{log}");
    assert!(log.contains("connection 1 to port 22 closed"), "{log}");
    assert!(log.contains("ended (stopped by the owner)"), "{log}");

    // The code went to the terminal only: not into any file or the daemon's output.
    let files = w.device.all_files_text();
    assert!(!files.contains(&code), "the code is in a file");
    assert!(
        !files.contains(&code.replace('-', "")),
        "the code is in a file"
    );
    assert!(!w.device.daemon_stderr().contains(&code));
    // Secrets are wiped: no tunnel record remains once the control plane heard.
    wait_for("the record to be wiped", Duration::from_secs(10), || {
        std::fs::read_dir(w.device.state_dir().join("tunnels"))
            .map(|d| d.count() == 0)
            .unwrap_or(false)
    });
}

#[test]
fn expiry_ends_the_tunnel_on_the_device_and_the_control_plane() {
    let w = World::new(&DeviceSettings::default(), None);
    // Long enough to look at the access before it expires, on a loaded
    // machine.
    let terms = Terms {
        duration_secs: 12,
        ..Terms::default()
    };
    let s = w.connect(&[], &terms);
    let user = s.user();
    assert!(user_exists(&user));
    let keys = std::fs::read_to_string(format!("/home/{user}/.ssh/authorized_keys")).expect("keys");
    assert!(
        keys.contains("expiry-time=\""),
        "OpenSSH expires the key even without the agent"
    );
    wait_for(
        "expiry to remove the access",
        Duration::from_secs(30),
        || !user_exists(&user),
    );
    assert_no_access_left(&user);
    wait_for(
        "the control plane to record expiry",
        Duration::from_secs(20),
        || w.cp.state(&w.eng.cp_key, s.id) == TunnelState::Expired,
    );
    let log = String::from_utf8_lossy(&w.device.run(&["log"]).stdout).to_string();
    assert!(log.contains("ended (expired)"), "{log}");
}

#[test]
fn an_admin_stop_seen_on_the_long_poll_tears_down() {
    let w = World::new(&DeviceSettings::default(), None);
    let s = w.connect(&[], &Terms::default());
    let user = s.user();
    assert!(ssh(&w.eng, &s, &w.sshd.host_key, "true").status.success());
    stop_at_cp(&w.cp, &w.eng, s.id);
    wait_for(
        "the admin's stop to reach the device",
        Duration::from_secs(10),
        || !user_exists(&user),
    );
    assert_no_access_left(&user);
    // The user goes before the end is logged (hooks run in between): wait
    // for the log line itself.
    wait_for(
        "the owner log to record the end",
        Duration::from_secs(10),
        || {
            String::from_utf8_lossy(&w.device.run(&["log"]).stdout)
                .contains("ended (stopped by support)")
        },
    );
}

#[test]
fn kill_9_then_restart_resumes_a_live_tunnel() {
    let mut w = World::new(&DeviceSettings::default(), None);
    let s = w.connect(&[], &Terms::default());
    let user = s.user();
    assert!(ssh(&w.eng, &s, &w.sshd.host_key, "true").status.success());
    w.device.crash();
    w.device.start_daemon(None);
    // Same user, same key; the peer comes back and the admin's session works again.
    let out = ssh(&w.eng, &s, &w.sshd.host_key, "sudo -n true && id -un");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user);
    let status = String::from_utf8_lossy(&w.device.run(&["status", "--json"]).stdout).to_string();
    assert!(status.contains("\"phase\": \"connected\""), "{status}");
    let log = String::from_utf8_lossy(&w.device.run(&["log"]).stdout).to_string();
    assert!(log.contains("agent restarted; tunnel resumed"), "{log}");
    let out = w.device.run(&["stop", "--all"]);
    assert!(out.status.success());
    assert_no_access_left(&user);
}

#[test]
fn kill_9_then_a_stop_while_down_is_repaired_at_start() {
    let mut w = World::new(&DeviceSettings::default(), None);
    let s = w.connect(&[], &Terms::default());
    let user = s.user();
    w.device.crash();
    // While the agent is down, support stops the tunnel.
    stop_at_cp(&w.cp, &w.eng, s.id);
    assert!(user_exists(&user), "a dead agent removes nothing");
    w.device.start_daemon(None);
    wait_for(
        "the restarted agent to tear down",
        Duration::from_secs(15),
        || !user_exists(&user),
    );
    assert_no_access_left(&user);
}

#[test]
fn start_up_repair_removes_what_no_record_explains() {
    let mut w = World::new(&DeviceSettings::default(), None);
    let s = w.connect(&[], &Terms::default());
    let user = s.user();
    // Validation copies of sudoers drop-ins: one this agent's crash left
    // (removed at the start), one another agent on the machine is checking
    // right now (left alone: removing it failed that agent's visudo check).
    let sudoers = format!("/etc/sudoers.d/support-tunnel-{user}");
    let ours = std::fs::read_to_string(&sudoers).expect("sudoers drop-in");
    let left_over = format!("/etc/sudoers.d/.support-tunnel-{user}.check");
    std::fs::write(&left_over, &ours).expect("writes");
    let theirs = "/etc/sudoers.d/.support-tunnel-support-00000000000000aa.check";
    std::fs::write(
        theirs,
        "# support-tunnel another-agent 00000000000000aa: removed when the tunnel ends\n",
    )
    .expect("writes");
    w.device.crash();
    // The worst case: the record itself is lost (say, a corrupted disk).
    for e in std::fs::read_dir(w.device.state_dir().join("tunnels")).expect("dir") {
        std::fs::remove_file(e.expect("entry").path()).expect("rm");
    }
    assert!(user_exists(&user));
    w.device.start_daemon(None);
    assert_no_access_left(&user);
    assert!(
        !std::path::Path::new(&left_over).exists(),
        "this agent's leftover is removed"
    );
    assert!(
        std::path::Path::new(theirs).exists(),
        "another agent's copy is left alone"
    );
    std::fs::remove_file(theirs).expect("rm");
    // Repair is idempotent and says so.
    let out = w.device.run(&["repair"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Nothing to repair"));
}

#[test]
fn a_wrong_wall_clock_changes_nothing() {
    // The device's clock (agent and sshd alike) is years off, as on a Pi
    // without RTC; certificates and expiry do not depend on it.
    for offset in ["-4y", "+3y"] {
        let w = World::new(&DeviceSettings::default(), Some(offset));
        let s = w.connect(&[], &Terms::default());
        // sshd checks the key's expiry-time with the same (wrong) clock.
        let out = ssh(&w.eng, &s, &w.sshd.host_key, "echo ok");
        assert!(
            out.status.success(),
            "clock {offset}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // sudo's NOTAFTER follows the device's clock too. (sudo itself runs
        // with the real clock here: faketime cannot reach a setuid program,
        // so this checks the written time instead of running sudo.)
        let sudoers =
            std::fs::read_to_string(format!("/etc/sudoers.d/support-tunnel-{}", s.user()))
                .expect("sudoers");
        let keys = std::fs::read_to_string(format!("/home/{}/.ssh/authorized_keys", s.user()))
            .expect("keys");
        let year = |t: &str, key: &str| -> i64 {
            t.split(key).nth(1).expect("a time")[..4]
                .parse()
                .expect("year")
        };
        let real_year: i64 = 1970 + (now() / (365 * 86400 + 86400 / 4)) as i64;
        let shift: i64 = offset[..offset.len() - 1].parse().expect("years");
        // (faketime's "y" is 365 days: near new year the year may be off by one.)
        let near = |y: i64| (y - (real_year + shift)).abs() <= 1;
        assert!(near(year(&sudoers, "NOTAFTER=")), "{sudoers}");
        assert!(near(year(&keys, "expiry-time=\"")), "{keys}");
        // The agent really ran with the wrong clock: its log says so.
        let log = std::fs::read_to_string(w.device.state_dir().join(format!("log/{}.log", s.id)))
            .expect("log");
        let at: u64 = log
            .split("\"at\":")
            .nth(1)
            .and_then(|t| t.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("a time");
        assert!(now().abs_diff(at) > 2 * 365 * 86400, "clock {offset}: {at}");
        let out = w.device.run(&["stop", "--all"]);
        assert!(out.status.success());
        assert_no_access_left(&s.user());
    }
}

#[test]
fn without_sudo_the_support_user_is_not_root() {
    let settings = DeviceSettings {
        sudo: false,
        ..DeviceSettings::default()
    };
    let w = World::new(&settings, None);
    let s = w.connect(&[], &Terms::default());
    let user = s.user();
    assert!(!std::path::Path::new(&format!("/etc/sudoers.d/support-tunnel-{user}")).exists());
    let out = ssh(&w.eng, &s, &w.sshd.host_key, "id -un; sudo -n true");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user);
    // Refused by sudo itself (it wants a password it will never get), not
    // failed for some other reason.
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "sudo must fail: {err}");
    assert!(err.contains("sudo: a password is required"), "{err}");
    // Without root the session cannot make its access outlive the tunnel:
    // the home and ~/.ssh are root's; only ~/work is the user's.
    for attempt in [
        "mv ~/.ssh ~/old",
        "ln -s /root/.ssh ~/x",
        "echo ssh-ed25519 AAAA >> ~/.ssh/authorized_keys",
    ] {
        let out = ssh(&w.eng, &s, &w.sshd.host_key, attempt);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{attempt} must fail");
        assert!(err.contains("Permission denied"), "{attempt}: {err}");
    }
    let out = ssh(
        &w.eng,
        &s,
        &w.sshd.host_key,
        "touch ~/work/notes && echo ok",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn hooks_get_the_tunnel_values_as_arguments_and_environment() {
    let dir = tempdir();
    let out = dir.path().join("hook.out");
    let hook = dir.path().join("hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$@|$SUPPORT_TUNNEL_ID|$SUPPORT_TUNNEL_ADDRESS|$SUPPORT_TUNNEL_NETWORK|$SUPPORT_TUNNEL_USER\" >> {}\n",
            out.display()
        ),
    )
    .expect("hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let h = hook.display();
    let settings = DeviceSettings {
        extra: format!(
            "[hooks]\npre_up = \"{h}\"\npost_up = \"{h}\"\npre_down = \"{h}\"\npost_down = \"{h}\""
        ),
        ..DeviceSettings::default()
    };
    let w = World::new(&settings, None);
    let s = w.connect(&[], &Terms::default());
    assert!(w.device.run(&["stop", "--all"]).status.success());
    // The stop answers once the access is gone; the down hooks follow.
    wait_for("the post-down hook", Duration::from_secs(20), || {
        std::fs::read_to_string(&out)
            .map(|t| t.contains("post-down"))
            .unwrap_or(false)
    });
    let text = std::fs::read_to_string(&out).expect("hooks ran");
    let lines: Vec<&str> = text.lines().collect();
    let id = s.id.to_string();
    let user = s.user();
    for (line, stage) in lines
        .iter()
        .zip(["pre-up", "post-up", "pre-down", "post-down"])
    {
        assert_eq!(
            *line,
            format!("{stage} {id} support-{id} 10.77.0.2 10.77.0.0/28 {user}|{id}|10.77.0.2|10.77.0.0/28|{user}")
        );
    }
    assert_eq!(lines.len(), 4, "{text}");
}

#[test]
fn request_wait_runs_the_whole_lifecycle_in_the_foreground() {
    use std::io::BufRead;
    require_root_and_sshd();
    let sshd = Sshd::start(None);
    let cp = ControlPlane::start(&[]);
    let eng = Engineer::new(&cp);
    let device = Device::new(
        &cp.url,
        &cp.public,
        &eng.ca_public(),
        &sshd,
        &DeviceSettings::default(),
    );
    let out = device.run(&["request"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use request --wait"));

    let mut child = device
        .command(None)
        .args(["request", "--wait"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let code = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a code line");
        if support_protocol::one_time_code::OneTimeCode::parse(&line).is_ok() {
            break line;
        }
    };
    let mut s = approve(&cp, &eng, &code, &Terms::default());
    wait_connected(&cp, &eng, &s, &sshd.host_key);
    s.connect();
    assert!(ssh(&eng, &s, &sshd.host_key, "sudo -n true")
        .status
        .success());
    let saw: Vec<String> = rx.try_iter().collect();
    assert!(
        saw.iter()
            .any(|l| l.contains("connected: support (alice) can log in as")),
        "{saw:?}"
    );
    // Ctrl-C ends the tunnel, not just the process.
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    wait_for("request --wait to exit", Duration::from_secs(10), || {
        child.try_wait().ok().flatten().is_some()
    });
    assert_no_access_left(&s.user());
    wait_for("the control plane to hear", Duration::from_secs(10), || {
        cp.state(&eng.cp_key, s.id) == TunnelState::Stopped
    });
}

#[test]
fn an_approval_from_the_future_cannot_lock_other_certificates_out() {
    let w = World::new(&DeviceSettings::default(), None);
    // Alice's laptop clock is 60 days ahead (inside her 90-day certificate).
    let terms = Terms {
        issued_at: Some(now() + 60 * 86400),
        ..Terms::default()
    };
    let a = w.connect(&[], &terms);
    assert!(w.device.run(&["stop", "--all"]).status.success());
    assert_no_access_left(&a.user());
    // Bob's certificate ends in 30 days: still good, and the device takes it.
    let bob = w.eng.colleague(&w.cp, "bob", 30);
    let (_, code) = w.device.request(&[]);
    let mut s = approve(&w.cp, &bob, &code, &Terms::default());
    wait_connected(&w.cp, &bob, &s, &w.sshd.host_key);
    s.connect();
    assert!(ssh(&bob, &s, &w.sshd.host_key, "true").status.success());
}

#[test]
fn a_request_stays_approvable_for_the_devices_pending_window() {
    let settings = DeviceSettings {
        extra: "pending_window = \"3d\"".into(),
        ..DeviceSettings::default()
    };
    let w = World::new(&settings, None);
    let before = now();
    let (id, code) = w.device.request(&[]);
    let summary = w.cp.show(&w.eng.cp_key, id).summary;
    assert_eq!(
        summary.expires_at - summary.created_at,
        3 * 86400,
        "the control plane keeps it as long as the device asked"
    );
    let status = w.device.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let stale_at = v["tunnels"][0]["stale_at"]
        .as_u64()
        .expect("stale_at shown");
    assert!(stale_at.abs_diff(before + 3 * 86400) <= 5, "{v}");
    let text = String::from_utf8_lossy(&w.device.run(&["status"]).stdout).to_string();
    assert!(text.contains("goes stale at"), "{text}");
    // Still approvable later: approve now, and it connects.
    let s = approve(&w.cp, &w.eng, &code, &Terms::default());
    w.wait_connected(&s);
}
