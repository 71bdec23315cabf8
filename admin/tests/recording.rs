//! Recorded sessions, end to end: Debian's sshd with the drop-in that
//! `support-agent install-sshd` writes, real support users, the whole flow
//! through WireGuard. A shell typed in tmux, watched live by the owner in
//! another tmux and replayed; exec; scp (SFTP and legacy) and sftp up and
//! down with each file logged; escapes that are refused or recorded; the
//! recording cap under a 100 MB flood; and `require_recording`.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::recorded::{recorded_lab, ssh_config};
use common::tmux::Tmux;
use common::*;

/// `support-agent log ID` on the device.
fn owner_log(lab: &Lab, id: &str) -> String {
    ok(&lab.device.run(&["log", id]))
}

/// Waits until the owner's log of `id` has `n` ended sessions; returns it.
/// On timeout the panic shows the log, so a failure says which session is
/// missing.
fn ended_sessions(lab: &Lab, id: &str, n: usize) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = owner_log(lab, id);
        if log.matches(") ended after").count() >= n {
            return log;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after 30s waiting for {n} ended sessions; the owner's log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The number of the last session of `kind` that ended, from the log.
fn last_session(log: &str, kind: &str) -> String {
    log.lines()
        .filter(|l| l.contains(&format!("({kind}) ended after")))
        .filter_map(|l| l.split("session ").nth(1)?.split(' ').next())
        .next_back()
        .unwrap_or_else(|| panic!("no {kind} session in {log}"))
        .to_string()
}

fn replay(lab: &Lab, id: &str, session: &str) -> String {
    ok(&lab.device.run(&["replay", id, session, "--speed", "1000"]))
}

const NOTICE: &str = "this session is recorded";

#[test]
fn a_shell_is_watched_live_and_replayed_and_a_command_is_recorded() {
    let lab = recorded_lab("", true);
    let (id, _) = lab.approve(&[], &["--yes"]);
    assert!(
        owner_log(&lab, &id).contains("sessions are recorded"),
        "{}",
        owner_log(&lab, &id)
    );

    let eng = Tmux::new(&format!(
        "{ADMIN} --home {} connect {id}",
        lab.eng.home.path().display()
    ));
    eng.wait_for_text(NOTICE, Duration::from_secs(30));
    // The owner follows it from their own terminal.
    let owner = Tmux::new(&format!(
        "{} --config {} watch {id}",
        agent_bin(),
        lab.device.config.display()
    ));
    owner.wait_for_text("(shell) of tunnel", Duration::from_secs(20));
    eng.keys("echo marker-$((6*7))");
    eng.wait_for_text("marker-42", Duration::from_secs(30));
    owner.wait_for_text("marker-42", Duration::from_secs(10));
    assert_eq!(
        eng.screen().matches(NOTICE).count(),
        1,
        "told once: {}",
        eng.screen()
    );
    eng.resize(120, 40);
    eng.keys("stty size");
    eng.wait_for_text("40 120", Duration::from_secs(10));
    eng.keys("exit");

    let log = ended_sessions(&lab, &id, 1);
    let shell = last_session(&log, "shell");
    let replayed = replay(&lab, &id, &shell);
    assert!(replayed.contains("marker-42"), "{replayed}");
    assert!(
        replayed.contains("40 120"),
        "the window change went through"
    );
    let cast = std::fs::read_to_string(
        lab.device
            .state_dir()
            .join(format!("recordings/{id}/{shell:0>4}.cast")),
    )
    .expect("the asciicast file");
    let header: serde_json::Value =
        serde_json::from_str(cast.lines().next().expect("header")).expect("json");
    assert_eq!(header["version"], 2, "asciicast v2: {cast}");
    assert!(cast.contains("\"r\", \"120x40\""), "the resize is recorded");

    // A command: its line, exit code and output; the notice once, on stderr.
    let out = lab
        .eng
        .run(&["exec", &id, "--", "echo exec-$((3*3)); exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exec-9\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).matches(NOTICE).count(),
        1
    );
    let log = ended_sessions(&lab, &id, 2);
    assert!(
        log.contains("(exec) ended after") && log.contains(": echo exec-$((3*3)); exit 3, exit 3"),
        "{log}"
    );
    assert!(replay(&lab, &id, &last_session(&log, "exec")).contains("exec-9"));
    // The web UI gets the same through the socket, as curl would ask.
    let http = |path: &str| {
        raw_socket(
            &lab.device.socket(),
            format!("GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").as_bytes(),
        )
    };
    let listed = http(&format!("/v1/recordings/{id}"));
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    assert!(
        listed.contains(&format!("{{\"session\":{shell},")),
        "{listed}"
    );
    let cast = http(&format!("/v1/replay/{id}/{shell}"));
    assert!(cast.starts_with("HTTP/1.1 200"), "{cast}");
    assert!(
        cast.contains("\"version\":2") && cast.contains("marker-42"),
        "{cast}"
    );
    assert!(http(&format!("/v1/replay/{id}/999")).starts_with("HTTP/1.1 404"));
    // And through the reference client it ships.
    let client = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agent/dist/support_agent_client.py"
    );
    let py = |args: &[&str]| {
        let out = Command::new("python3")
            .arg(client)
            .arg("--socket")
            .arg(lab.device.socket())
            .args(args)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let listed: serde_json::Value = serde_json::from_str(&py(&["recordings", &id])).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let cast = py(&["replay", &id, &shell]);
    assert!(
        cast.lines().count() > 3 && cast.contains("marker-42"),
        "{cast}"
    );
    // Support cannot read what was recorded of them.
    let files = lab.device.state_dir().join(format!("recordings/{id}"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(files.join(format!("{shell:0>4}.cast")))
            .expect("meta")
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "root's alone: {mode:o}");
    ok(&lab.eng.run(&["stop", &id]));
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("runs")
}

fn must(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn scp_and_sftp_transfers_are_logged_each_with_its_path_and_size() {
    let lab = recorded_lab("", true);
    let (id, _) = lab.approve(&[], &["--yes"]);
    let cfg = ssh_config(&lab, &id);
    let host = format!("support-{id}");
    let scratch = tempdir();
    let up = scratch.path().join("up.bin");
    let data: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i * 7 + i / 1000) as u8)
        .collect();
    std::fs::write(&up, &data).expect("file");
    let scp = |args: &[&str]| {
        let mut c = Command::new("scp");
        c.args(["-F", &cfg, "-o", "BatchMode=yes", "-q"]).args(args);
        run(&mut c)
    };
    let up_s = up.to_str().expect("utf-8");
    // Into the home directory itself: it is an ordinary, writable home.
    must(scp(&[up_s, &format!("{host}:")]), "scp (SFTP) up");
    must(
        scp(&["-O", up_s, &format!("{host}:legacy.bin")]),
        "scp -O up",
    );
    let down1 = scratch.path().join("down1");
    let down2 = scratch.path().join("down2");
    must(
        scp(&[&format!("{host}:up.bin"), down1.to_str().expect("utf-8")]),
        "scp (SFTP) down",
    );
    must(
        scp(&[
            "-O",
            &format!("{host}:legacy.bin"),
            down2.to_str().expect("utf-8"),
        ]),
        "scp -O down",
    );
    assert_eq!(std::fs::read(&down1).expect("down1"), data);
    assert_eq!(std::fs::read(&down2).expect("down2"), data);
    let batch = scratch.path().join("batch");
    let down3 = scratch.path().join("down3");
    std::fs::write(
        &batch,
        format!(
            "put {up_s} sftp.bin\nget sftp.bin {}\nrename sftp.bin renamed.bin\nrm renamed.bin\n",
            down3.display()
        ),
    )
    .expect("batch");
    let mut sftp = Command::new("sftp");
    sftp.args(["-F", &cfg, "-o", "BatchMode=yes", "-b"])
        .arg(&batch)
        .arg(&host);
    must(run(&mut sftp), "sftp");
    assert_eq!(std::fs::read(&down3).expect("down3"), data);

    let log = ended_sessions(&lab, &id, 5);
    for want in [
        "upload ",
        "up.bin (1048576 bytes) ok",
        "download ",
        "legacy.bin (1048576 bytes) ok",
        "sftp.bin (1048576 bytes) ok",
        "sftp.bin -> /home/",
        "/renamed.bin ok",
    ] {
        assert!(log.contains(want), "{want:?} in\n{log}");
    }
    let uploads = log
        .lines()
        .filter(|l| l.contains("upload ") && l.contains("(1048576 bytes) ok"))
        .count();
    let downloads = log
        .lines()
        .filter(|l| l.contains("download ") && l.contains("(1048576 bytes) ok"))
        .count();
    assert_eq!((uploads, downloads), (3, 3), "{log}");
    assert!(log.contains("(scp) ended after") && log.contains("(sftp) ended after"));
    ok(&lab.eng.run(&["stop", &id]));
}

/// Runs `python3` in a support session to talk to the agent's socket.
fn socket_from_session(cfg: &str, host: &str, socket: &Path, request: &str) -> String {
    let script = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); \
         s.sendall({:?}.encode() + bytes([10])); print(s.makefile().readline())",
        socket.display().to_string(),
        request
    );
    let mut c = Command::new("ssh");
    c.args(["-F", cfg, "-o", "BatchMode=yes", host, "python3", "-c"])
        .arg(format!("'{script}'"));
    must(run(&mut c), "python3 in the session")
}

