//! DESIGN invariant 8 under pressure, on real parts: the owner's stop never
//! waits for a hook, is never undone by a crash, and the hooks run on every
//! path that ends a tunnel. (A session that fights back with fork-hopping
//! processes is `session_processes.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use support_protocol::state::TunnelState;

/// A hook that appends `STAGE ID` to `out`; at the first pre-down it marks
/// `started` and then blocks for `block_secs`.
fn blocking_hook(dir: &Path, block_secs: u32) -> (PathBuf, PathBuf, PathBuf) {
    let out = dir.join("hook.out");
    let started = dir.join("pre-down.started");
    let hook = dir.join("hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1 $2\" >> {out}\nif [ \"$1\" = pre-down ] && [ ! -e {started} ]; then touch {started}; sleep {block_secs}; fi\n",
            out = out.display(),
            started = started.display()
        ),
    )
    .expect("hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (hook, out, started)
}

fn hook_settings(hook: &Path) -> DeviceSettings {
    let h = hook.display();
    DeviceSettings {
        extra: format!(
            "[hooks]\npre_up = \"{h}\"\npost_up = \"{h}\"\npre_down = \"{h}\"\npost_down = \"{h}\""
        ),
        ..DeviceSettings::default()
    }
}

fn hook_lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn wait_for_log(w: &World, id: &str, needle: &str) {
    wait_for(
        &format!("the owner log to say {needle:?}"),
        Duration::from_secs(20),
        || String::from_utf8_lossy(&w.device.run(&["log", id]).stdout).contains(needle),
    );
}

#[test]
fn the_owners_stop_never_waits_for_a_hook() {
    let dir = tempdir();
    let (hook, out, _) = blocking_hook(dir.path(), 20);
    let w = World::new(&hook_settings(&hook), None);
    let s = w.connect(&[], &Terms::default());
    let user = s.user();
    let t = Instant::now();
    let stop = w.device.run(&["stop", "--all"]);
    let took = t.elapsed();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(
        took < Duration::from_secs(2),
        "the stop answered in {took:?}, behind a 20 s pre-down hook"
    );
    assert_no_access_left(&user);
    // The hooks still run, after the access is gone, in their order.
    wait_for("the post-down hook", Duration::from_secs(30), || {
        hook_lines(&out).iter().any(|l| l.starts_with("post-down"))
    });
    let stages: Vec<String> = hook_lines(&out)
        .iter()
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(stages, ["pre-up", "post-up", "pre-down", "post-down"]);
    wait_for_log(&w, &s.id.to_string(), "stopped by the owner");
}

#[test]
fn a_crash_during_the_teardown_never_undoes_the_owners_stop() {
    let dir = tempdir();
    let (hook, out, started) = blocking_hook(dir.path(), 60);
    let mut w = World::new(&hook_settings(&hook), None);
    let s = w.connect(&[], &Terms::default());
    let user = s.user();
    assert!(w.device.run(&["stop", "--all"]).status.success());
    // The agent dies (power loss) while the teardown's pre-down hook runs.
    wait_for(
        "the pre-down hook to start",
        Duration::from_secs(10),
        || started.exists(),
    );
    w.device.crash();
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", &hook.display().to_string()])
        .status();
    w.device.start_daemon(None);
    // The restart finishes the end: no user again, no tunnel resumed, the
    // hooks complete, the control plane hears.
    wait_for("the post-down hook", Duration::from_secs(20), || {
        hook_lines(&out).iter().any(|l| l.starts_with("post-down"))
    });
    assert_no_access_left(&user);
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.cp.state(&w.eng.cp_key, s.id) != TunnelState::Stopped {
        assert!(
            Instant::now() < deadline,
            "the control plane never heard of the stop: it says {:?}; the agent said:\n{}\nits log:\n{}\nrecords: {:?}",
            w.cp.state(&w.eng.cp_key, s.id),
            w.device.daemon_stderr(),
            String::from_utf8_lossy(&w.device.run(&["log", &s.id.to_string()]).stdout),
            std::fs::read_dir(w.device.state_dir().join("tunnels"))
                .map(|d| d
                    .flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect::<Vec<_>>())
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_log(&w, &s.id.to_string(), "ended (stopped by the owner)");
    let log = std::fs::read_to_string(w.device.state_dir().join(format!("log/{}.log", s.id)))
        .expect("log");
    assert!(!log.contains("resumed"), "{log}");
    assert!(
        !ssh_with_timeout(&w.eng, &s, &w.sshd.host_key, "true", 3)
            .status
            .success(),
        "no access came back"
    );
}

#[test]
fn down_hooks_run_on_an_offline_stop_and_on_a_repair_after_a_crash() {
    let dir = tempdir();
    let (hook, out, started) = blocking_hook(dir.path(), 0);
    std::fs::write(&started, "").expect("no blocking here");
    let mut w = World::new(&hook_settings(&hook), None);
    let ran = |id: &str, stage: &str| {
        hook_lines(&out)
            .iter()
            .any(|l| *l == format!("{stage} {id}"))
    };

    // The daemon is down; the owner stops with the CLI alone.
    let a = w.connect(&[], &Terms::default());
    w.device.crash();
    let stop = w.device.run(&["stop", "--all"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_no_access_left(&a.user());
    let id = a.id.to_string();
    wait_for(
        "down hooks of the offline stop",
        Duration::from_secs(20),
        || ran(&id, "pre-down") && ran(&id, "post-down"),
    );

    // Support stops while the agent is down; the restart repairs.
    w.device.start_daemon(None);
    let b = w.connect(&[], &Terms::default());
    w.device.crash();
    stop_at_cp(&w.cp, &w.eng, b.id);
    w.device.start_daemon(None);
    let id = b.id.to_string();
    wait_for("down hooks of the repair", Duration::from_secs(20), || {
        ran(&id, "pre-down") && ran(&id, "post-down")
    });
    assert_no_access_left(&b.user());
}

#[test]
fn a_failing_pre_up_hook_aborts_or_continues_as_configured() {
    let dir = tempdir();
    let hook = dir.path().join("fail");
    std::fs::write(&hook, "#!/bin/sh\nexit 3\n").expect("hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let h = hook.display();

    // continue: logged for the owner, and the tunnel comes up (the original's way).
    let w = World::new(
        &DeviceSettings {
            extra: format!("pre_up_failure = \"continue\"\n[hooks]\npre_up = \"{h}\""),
            ..DeviceSettings::default()
        },
        None,
    );
    let s = w.connect(&[], &Terms::default());
    assert!(ssh(&w.eng, &s, &w.sshd.host_key, "true").status.success());
    wait_for_log(&w, &s.id.to_string(), "pre-up hook");
    assert!(w.device.run(&["stop", "--all"]).status.success());
    drop(w);

    // abort (the default): the tunnel fails and no access is left.
    let w = World::new(
        &DeviceSettings {
            extra: format!("[hooks]\npre_up = \"{h}\""),
            ..DeviceSettings::default()
        },
        None,
    );
    let (_, code) = w.device.request(&[]);
    let s = approve(&w.cp, &w.eng, &code, &Terms::default());
    wait_for(
        "the control plane to hear the failure",
        Duration::from_secs(20),
        || w.cp.state(&w.eng.cp_key, s.id) == TunnelState::Failed,
    );
    assert_no_access_left(&s.user());
    wait_for_log(&w, &s.id.to_string(), "failed: pre-up hook");
}
