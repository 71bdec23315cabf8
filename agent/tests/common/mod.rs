//! Real parts for the agent's tests: the control-plane binary on loopback,
//! Debian's sshd on a loopback port, our relay in-process, the agent binary
//! as root with real Unix users, and an admin driven through the protocol
//! crate and the tunnel engine (support-admin's job, done by hand here).
#![allow(dead_code)]

pub mod fake_cp;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support_protocol::approval_box::{
    seal_approval, ApprovalContents, Approver, RelayEndpoint, SealedApproval, TunnelAddresses,
};
use support_protocol::bounded::{BoundedString, BoundedVec, FixedBytes};
use support_protocol::certificate::{ApproverCertificate, Role, SigningSeed, SupportCa};
use support_protocol::control_channel::{Api, ClientCall, StaticKeypair};
use support_protocol::hybrid_psk::{derive_psk, PskInputs};
use support_protocol::messages::admin::{ApproveRequest, StopRequest, TunnelDetail};
use support_protocol::messages::{
    AdminCall, AdminReply, AdminRequest, AdminResponse, TunnelRequest,
};
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::AdminTunnelKeys;
use support_protocol::{ApprovalSeq, RequestId, TunnelId};
use support_testkit::relay::RelayThread;
use support_tunnel::{BufferProfile, Engine, EngineConfig, EngineHandle, Role as PeerRole};

pub const AGENT: &str = env!("CARGO_BIN_EXE_support-agent");

/// The agent binary under test: this build, or `SUPPORT_AGENT_BIN` (the
/// static release build, or a wrapper that runs the armv7 build under qemu).
pub fn agent_bin() -> String {
    std::env::var("SUPPORT_AGENT_BIN").unwrap_or_else(|_| AGENT.to_string())
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
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen");
        assert!(st.success());
        let port = free_tcp_port();
        let cfg = dir.path().join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}/sshd.pid\n\
                 UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nStrictModes yes\nLogLevel VERBOSE\n",
                key.display(),
                dir.path().display()
            ),
        )
        .expect("config");
        std::fs::create_dir_all("/run/sshd").expect("privsep dir");
        let mut cmd = match faketime {
            Some(offset) => {
                let mut c = Command::new("faketime");
                c.args(["-f", offset, "/usr/sbin/sshd"]);
                c
            }
            None => Command::new("/usr/sbin/sshd"),
        };
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
        let host_key = std::fs::read_to_string(key.with_extension("pub"))
            .expect("host pub")
            .trim()
            .to_string();
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

/// The support organization and one engineer: a CA, a certified approver
/// key, an enrolled control-plane key, an SSH key made by ssh-keygen.
pub struct Engineer {
    pub ca: SupportCa,
    pub signing: SigningSeed,
    pub cert: ApproverCertificate,
    pub cp_key: StaticKeypair,
    pub ssh_key: PathBuf,
    pub ssh_public: [u8; 32],
    _dir: tempfile::TempDir,
}

impl Engineer {
    pub fn new(cp: &ControlPlane) -> Engineer {
        let eng = Engineer::offline();
        cp.enroll("alice", &eng.cp_key);
        eng
    }

