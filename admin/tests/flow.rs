//! support-admin with the local provider against the real control plane, a
//! real agent and Debian's OpenSSH: approve, exec, forward + ssh-config with
//! the system ssh, connect under a pseudo-terminal, stop, gc.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::tmux::Tmux;
use common::*;

#[test]
fn approve_exec_forward_connect_stop_and_gc_leave_nothing() {
    let lab = Lab::new(&DeviceSettings::default());
    let (id, _code) = lab.approve(&["--note", "no sound"], &[]);
    let user = format!("support-{id}");
    assert_eq!(relays_for(&id), 1, "the local hub runs");

    // exec: stdout and stderr apart, the remote exit code.
    let out = lab.eng.run(&[
        "exec",
        &id,
        "--",
        "hostname; id -un; sudo -n true && echo root-ok; echo to-stderr >&2; exit 3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("{user}\nroot-ok\n")), "{stdout}");
    assert!(!stdout.contains("to-stderr"));
    assert!(stderr.contains("to-stderr"), "{stderr}");
    // Arguments keep their boundaries.
    let out = lab
        .eng
        .run(&["exec", &id, "--", "printf", "%s|", "a b", "c"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|c|");

    // forward + ssh-config: the system ssh logs in without prompts.
    let port = free_tcp_port();
    let mut fwd = Command::new(ADMIN)
        .arg("--home")
        .arg(lab.eng.home.path())
        .args(["forward", &id, &format!("{port}:22")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("forward");
    let mut line = String::new();
    BufReader::new(fwd.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    assert_eq!(line.trim(), format!("127.0.0.1:{port}"));
    let cfg = lab.home_file(
        "ssh_config_forward",
        &ok(&lab
            .eng
            .run(&["ssh-config", &id, "--port", &port.to_string()])),
    );
    let out = Command::new("ssh")
        .args([
            "-F",
            &cfg,
            "-o",
            "BatchMode=yes",
            &format!("support-{id}"),
            "echo via-forward; id -un",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("via-forward\n{user}\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = fwd.kill();
    let _ = fwd.wait();

    // The default ssh-config goes through `support-admin proxy`.
    let cfg = lab.home_file("ssh_config_proxy", &ok(&lab.eng.run(&["ssh-config", &id])));
    let out = Command::new("ssh")
        .args([
            "-F",
            &cfg,
            "-o",
            "BatchMode=yes",
            &format!("support-{id}"),
            "echo via-proxy",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "via-proxy\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // connect: an interactive shell in a real terminal (tmux), with a resize.
    let tmux = Tmux::new(&format!(
        "SUPPORT_ADMIN_PASSPHRASE= {ADMIN} --home {} connect {id}; echo EXIT=$?; sleep 60",
        lab.eng.home.path().display()
    ));
    tmux.wait_for_text("applicable law", Duration::from_secs(30));
    tmux.keys("echo hello-$((40+2)); stty size");
    tmux.wait_for_text("hello-42", Duration::from_secs(10));
    tmux.wait_for_text("30 100", Duration::from_secs(10));
    tmux.resize(120, 40);
    tmux.keys("stty size; exit 7");
    tmux.wait_for_text("40 120", Duration::from_secs(10));
    tmux.wait_for_text("EXIT=7", Duration::from_secs(15));

    // stop: the device tears down, the hub goes, local secrets are wiped.
    let out = lab.eng.run(&["stop", &id]);
    ok(&out);
    wait_for(
        "the device to remove the access",
        Duration::from_secs(15),
        || !user_exists(&user),
    );
    assert_no_access_left(&user);
    assert_eq!(relays_for(&id), 0, "the hub is gone");
    assert_eq!(
        std::fs::read_dir(lab.eng.records_dir())
            .expect("dir")
            .count(),
        0,
        "no secret of the tunnel is left on the engineer's machine"
    );
    let out = lab.eng.run(&["exec", &id, "--", "true"]);
    assert!(!out.status.success());

    // gc finds a hub no record knows (say, from a crashed approve) by its
    // label, among this engineer's relays (their environment says whose).
    let owner = lab.eng.hub_owner();
    let mut orphan = relay_owned_by(&owner, &id);
    wait_for("the orphan relay", Duration::from_secs(5), || {
        relays_for(&id) == 1
    });
    // Another engineer's (or test's) relay on the same machine is not ours to collect.
    let mut foreign = relay_owned_by("someone-else", &id);
    wait_for("both relays", Duration::from_secs(5), || {
        relays_for(&id) == 2
    });
    // A record that cannot be read (damaged, or from another version) of a
    // tunnel that has ended is wiped all the same.
    let damaged = lab.eng.records_dir().join("00c0ffee00c0ffee.json");
    std::fs::write(&damaged, b"{\"provider\": \"elsewhere\"}").expect("writes");
    let out = lab.eng.run(&["gc"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ok(&out);
    assert!(err.contains("orphan hub"), "{err}");
    assert!(
        err.contains("tunnel 00c0ffee00c0ffee has ended and the record of 00c0ffee00c0ffee is damaged: its secrets wiped"),
        "{err}"
    );
    assert!(!damaged.exists(), "the damaged record is wiped");
    wait_for("gc to end the orphan", Duration::from_secs(5), || {
        orphan.try_wait().ok().flatten().is_some()
    });
    assert!(
        foreign.try_wait().expect("wait").is_none(),
        "gc left the foreign relay alone"
    );
    let _ = foreign.kill();
    let _ = foreign.wait();
    let out = lab.eng.run(&["gc"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to collect"));

    // list, show and audit see it all.
    let list = ok(&lab.eng.run(&["list", "--json"]));
    assert!(list.contains(&id) && list.contains("\"stopped\""), "{list}");
    let audit = ok(&lab.eng.run(&["audit", &id]));
    for what in [
        "requested",
        "approved (#1)",
        "connected (#1)",
        "stopped by support",
    ] {
        assert!(audit.contains(what), "{what}: {audit}");
    }
}

/// A relay for `tunnel` (with throwaway keys) as `owner`'s local provider would start it.
fn relay_owned_by(owner: &str, tunnel: &str) -> std::process::Child {
    Command::new(sibling_bin("support-relay"))
        .env("SUPPORT_HUB_OWNER", owner)
        .args([
            "--device-key",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "--admin-key",
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            "--lifetime",
            "600",
            "--listen",
            "127.0.0.1:0",
            "--tunnel",
            tunnel,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay")
}

#[allow(dead_code)]
fn wait_output(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "timed out: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
