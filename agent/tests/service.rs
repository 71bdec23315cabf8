//! The agent as systemd and journald see it, and its command line's
//! grammar: READY and STATUS over a real `NOTIFY_SOCKET`, the watchdog's
//! ping, `<N>` priorities on a journal stream, strict arguments, exit codes.

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Starts the daemon with `env` (what systemd would set) and `args`, its
/// stderr to `stderr`.
fn spawn_daemon(device: &mut Device, env: &[(&str, String)], args: &[&str], stderr: &Path) {
    let err = std::fs::File::create(stderr).expect("stderr file");
    let mut cmd = device.command(None);
    cmd.args(args)
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    device.daemon = Some(cmd.spawn().expect("daemon starts"));
}

/// Receives notifications until one satisfies `want` (each is returned in order).
fn until(sock: &UnixDatagram, what: &str, want: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no notification {what} in 30 s; saw {seen:?}"
        );
        sock.set_read_timeout(Some(left)).expect("timeout");
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("no notification {what}: {e}; saw {seen:?}"),
        };
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        let done = want(&msg);
        seen.push(msg);
        if done {
            return seen;
        }
    }
}

#[test]
fn systemd_hears_ready_then_a_status_that_follows_the_tunnel() {
    let dir = tempdir();
    let path = dir.path().join("notify");
    let listener = UnixDatagram::bind(&path).expect("bind");
    let mut w = World::without_daemon(&DeviceSettings::default(), None);
    let stderr = w.device.stderr.clone();
    spawn_daemon(
        &mut w.device,
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "2000000".into()),
        ],
        &[],
        &stderr,
    );
    let first = until(&listener, "READY", |m| m.contains("READY=1"));
    assert_eq!(
        first.last().map(String::as_str),
        Some("READY=1\nSTATUS=no support tunnel")
    );
    // READY means the socket answers.
    let out = w.device.run(&["status"]);
    assert!(out.status.success());

    let (id, code) = w.device.request(&["--duration", "30m"]);
    let short = &id.to_string()[..8];
    until(&listener, "pending", |m| {
        m == format!("STATUS={short}: waiting for approval")
    });
    let s = approve(&w.cp, &w.eng, &code, &Terms::default());
    w.wait_connected(&s);
    let user = s.user();
    until(&listener, "connected", |m| {
        m.starts_with(&format!("STATUS=connected: alice, user {user}, ")) && m.ends_with(" left")
    });
    // The watchdog is pinged while it runs (every WATCHDOG_USEC / 2).
    until(&listener, "the watchdog ping", |m| m == "WATCHDOG=1");
    assert!(w.device.run(&["stop", &id.to_string()]).status.success());
    until(&listener, "the end", |m| m == "STATUS=no support tunnel");
}

#[test]
fn journald_gets_a_priority_on_every_line() {
    let mut w = World::without_daemon(&DeviceSettings::default(), None);
    let device = &mut w.device;
    // A record the agent cannot read: reported as an error at start.
    let tunnels = device.state_dir().join("tunnels");
    std::fs::create_dir_all(&tunnels).expect("state dir");
    std::fs::write(tunnels.join("0123456789abcdef.json"), b"{ not json").expect("write");
    let log = device.dir.path().join("journal-stream");
    std::fs::write(&log, b"").expect("log file");
    let meta = std::fs::metadata(&log).expect("stat");
    spawn_daemon(
        device,
        &[("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))],
        &["--verbose"],
        &log,
    );
    let sock = device.socket();
    wait_for("the socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    assert!(device.run(&["status"]).status.success());
    wait_for(
        "the debug line of the status call",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("<7>socket: Root")
        },
    );
    device.crash();
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<3>error: repair: ") && l.contains("0123456789abcdef.json")),
        "an error line: {text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("<6>listening on ")),
        "an info line: {text}"
    );
    assert!(
        lines.iter().all(|l| l.starts_with('<')),
        "every line has a priority: {text}"
    );
    std::fs::remove_file(tunnels.join("0123456789abcdef.json")).expect("rm");

    // Not a journal stream (stderr elsewhere): plain lines, and no debug
    // without --verbose.
    device.start_daemon(None);
    assert!(device.run(&["status"]).status.success());
    device.crash();
    let text = device.daemon_stderr();
    assert!(text.contains("support-agent: listening on "), "{text}");
    assert!(!text.contains("socket: Root"), "{text}");
    assert!(!text.contains("<6>"), "{text}");
}

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(agent_bin())
        .args(args)
        .env("SUPPORT_AGENT_CONFIG", "/nonexistent/agent.toml")
        .output()
        .expect("runs")
}

#[test]
fn the_command_line_is_strict_and_its_exit_codes_mean_something() {
    for (args, says) in [
        (
            &["request", "2h"][..],
            "unexpected argument '2h' for request",
        ),
        (
            &["stop", "--duration", "2h"],
            "--duration is not an option of stop (it belongs to request)",
        ),
        (
            &["--json", "status"],
            "--json belongs to a command: support-agent status --json",
        ),
        (
            &["status", "--all"],
            "--all is not an option of status (it belongs to stop)",
        ),
        (&["log", "a", "b"], "unexpected argument 'b' for log"),
        (&["stop"], "say which tunnel to stop"),
        (&["frobnicate"], "unknown command 'frobnicate'"),
        (&["help", "frobnicate"], "unknown command 'frobnicate'"),
        (
            &["request", "--bogus"],
            "unknown option --bogus for request",
        ),
        (&["request", "--note"], "--note needs a value"),
        (&["daemon", "now"], "unexpected argument 'now' for daemon"),
    ] {
        let out = agent(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    for (args, starts) in [
        (
            &["help", "request"][..],
            "support-agent request: ask for support",
        ),
        (
            &["request", "--help"],
            "support-agent request: ask for support",
        ),
        (&["help", "stop"], "support-agent stop: end a tunnel now"),
        (&["help"], "support-agent: lets support reach this device"),
        (&[], "support-agent: lets support reach this device"),
    ] {
        let out = agent(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(starts),
            "{args:?}"
        );
    }
    let out = agent(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("socket protocol version 1"));
    // A well-formed command that fails (no config here) exits 1, not 2.
    let out = agent(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.toml"));
}