    /// An engineer not enrolled at any control plane.
    pub fn offline() -> Engineer {
        let ca = SupportCa(SigningSeed::new(random32()));
        let signing = SigningSeed::new(random32());
        let now = now();
        let cert = ca.certify(
            BoundedString::new("alice").expect("fits"),
            signing.public(),
            Role::Approver,
            7,
            now - 3600,
            now + 90 * 86400,
        );
        let cp_key = StaticKeypair::from_secret(random32());
        let dir = tempdir();
        let ssh_key = dir.path().join("id_ed25519");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&ssh_key)
            .status()
            .expect("ssh-keygen");
        assert!(st.success());
        let ssh_public = ed25519_from_openssh(
            &std::fs::read_to_string(ssh_key.with_extension("pub")).expect("pub"),
        );
        Engineer {
            ca,
            signing,
            cert,
            cp_key,
            ssh_key,
            ssh_public,
            _dir: dir,
        }
    }

    pub fn ca_public(&self) -> [u8; 32] {
        self.ca.0.public()
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The 32-byte key of an `ssh-ed25519 AAAA... comment` line.
pub fn ed25519_from_openssh(line: &str) -> [u8; 32] {
    use base64::Engine as _;
    let b64 = line.split_whitespace().nth(1).expect("key field");
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    blob[blob.len() - 32..].try_into().expect("32 bytes")
}

/// What an approval should say (tests vary it).
#[derive(Clone)]
pub struct Terms {
    pub duration_secs: u32,
    pub ports: Vec<u16>,
    pub seq: u32,
}

impl Default for Terms {
    fn default() -> Terms {
        Terms {
            duration_secs: 600,
            ports: vec![22],
            seq: 1,
        }
    }
}

/// The admin's side of one approved tunnel.
pub struct Session {
    pub id: TunnelId,
    pub code: OneTimeCode,
    pub admin: AdminTunnelKeys,
    pub approval: SealedApproval,
    pub contents: ApprovalContents,
    pub device_wireguard: [u8; 32],
    pub kem_key: [u8; support_protocol::kem::KEM_ENCAPSULATION_KEY_LEN],
    pub relay: RelayThread,
    pub peer: Option<EngineHandle>,
    pub ssh_port: u16,
}

impl Session {
    pub fn user(&self) -> String {
        self.id.support_user()
    }

    pub fn psk(&self) -> [u8; 32] {
        let (_, shared) =
            support_protocol::kem::encapsulate(&self.kem_key, &self.admin.kem_randomness())
                .expect("kem");
        *derive_psk(&PskInputs {
            one_time_secret: &self.code.secret,
            kem_shared_secret: &shared,
            tunnel_id: self.id,
            device_wireguard: &self.device_wireguard,
            admin_wireguard: &self.admin.wireguard().public,
            kem_encapsulation_key: &self.kem_key,
            kem_ciphertext: &self.contents.kem_ciphertext.0,
        })
    }

    /// Starts the admin's userspace peer and a local forward to the device's port 22.
    pub fn connect(&mut self) {
        let (peer, _thread) = Engine::spawn(
            EngineConfig {
                private_key: *self.admin.wireguard().secret,
                peer_public: self.device_wireguard,
                psk: self.psk(),
                endpoint: self.relay.addr,
                bind: "127.0.0.1:0".parse().expect("addr"),
                local_ip: self.contents.addresses.admin.into(),
                peer_ip: self.contents.addresses.device.into(),
                prefix_len: self.contents.addresses.prefix_len,
                keepalive_secs: 25,
                profile: BufferProfile::ADMIN,
                role: PeerRole::Admin,
                random: u64::from_le_bytes(random32()[..8].try_into().expect("8")),
            },
            None,
        )
        .expect("admin peer starts");
        let local = peer
            .forward_local("127.0.0.1:0".parse().expect("addr"), 22)
            .expect("forward");
        self.ssh_port = local.port();
        self.peer = Some(peer);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(p) = &self.peer {
            p.shutdown();
        }
    }
}

/// Seals and signs an approval of `request` as `eng` would.
pub fn seal_for(
    eng: &Engineer,
    code: &OneTimeCode,
    request: &TunnelRequest,
    admin: &AdminTunnelKeys,
    relay: SocketAddr,
    terms: &Terms,
) -> (SealedApproval, ApprovalContents) {
    let body = &request.body;
    let (ct, _) =
        support_protocol::kem::encapsulate(&body.kem.0, &admin.kem_randomness()).expect("kem");
    let SocketAddr::V4(ra) = relay else {
        panic!("v4 relay")
    };
    let contents = ApprovalContents {
        relay: RelayEndpoint::V4(ra.ip().octets(), ra.port()),
        admin_wireguard: FixedBytes(admin.wireguard().public),
        admin_ssh: FixedBytes(eng.ssh_public),
        addresses: TunnelAddresses {
            device: [10, 77, 0, 2],
            admin: [10, 77, 0, 3],
            prefix_len: 28,
        },
        kem_ciphertext: FixedBytes(ct),
        duration_secs: terms.duration_secs,
        ports: BoundedVec::try_from(&terms.ports[..]).expect("fits"),
        issued_at: now(),
    };
    let approval = seal_approval(
        &contents,
        code.tunnel_id,
        &request.device_public_keys(),
        ApprovalSeq(terms.seq),
        &code.secret,
        admin.box_salt(),
        &Approver {
            key: &eng.signing,
            certificate: &eng.cert,
        },
    );
    (approval, contents)
}

/// Approves the tunnel of `code_text` the way support-admin will: checks the
/// code and the request tag, launches a relay, seals and signs, posts.
pub fn approve(cp: &ControlPlane, eng: &Engineer, code_text: &str, terms: &Terms) -> Session {
    let code = OneTimeCode::parse(code_text).expect("code parses");
    let detail = cp.show(&eng.cp_key, code.tunnel_id);
    support_protocol::request_tag::verify(&code.secret, &detail.request).expect("tag verifies");
    let body = &detail.request.body;
    let admin = AdminTunnelKeys::from_seed(random32());
    let relay = RelayThread::start(body.wireguard.0, admin.wireguard().public);
    let (approval, contents) = seal_for(eng, &code, &detail.request, &admin, relay.addr, terms);
    let expected = detail.summary.state.approval();
    cp.admin(
        &eng.cp_key,
        AdminRequest::Approve(Box::new(ApproveRequest {
            tunnel_id: code.tunnel_id,
            expected,
            approval: approval.clone(),
        })),
    );
    Session {
        id: code.tunnel_id,
        device_wireguard: body.wireguard.0,
        kem_key: body.kem.0,
        code,
        admin,
        approval,
        contents,
        relay,
        peer: None,
        ssh_port: 0,
    }
}

/// Waits for the control plane to show the device connected, and checks the
/// sealed report names `host_key`.
pub fn wait_connected(cp: &ControlPlane, eng: &Engineer, s: &Session, host_key: &str) {
    wait_for(
        "the device to report connected",
        Duration::from_secs(30),
        || matches!(cp.state(&eng.cp_key, s.id), TunnelState::Connected(_)),
    );
    let report = cp.show(&eng.cp_key, s.id).report.expect("report");
    let opened = report
        .open(
            s.id,
            s.approval.approval_seq,
            &s.code.secret,
            &s.approval.hash(),
        )
        .expect("report opens");
    assert!(
        opened.host_keys.iter().any(|k| k.as_str() == host_key),
        "the report carries sshd's host key"
    );
}

pub fn stop_at_cp(cp: &ControlPlane, eng: &Engineer, id: TunnelId) {
    cp.admin(
        &eng.cp_key,
        AdminRequest::Stop(StopRequest {
            tunnel_id: id,
            note: BoundedString::new("done").expect("fits"),
        }),
    );
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
        let mut c = match faketime {
            Some(offset) => {
                let mut c = Command::new("faketime");
                c.args(["-f", offset, &agent_bin()]);
                c
            }
            None => Command::new(agent_bin()),
        };
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
        // Whatever a failed test left: the agent's own repair removes it.
        let _ = self.run(&["repair"]);
    }
}