#[test]
fn escapes_from_the_recorder_are_refused_or_recorded() {
    let lab = recorded_lab("", true);
    let (id, _) = lab.approve(&[], &["--yes"]);
    let cfg = ssh_config(&lab, &id);
    let host = format!("support-{id}");
    let user = format!("support-{id}");
    let ssh = |args: &[&str]| {
        let mut c = Command::new("ssh");
        c.args(["-F", &cfg, "-o", "BatchMode=yes"]).args(args);
        run(&mut c)
    };
    // No forwarding of any kind, even with -N (no session at all).
    let out = ssh(&[
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        "0:127.0.0.1:22",
        &host,
    ]);
    assert!(!out.status.success(), "a remote forward is refused");
    let port = free_tcp_port();
    let mut fwd = Command::new("ssh")
        .args(["-F", &cfg, "-o", "BatchMode=yes", "-N", "-L"])
        .arg(format!("{port}:127.0.0.1:{}", lab.sshd.port))
        .arg(&host)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh -L");
    wait_for("ssh to listen locally", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("local end");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut banner = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut banner);
    assert!(
        !banner.contains("SSH-"),
        "the forward reached sshd: {banner}"
    );
    let _ = fwd.kill();
    let _ = fwd.wait();

    // ssh -s sftp: the subsystem goes through the recorder too.
    let before = owner_log(&lab, &id).matches("(sftp) ended").count();
    // stdin is closed, so sftp-server reads EOF and exits 0.
    must(ssh(&["-s", &host, "sftp"]), "ssh -s sftp");
    ended_sessions(&lab, &id, 1);
    wait_for(
        "the sftp session in the log",
        Duration::from_secs(10),
        || owner_log(&lab, &id).matches("(sftp) ended").count() > before,
    );

    // exec, a different SSH_ORIGINAL_COMMAND and shell environment tricks:
    // each is a recorded command.
    let out = ssh(&[&host, "exec /bin/sh -c 'echo escaped-$((1+1))'"]);
    assert_eq!(must(out, "exec"), "escaped-2\n");
    let out = ssh(&[
        "-o",
        "SetEnv=SSH_ORIGINAL_COMMAND=internal-sftp BASH_ENV=/tmp/evil LD_PRELOAD=/tmp/evil.so",
        &host,
        "echo env-$((2+2))",
    ]);
    assert_eq!(must(out, "SetEnv"), "env-4\n");
    let log = ended_sessions(&lab, &id, 3);
    assert!(
        log.contains(": exec /bin/sh -c 'echo escaped-$((1+1))', exit 0"),
        "{log}"
    );
    assert!(log.contains(": echo env-$((2+2)), exit 0"), "{log}");

    // ~/.ssh is the user's to write, and sshd does not read it.
    let scratch = tempdir();
    let own = scratch.path().join("own_key");
    let own_pub = ssh_keygen(&own);
    must(
        ssh(&[
            &host,
            &format!(
                "mkdir -p ~/.ssh && echo '{own_pub}' > ~/.ssh/authorized_keys && \
                 echo 'touch ~/rc-ran' > ~/.ssh/rc && echo written"
            ),
        ]),
        "write ~/.ssh",
    );
    let own_cfg = std::fs::read_to_string(&cfg)
        .expect("cfg")
        .lines()
        .map(|l| match l.trim_start().starts_with("IdentityFile ") {
            true => format!("    IdentityFile {}", own.display()),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let own_cfg = lab.home_file("own_ssh_config", &own_cfg);
    let mut c = Command::new("ssh");
    c.args(["-F", &own_cfg, "-o", "BatchMode=yes", &host, "true"]);
    let out = run(&mut c);
    assert!(!out.status.success(), "a key the user planted is refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ~/.ssh/rc never runs (the session above and this one would have run it).
    must(ssh(&[&host, "true"]), "a session after the rc");
    assert!(
        !Path::new(&format!("/home/{user}/rc-ran")).exists(),
        "~/.ssh/rc ran"
    );

    // The socket files a recorder under the caller's own tunnel only, and
    // a session reads no recordings.
    let sock = lab.device.socket();
    let said = socket_from_session(
        &cfg,
        &host,
        &sock,
        &format!(
            r#"{{"op":"record","kind":"shell","id":"{}"}}"#,
            "0".repeat(16)
        ),
    );
    assert!(
        said.contains("bad_request") && said.contains("unknown field"),
        "{said}"
    );
    for op in [
        r#"{"op":"replay","session":1}"#,
        r#"{"op":"recordings"}"#,
        r#"{"op":"watch_session"}"#,
        r#"{"op":"log"}"#,
    ] {
        let said = socket_from_session(&cfg, &host, &sock, op);
        assert!(said.contains("forbidden"), "{op}: {said}");
    }
    ok(&lab.eng.run(&["stop", &id]));
}

#[test]
fn two_tunnels_file_each_session_under_its_own() {
    let lab = recorded_lab("", true);
    let (a, _) = lab.approve(&[], &["--yes"]);
    let (b, _) = lab.approve(&[], &["--yes"]);
    assert_eq!(
        ok(&lab.eng.run(&["exec", &a, "--", "echo from-a"])),
        "from-a\n"
    );
    assert_eq!(
        ok(&lab.eng.run(&["exec", &b, "--", "echo from-b"])),
        "from-b\n"
    );
    let (log_a, log_b) = (ended_sessions(&lab, &a, 1), ended_sessions(&lab, &b, 1));
    assert!(
        log_a.contains("echo from-a") && !log_a.contains("from-b"),
        "{log_a}"
    );
    assert!(
        log_b.contains("echo from-b") && !log_b.contains("from-a"),
        "{log_b}"
    );
    let a1 = replay(&lab, &a, &last_session(&log_a, "exec"));
    let b1 = replay(&lab, &b, &last_session(&log_b, "exec"));
    assert!(a1.contains("from-a") && !a1.contains("from-b"), "{a1}");
    assert!(b1.contains("from-b") && !b1.contains("from-a"), "{b1}");
    for id in [&a, &b] {
        ok(&lab.eng.run(&["stop", id]));
    }
}

#[test]
fn keystrokes_are_recorded_only_when_the_config_says_so() {
    for (record_input, kept) in [("record_input = true\n", true), ("", false)] {
        let lab = recorded_lab(record_input, true);
        let (id, _) = lab.approve(&[], &["--yes"]);
        let cfg = ssh_config(&lab, &id);
        let mut ssh = Command::new("ssh")
            .args([
                "-F",
                &cfg,
                "-o",
                "BatchMode=yes",
                &format!("support-{id}"),
                "wc -c",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh");
        std::io::Write::write_all(&mut ssh.stdin.take().expect("stdin"), b"typed-by-support\n")
            .expect("write");
        let out = ssh.wait_with_output().expect("ssh");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "17");
        let log = ended_sessions(&lab, &id, 1);
        let n = last_session(&log, "exec");
        let cast = std::fs::read_to_string(
            lab.device
                .state_dir()
                .join(format!("recordings/{id}/{n:0>4}.cast")),
        )
        .expect("cast");
        assert_eq!(
            cast.contains("\"i\", \"typed-by-support\\n\""),
            kept,
            "{record_input:?}: {cast}"
        );
        assert!(cast.contains("\"o\", \"17\\n\""), "{cast}");
        ok(&lab.eng.run(&["stop", &id]));
    }
}

/// Resident peak of `pid` in KiB (VmHWM).
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_flood_hits_the_recording_cap_and_the_session_goes_on() {
    let lab = recorded_lab("recording_cap = \"1M\"\n", true);
    let (id, _) = lab.approve(&[], &["--yes"]);
    let cfg = ssh_config(&lab, &id);
    let host = format!("support-{id}");
    let mut c = Command::new("ssh");
    c.args(["-F", &cfg, "-o", "BatchMode=yes", "-tt", &host])
        .arg("head -c 100000000 /dev/zero | tr '\\0' a; echo; echo after-the-flood");
    let out = run(&mut c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.len() >= 100_000_000,
        "{} bytes",
        out.stdout.len()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout[out.stdout.len() - 100..]).contains("after-the-flood")
    );
    let log = ended_sessions(&lab, &id, 1);
    assert!(log.contains("cut at the tunnel's recording_cap"), "{log}");
    let dir = lab.device.state_dir().join(format!("recordings/{id}"));
    let total: u64 = std::fs::read_dir(&dir)
        .expect("recordings")
        .flatten()
        .map(|e| e.metadata().expect("meta").len())
        .sum();
    assert!(total <= (1 << 20) + 4096, "{total} bytes kept");
    // The session is still usable afterwards, and recorded again.
    let out = lab.eng.run(&["exec", &id, "--", "echo still-here"]);
    assert_eq!(ok(&out), "still-here\n");
    eprintln!(
        "100 MB through a recorded terminal: recording kept {total} bytes; the agent daemon's peak RSS {} KiB",
        peak_kib(lab.device.pid())
    );
    ok(&lab.eng.run(&["stop", &id]));
}

#[test]
fn install_sshd_refuses_a_drop_in_that_sshd_does_not_include() {
    let lab = recorded_lab("", false);
    // sshd's config without its Include line: the drop-in would be dead.
    let scratch = tempdir();
    let main = std::fs::read_to_string(lab.sshd.config_file()).expect("sshd_config");
    let (_, rest) = main.split_once('\n').expect("the Include line");
    let cfg = scratch.path().join("sshd_config");
    std::fs::write(&cfg, rest).expect("write");
    let agent_toml = std::fs::read_to_string(&lab.device.config)
        .expect("agent.toml")
        .replace(
            &format!("sshd_config = \"{}\"", lab.sshd.config_file().display()),
            &format!("sshd_config = \"{}\"", cfg.display()),
        );
    let toml = scratch.path().join("agent.toml");
    std::fs::write(&toml, agent_toml).expect("write");
    let drop_in = lab.sshd.drop_in_dir().join("support-tunnel.conf");
    let child = Command::new(lab.dir.join("support-agent"))
        .arg("--config")
        .arg(&toml)
        .args(["install-sshd", "--drop-in"])
        .arg(&drop_in)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    // Its probe user is named after its pid (other tests probe at the same time).
    let probe = format!("support-check{}", child.id() % 100_000);
    let out = child.wait_with_output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sshd does not record support sessions") && err.contains("ForceCommand"),
        "{err}"
    );
    assert!(!drop_in.exists(), "the dead drop-in is taken back");
    assert!(!user_exists(&probe), "the probe user {probe} is gone");
}

#[test]
fn require_recording_refuses_a_tunnel_that_sshd_would_not_record() {
    let lab = recorded_lab("require_recording = true\n", false);
    let (id, code) = lab.device.request(&[]);
    let out = lab
        .eng
        .run(&["approve", &code, "--provider", "local", "--yes"]);
    // approve's own outcome depends on when the device refuses; what
    // matters is the device's log, shown with approve's words on timeout.
    let id = id.to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = owner_log(&lab, &id);
        if log.contains("requires recorded sessions") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the tunnel to fail; approve said {}{}; the owner's log:\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(log.contains("ForceCommand"), "{log}");
    wait_for("the tunnel to end", Duration::from_secs(30), || {
        owner_log(&lab, &id).contains("ended (")
    });
    assert!(
        !user_exists(&format!("support-{id}")),
        "no support user is left"
    );
}
