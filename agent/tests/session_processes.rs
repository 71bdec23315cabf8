//! DESIGN invariant 8 against a session that fights back: the owner's stop
//! ends every process of the support user, even one that forks and exits
//! in a loop, and what the session started as root through sudo.
//!
//! It has a test binary of its own: the fork-hopping processes it starts
//! load the machine (and fill the process table with dead processes until
//! they are reaped), which must not slow other real-parts tests down.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// The uid of `user`, from /etc/passwd.
fn uid_of(user: &str) -> u32 {
    std::fs::read_to_string("/etc/passwd")
        .expect("passwd")
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == user).then(|| f[2].parse().expect("uid"))
        })
        .unwrap_or_else(|| panic!("no user {user}"))
}

/// What /proc says about one process: live or not, its uids, its login uid.
struct Proc {
    pid: u32,
    zombie: bool,
    uids: Vec<u32>,
    login: Option<u32>,
    pgid: i32,
}

/// Every process, zombies included (a process that forks and exits in a
/// loop is mostly seen through the dead it leaves).
fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let uids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let login = std::fs::read_to_string(e.path().join("loginuid"))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        let pgid = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|t| {
                t.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse().ok())
            })
            .unwrap_or(0);
        out.push(Proc {
            pid,
            pgid,
            zombie: status.contains("Z (zombie)"),
            uids,
            login,
        });
    }
    out
}

/// Pids of processes (zombies included) of `uid` or of its sessions (login uid).
fn of_session(uid: u32) -> std::collections::BTreeSet<u32> {
    processes()
        .into_iter()
        .filter(|p| p.uids.contains(&uid) || p.login == Some(uid))
        .map(|p| p.pid)
        .collect()
}

/// Fails if anything of `uid`'s sessions lives: no live process now, and
/// no new process appears while watching (a survivor that forks in a loop
/// makes new ones all the time, even if no single scan catches it alive).
fn assert_nothing_of_the_session_runs(uid: u32, why: &str) {
    let live: Vec<u32> = processes()
        .into_iter()
        .filter(|p| !p.zombie && (p.uids.contains(&uid) || p.login == Some(uid)))
        .map(|p| p.pid)
        .collect();
    assert!(
        live.is_empty(),
        "{why}: processes of uid {uid} live: {live:?}"
    );
    let before = of_session(uid);
    std::thread::sleep(Duration::from_millis(500));
    let new: Vec<u32> = of_session(uid).difference(&before).copied().collect();
    assert!(
        new.is_empty(),
        "{why}: {} new processes of uid {uid} appeared, e.g. {:?}",
        new.len(),
        &new[..new.len().min(5)]
    );
}

/// Kills whatever a failed run of the fork test left, so a failure here
/// never leaves a fork bomb running on the machine.
struct HopperGuard {
    uid: u32,
    marker: String,
}

impl Drop for HopperGuard {
    fn drop(&mut self) {
        let uid = self.uid;
        let alive = || {
            processes()
                .iter()
                .any(|p| !p.zombie && (p.uids.contains(&uid) || p.login == Some(uid)))
        };
        for _ in 0..50 {
            if !alive() {
                return;
            }
            let _ = Command::new("setpriv")
                .args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    "kill",
                    "-KILL",
                    "-1",
                ])
                .status();
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", &self.marker])
                .status();
            for p in processes()
                .iter()
                .filter(|p| p.login == Some(uid) && p.pgid > 1)
            {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", p.pgid)])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

#[test]
fn a_fork_hopping_session_with_and_without_sudo_does_not_outlive_the_owners_stop() {
    let w = World::new(&DeviceSettings::default(), None);
    let s = w.connect(&[], &Terms::default());
    let user = s.user();
    let uid = uid_of(&user);
    let marker = format!("hopper-{}", s.id);
    let _guard = HopperGuard {
        uid,
        marker: marker.clone(),
    };
    // One process that forks and exits as fast as it can, as the support
    // user; and the same as root, started through sudo from the session.
    let hop = |name: &str| {
        format!("perl -e '$0=\"{name}\"; while(1){{ exit if fork; }}' </dev/null >/dev/null 2>&1 &")
    };
    let script = format!(
        "nohup {} sudo -n nohup {} echo started",
        hop(&format!("{marker}-user")),
        hop(&format!("{marker}-root"))
    );
    let out = ssh(&w.eng, &s, &w.sshd.host_key, &script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both run: each leaves new processes behind all the time.
    let hopping = |pick: &dyn Fn(&Proc) -> bool| {
        let pids = |ps: Vec<Proc>| -> std::collections::BTreeSet<u32> {
            ps.into_iter().filter(|p| pick(p)).map(|p| p.pid).collect()
        };
        let a = pids(processes());
        wait_for("new processes", Duration::from_secs(10), || {
            pids(processes()).difference(&a).next().is_some()
        });
    };
    hopping(&|p: &Proc| p.uids.first() == Some(&uid));
    hopping(&|p: &Proc| p.uids.first() == Some(&0) && p.login == Some(uid));

    let out = w.device.run(&["stop", &s.id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // When the stop returns, nothing of the session runs: no process of the
    // uid (by any of its uids), none started as root from its sessions.
    assert_nothing_of_the_session_runs(uid, "after the stop");
    assert_no_access_left(&user);

    // The next support user gets another uid.
    let s2 = w.connect(&[], &Terms::default());
    let uid2 = uid_of(&s2.user());
    assert_ne!(uid2, uid, "a uid is not handed out again");
    assert!(w.device.run(&["stop", "--all"]).status.success());
}
