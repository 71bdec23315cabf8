//! One session per tunnel, shared by every tool: a shell in tmux, a
//! forward of the device's web UI fetched in a loop, and scp of 100 MB
//! through the ssh config, all at once on one WireGuard peer. Prints scp's
//! throughput alone and with the other two running.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tmux::Tmux;
use common::*;

/// A tiny HTTP server for the device's "web UI": python3's http.server.
struct WebUi {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl WebUi {
    fn start(page: &str) -> WebUi {
        let dir = tempdir();
        std::fs::write(dir.path().join("index.html"), page).expect("page");
        let port = free_tcp_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server");
        wait_for("the web UI", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        WebUi {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for WebUi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.0\r\nHost: device\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn sha256_file(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

/// scp `file` to the device's `work/NAME`; returns MB/s.
fn scp(cfg: &str, id: &str, file: &std::path::Path, name: &str) -> f64 {
    let started = Instant::now();
    let out = Command::new("scp")
        .args(["-F", cfg, "-o", "BatchMode=yes", "-q"])
        .arg(file)
        .arg(format!("support-{id}:work/{name}"))
        .stdin(Stdio::null())
        .output()
        .expect("scp");
    assert!(
        out.status.success(),
        "scp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs = started.elapsed().as_secs_f64();
    std::fs::metadata(file).expect("size").len() as f64 / 1e6 / secs
}

/// The sessions (background peers) of `id` on this machine.
fn sessions_of(id: &str) -> usize {
    processes(|args| args.windows(2).any(|w| w[0] == "session" && w[1] == id))
}

#[test]
fn a_shell_a_forward_and_scp_share_one_session() {
    let page = "<html>the AmpliPi web UI</html>\n";
    let web = WebUi::start(page);
    let lab = Lab::new(&DeviceSettings {
        ports: vec![(80, format!("127.0.0.1:{}", web.port))],
        max_duration: "1h".into(),
        ..DeviceSettings::default()
    });
    let (id, _) = lab.approve(&["--ports", "22,80"], &["--yes"]);
    let cfg = lab.home_file("ssh_config", &ok(&lab.eng.run(&["ssh-config", &id])));
    let scratch = tempdir();
    let big = random_file(scratch.path(), "big", 100);
    let digest = sha256_file(&big);

    // scp alone (its ssh goes through `support-admin proxy`, which starts the session).
    let alone = scp(&cfg, &id, &big, "alone");
    assert_eq!(sessions_of(&id), 1, "scp started the tunnel's session");

    // Now a shell in a real terminal, a forward fetched in a loop, and scp again.
    let tmux = Tmux::new(&format!(
        "{ADMIN} --home {} connect {id}",
        lab.eng.home.path().display()
    ));
    tmux.keys("echo shell-$((6*7))");
    tmux.wait_for_text("shell-42", Duration::from_secs(30));

    let mut fwd = Command::new(ADMIN)
        .arg("--home")
        .arg(lab.eng.home.path())
        .args(["forward", &id, "0:80", "0:22"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("forward");
    let mut lines = BufReader::new(fwd.stdout.take().expect("stdout")).lines();
    let web_addr = lines.next().expect("line").expect("read");
    let ssh_addr = lines.next().expect("line").expect("read");
    assert!(
        ssh_addr.starts_with("127.0.0.1:"),
        "two specs, two addresses"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let fetched = Arc::new(AtomicU32::new(0));
    let fetcher = {
        let (stop, fetched, web_addr) = (stop.clone(), fetched.clone(), web_addr.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let answer = http_get(&web_addr);
                assert!(answer.ends_with(page), "{answer}");
                fetched.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let together = scp(&cfg, &id, &big, "together");
    stop.store(true, Ordering::SeqCst);
    fetcher.join().expect("every fetch returned the page");
    assert!(fetched.load(Ordering::SeqCst) > 0);

    // The shell lived through it all.
    tmux.keys("echo still-$((7*6)) && sha256sum work/alone work/together");
    tmux.wait_for_text("still-42", Duration::from_secs(30));
    let out = lab
        .eng
        .run(&["exec", &id, "--", "sha256sum work/alone work/together"]);
    let sums = ok(&out);
    assert_eq!(
        sums.matches(&digest).count(),
        2,
        "both copies arrived whole: {sums}"
    );
    assert_eq!(sessions_of(&id), 1, "every tool shared one session");
    let _ = fwd.kill();
    let _ = fwd.wait();
    eprintln!(
        "scp of 100 MB through the session: alone {alone:.1} MB/s; with a shell and a forward \
         fetched in a loop ({} fetches) {together:.1} MB/s",
        fetched.load(Ordering::SeqCst)
    );

    // stop ends the session with the tunnel.
    ok(&lab.eng.run(&["stop", &id]));
    wait_for("the session to end", Duration::from_secs(10), || {
        sessions_of(&id) == 0
    });
}

#[test]
fn a_session_ends_when_idle_and_serves_only_approved_ports() {
    let lab = Lab::new(&DeviceSettings::default());
    let (id, _) = lab.approve(&[], &["--yes"]);
    // Long enough that the two calls below find it still up on a loaded
    // machine; short enough to wait for.
    let out = lab.eng.run(&["up", &id, "--idle", "8"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("session started"), "{err}");
    assert_eq!(sessions_of(&id), 1);
    let out = lab.eng.run(&["up", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already runs"));

    // A port the approval did not grant is refused by the session itself.
    let out = lab.eng.run(&["proxy", &id, "80"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.contains("not among the approved ports [22]"), "{err}");

    wait_for("the idle session to end", Duration::from_secs(30), || {
        sessions_of(&id) == 0
    });
    // The next tool starts a new one.
    let out = lab.eng.run(&["exec", &id, "--", "echo again"]);
    assert_eq!(ok(&out), "again\n");
    ok(&lab.eng.run(&["stop", &id]));
}
