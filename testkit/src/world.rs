//! Real parts for end-to-end tests: the control-plane binary on a fixed
//! loopback port, Debian's sshd on a loopback port with its own host key,
//! and the device agent (as root, with real users) under a temp dir.
//! Shared by the agent's and the admin's tests.
#![allow(missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support_protocol::control_channel::{Api, ClientCall, StaticKeypair};
use support_protocol::messages::admin::TunnelDetail;
use support_protocol::messages::{AdminCall, AdminReply, AdminRequest, AdminResponse};
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::state::TunnelState;
use support_protocol::{RequestId, TunnelId};

/// The agent binary under test: this build's, or `SUPPORT_AGENT_BIN` (the
/// static release build, or a wrapper that runs the armv7 build under qemu).
pub fn agent_bin() -> String {
    std::env::var("SUPPORT_AGENT_BIN")
        .unwrap_or_else(|_| sibling_bin("support-agent").display().to_string())
}

/// Skips (loudly) unless root with sshd, sudo and visudo: the agent creates real users.
pub fn require_root_and_sshd() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    assert!(
        root,
        "these tests create real Unix users: run them as root (scripts/test does)"
    );
    for bin in [
        "/usr/sbin/sshd",
        "/usr/sbin/visudo",
        "/usr/bin/sudo",
        "/usr/sbin/useradd",
    ] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: run scripts/setup (it installs openssh-server and sudo)"
        );
    }
}

pub fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("randomness");
    b
}

/// A binary of another workspace package, built next to this test.
pub fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    // This profile's build first; a bench may use the debug build of a helper.
    let candidates = [dir.join(name), dir.with_file_name("debug").join(name)];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{} is not built: run `cargo build -p {name}` (scripts/test builds the workspace)",
                candidates[0].display()
            )
        })
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binds")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A world-traversable temp dir (others must reach sockets inside it).
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("agent-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// A new passphrase-less ed25519 key at `path` (and `path`.pub), by
/// OpenSSH's ssh-keygen; returns the public key line.
pub fn ssh_keygen(path: &Path) -> String {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success(), "ssh-keygen failed");
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_string()
}

/// Runs `cmd` with its wall clock shifted by `offset` (libfaketime, e.g.
/// "-4y"), preloaded directly: the `faketime` wrapper forks, so killing it
/// would orphan the program instead of ending it. The monotonic clock stays real.
pub fn with_fake_clock(cmd: &mut Command, offset: &str) {
    cmd.env(
        "LD_PRELOAD",
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    )
    .env("FAKETIME", offset)
    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// Debian's sshd on a loopback port with its own host key. `faketime`
/// runs it with a shifted wall clock (as a device whose clock is wrong).
pub struct Sshd {
    pub port: u16,
    pub host_key: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sshd {
    pub fn start(faketime: Option<&str>) -> Sshd {
        let dir = tempdir();
        let key = dir.path().join("host_ed25519");
        let host_key = ssh_keygen(&key);
        let port = free_tcp_port();
        let cfg = dir.path().join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}/sshd.pid\n\
                 UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nStrictModes yes\nLogLevel VERBOSE\n\
                 Subsystem sftp internal-sftp\n",
                key.display(),
                dir.path().display()
            ),
        )
        .expect("config");
        std::fs::create_dir_all("/run/sshd").expect("privsep dir");
        let mut cmd = Command::new("/usr/sbin/sshd");
        if let Some(offset) = faketime {
            with_fake_clock(&mut cmd, offset);
        }
        let child = cmd
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        wait_for("sshd to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Sshd {
            port,
            host_key,
            child,
            _dir: dir,
        }
    }

    pub fn host_key_file(&self) -> String {
        self._dir
            .path()
            .join("host_ed25519.pub")
            .display()
            .to_string()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The control-plane binary on a fixed loopback port (so it can be restarted in place).
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
    pub public: [u8; 32],
    child: Option<Child>,
    extra: Vec<String>,
}