/// Runs `cmd` on the device over SSH through the session's tunnel.
pub fn ssh(eng: &Engineer, s: &Session, host_key: &str, cmd: &str) -> Output {
    ssh_with_timeout(eng, s, host_key, cmd, 15)
}

/// `ssh` with a connect timeout in seconds (short for logins that must fail).
pub fn ssh_with_timeout(
    eng: &Engineer,
    s: &Session,
    host_key: &str,
    cmd: &str,
    timeout: u32,
) -> Output {
    let known = tempfile::NamedTempFile::new().expect("known_hosts");
    std::fs::write(
        known.path(),
        format!("[127.0.0.1]:{} {host_key}\n", s.ssh_port),
    )
    .expect("known_hosts");
    Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(&eng.ssh_key)
        .args([
            "-p",
            &s.ssh_port.to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={}", known.path().display()),
            "-o",
            &format!("ConnectTimeout={timeout}"),
            "-o",
            "IdentitiesOnly=yes",
            &format!("{}@127.0.0.1", s.user()),
            cmd,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs")
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

/// Everything a full-flow test needs.
pub struct World {
    pub sshd: Sshd,
    pub cp: ControlPlane,
    pub eng: Engineer,
    pub device: Device,
}

impl World {
    pub fn new(settings: &DeviceSettings, faketime: Option<&str>) -> World {
        require_root_and_sshd();
        let sshd = Sshd::start(faketime);
        let cp = ControlPlane::start(&[]);
        let eng = Engineer::new(&cp);
        let mut device = Device::new(&cp.url, &cp.public, &eng.ca_public(), &sshd, settings);
        device.start_daemon(faketime);
        World {
            sshd,
            cp,
            eng,
            device,
        }
    }

    /// request -> approve -> connected -> admin peer up.
    pub fn connect(&self, request_args: &[&str], terms: &Terms) -> Session {
        let (_, code) = self.device.request(request_args);
        let mut s = approve(&self.cp, &self.eng, &code, terms);
        wait_connected(&self.cp, &self.eng, &s, &self.sshd.host_key);
        s.connect();
        s
    }
}