impl ControlPlane {
    pub fn start(extra: &[&str]) -> ControlPlane {
        let mut cp = ControlPlane {
            dir: tempdir(),
            port: free_tcp_port(),
            url: String::new(),
            public: [0; 32],
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        cp.url = format!("http://127.0.0.1:{}", cp.port);
        cp.launch();
        let out = cp.cli(&["public-key"]);
        cp.public = hex::decode(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .expect("key"),
        )
        .expect("hex")
        .try_into()
        .expect("32 bytes");
        cp
    }

    pub fn launch(&mut self) {
        let mut child = Command::new(sibling_bin("support-control-plane"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--data",
            ])
            .arg(self.dir.path())
            .args([
                "--creates-per-minute-per-address",
                "100000",
                "--creates-per-minute",
                "100000",
            ])
            .args(&self.extra)
            .env("SUPPORT_CP_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("control plane starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        assert!(line.starts_with("listening on"), "{line}");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        let out = Command::new(sibling_bin("support-control-plane"))
            .args(&args[..1])
            .arg("--data")
            .arg(self.dir.path())
            .args(&args[1..])
            .env("SUPPORT_CP_LOG", "warn")
            .output()
            .expect("cli");
        assert!(
            out.status.success(),
            "{:?}: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn enroll(&self, name: &str, key: &StaticKeypair) {
        let out = Command::new(sibling_bin("support-control-plane"))
            .args(["admins", "add", "--data"])
            .arg(self.dir.path())
            .args([name, &hex::encode(key.public), "--role", "approver"])
            .env("SUPPORT_CP_LOG", "warn")
            .output()
            .expect("cli");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn admin(&self, key: &StaticKeypair, request: AdminRequest) -> AdminResponse {
        let call = AdminCall {
            request_id: RequestId(u64::from_le_bytes(random32()[..8].try_into().expect("8"))),
            request,
        };
        let bytes = support_protocol::encode(&call).expect("encodes");
        let (cc, body) =
            ClientCall::start(Api::Admin, key, &self.public, random32(), &bytes).expect("starts");
        let r = minreq::post(format!("{}/v1/admin", self.url))
            .with_body(body)
            .with_timeout(30)
            .send()
            .expect("HTTP");
        let plain = cc.finish(r.as_bytes()).expect("channel");
        let reply: AdminReply = support_protocol::decode(&plain).expect("decodes");
        reply
            .result
            .unwrap_or_else(|e| panic!("admin call refused: {e}"))
    }

    pub fn show(&self, key: &StaticKeypair, id: TunnelId) -> TunnelDetail {
        match self.admin(key, AdminRequest::Show(id)) {
            AdminResponse::Show(d) => *d,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn state(&self, key: &StaticKeypair, id: TunnelId) -> TunnelState {
        self.show(key, id).summary.state
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The device: a config, a state dir, and the agent binary.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub daemon: Option<Child>,
    pub sshd_port: u16,
    pub stderr: PathBuf,
}

/// Device-side settings that tests vary.
#[derive(Clone)]
pub struct DeviceSettings {
    pub sudo: bool,
    pub max_duration: String,
    pub ports: Vec<(u16, String)>,
    pub extra: String,
}

impl Default for DeviceSettings {
    fn default() -> DeviceSettings {
        DeviceSettings {
            sudo: true,
            max_duration: "1h".into(),
            ports: vec![],
            extra: String::new(),
        }
    }
}

impl Device {
    pub fn new(
        cp_url: &str,
        cp_key: &[u8; 32],
        ca: &[u8; 32],
        sshd: &Sshd,
        s: &DeviceSettings,
    ) -> Device {
        let dir = tempdir();
        let config = dir.path().join("agent.toml");
        let mut ports = format!("22 = \"127.0.0.1:{}\"\n", sshd.port);
        for (p, t) in &s.ports {
            ports.push_str(&format!("{p} = \"{t}\"\n"));
        }
        std::fs::write(
            &config,
            format!(
                "control_plane = \"{cp_url}\"\ncontrol_plane_keys = [\"{}\"]\n\
                 support_ca_keys = [\"{}\"]\nmax_duration = \"{}\"\nsudo = {}\n\
                 state_dir = \"{}/state\"\nsocket = \"{}/agent.sock\"\n\
                 host_keys = [\"{}\"]\n{}\n[ports]\n{ports}",
                hex::encode(cp_key),
                hex::encode(ca),
                s.max_duration,
                s.sudo,
                dir.path().display(),
                dir.path().display(),
                sshd.host_key_file(),
                s.extra,
            ),
        )
        .expect("config");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let stderr = dir.path().join("daemon.stderr");
        Device {
            config,
            daemon: None,
            sshd_port: sshd.port,
            stderr,
            dir,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    pub fn command(&self, faketime: Option<&str>) -> Command {
        let mut c = Command::new(agent_bin());
        if let Some(offset) = faketime {
            with_fake_clock(&mut c, offset);
        }
        c.arg("--config").arg(&self.config);
        c
    }

    pub fn start_daemon(&mut self, faketime: Option<&str>) {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .expect("stderr file");
        let child = self
            .command(faketime)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("daemon starts");
        self.daemon = Some(child);
        let sock = self.socket();
        wait_for("the daemon's socket", Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    /// kill -9.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(None).args(args).output().expect("agent runs")
    }

    /// `support-agent request`, returning the tunnel id and the code line.
    pub fn request(&self, args: &[&str]) -> (TunnelId, String) {
        let mut all = vec!["request"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "request failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let code_line = stdout
            .lines()
            .find(|l| OneTimeCode::parse(l).is_ok())
            .unwrap_or_else(|| panic!("no code line alone in {stdout}"))
            .to_string();
        assert_eq!(
            code_line.trim(),
            code_line,
            "the code stands alone on its line"
        );
        let code = OneTimeCode::parse(&code_line).expect("parses");
        (code.tunnel_id, code_line)
    }

    pub fn daemon_stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Every byte the agent wrote under its directory (state, logs, status).
    pub fn all_files_text(&self) -> String {
        fn walk(p: &Path, out: &mut Vec<u8>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path, out);
                    } else if let Ok(mut f) = std::fs::File::open(&path) {
                        let _ = f.read_to_end(out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        String::from_utf8_lossy(&out).to_string()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.crash();
        // Whatever a test left (a live tunnel, or a failure halfway): the
        // agent's own offline stop and repair remove it, so no user outlives the test.
        let _ = self.run(&["stop", "--all"]);
        let _ = self.run(&["repair"]);
    }
}

/// Nothing of the tunnel's access is left on the device.
pub fn assert_no_access_left(user: &str) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
    assert!(
        !passwd.lines().any(|l| l.starts_with(&format!("{user}:"))),
        "user {user} is gone"
    );
    assert!(
        !Path::new(&format!("/home/{user}")).exists(),
        "home is gone"
    );
    assert!(
        !Path::new(&format!("/etc/sudoers.d/support-tunnel-{user}")).exists(),
        "sudoers entry is gone"
    );
}

pub fn user_exists(user: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .expect("passwd")
        .lines()
        .any(|l| l.starts_with(&format!("{user}:")))
}

/// Writes raw bytes to a socket and reads what comes back (for hostile-input tests).
pub fn raw_socket(path: &Path, bytes: &[u8]) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
