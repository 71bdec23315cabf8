//! Real parts for the agent's tests: the control-plane binary on loopback,
//! Debian's sshd on a loopback port, our relay in-process, the agent binary
//! as root with real Unix users, and an admin driven through the protocol
//! crate and the tunnel engine (support-admin's job, done by hand here).
#![allow(dead_code)]

pub mod fake_cp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support_protocol::approval_box::{
    seal_approval, ApprovalContents, Approver, RelayEndpoint, SealedApproval, TunnelAddresses,
};
use support_protocol::bounded::{BoundedString, BoundedVec, FixedBytes};
use support_protocol::certificate::{ApproverCertificate, Role, SigningSeed, SupportCa};
use support_protocol::control_channel::StaticKeypair;
use support_protocol::hybrid_psk::derive_approver_psk;
use support_protocol::messages::admin::{ApproveRequest, StopRequest};
use support_protocol::messages::{AdminRequest, TunnelRequest};
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::request_tag::VerifiedRequest;
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::AdminTunnelKeys;
use support_protocol::{ApprovalSeq, TunnelId};
use support_testkit::relay::RelayThread;
use support_tunnel::{BufferProfile, Engine, EngineConfig, EngineHandle, Role as PeerRole};

pub use support_testkit::world::*;

/// The support organization and one engineer: a CA, a certified approver
/// key, an enrolled control-plane key, an SSH key made by ssh-keygen.
pub struct Engineer {
    pub ca: SupportCa,
    ca_seed: [u8; 32],
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
        Engineer::certified(random32(), "alice", 7, 90)
    }

    /// Another engineer of the same support organization, enrolled at
    /// `cp`, whose certificate is valid from an hour ago for `days`.
    pub fn colleague(&self, cp: &ControlPlane, name: &str, days: u64) -> Engineer {
        let e = Engineer::certified(self.ca_seed, name, 8, days);
        cp.enroll(name, &e.cp_key);
        e
    }

    /// An engineer certified by the CA of `ca_seed` from an hour ago for `days`.
    fn certified(ca_seed: [u8; 32], name: &str, serial: u64, days: u64) -> Engineer {
        let ca = SupportCa(SigningSeed::new(ca_seed));
        let signing = SigningSeed::new(random32());
        let now = now();
        let cert = ca.certify(
            BoundedString::new(name).expect("fits"),
            signing.public(),
            Role::Approver,
            serial,
            now - 3600,
            now + days * 86400,
        );
        let cp_key = StaticKeypair::from_secret(random32());
        let dir = tempdir();
        let ssh_key = dir.path().join("id_ed25519");
        let ssh_public = ed25519_from_openssh(&ssh_keygen(&ssh_key));
        Engineer {
            ca,
            ca_seed,
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
    /// The approval's `issued_at` (the approver's clock); now when absent.
    pub issued_at: Option<u64>,
}

impl Default for Terms {
    fn default() -> Terms {
        Terms {
            duration_secs: 600,
            ports: vec![22],
            seq: 1,
            issued_at: None,
        }
    }
}

/// The admin's side of one approved tunnel.
pub struct Session {
    pub id: TunnelId,
    /// The device's request, as the code verified it.
    pub request: VerifiedRequest,
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
        *derive_approver_psk(
            &self.request,
            &self.code.secret,
            &shared,
            &self.admin.wireguard().public,
            &self.contents.kem_ciphertext.0,
        )
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
        issued_at: terms.issued_at.unwrap_or_else(now),
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
    let request =
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
        request,
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
    wait_connected_explained(cp, eng, s, host_key, String::new);
}

/// [`wait_connected`], and on a timeout the control plane's state and what
/// `explain` says (the device's side) are in the panic.
fn wait_connected_explained(
    cp: &ControlPlane,
    eng: &Engineer,
    s: &Session,
    host_key: &str,
    explain: impl Fn() -> String,
) {
    let timeout = Duration::from_secs(30);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let state = cp.state(&eng.cp_key, s.id);
        if matches!(state, TunnelState::Connected(_)) {
            break;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for the device to report connected; \
                 the control plane has {state:?}\n{}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let mut ssh = ssh_command(eng, s, host_key, cmd, timeout);
    ssh.command.output().expect("ssh runs")
}

/// The system `ssh` to the device through the session's forward, with the
/// engineer's key and only `host_key` trusted. Keep it while ssh runs: it
/// owns the known_hosts file.
pub struct SshCommand {
    pub command: Command,
    _known_hosts: tempfile::NamedTempFile,
}

pub fn ssh_command(
    eng: &Engineer,
    s: &Session,
    host_key: &str,
    cmd: &str,
    timeout: u32,
) -> SshCommand {
    let known = tempfile::NamedTempFile::new().expect("known_hosts");
    std::fs::write(
        known.path(),
        format!("[127.0.0.1]:{} {host_key}\n", s.ssh_port),
    )
    .expect("known_hosts");
    let mut command = Command::new("ssh");
    command
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
        .stdin(Stdio::null());
    SshCommand {
        command,
        _known_hosts: known,
    }
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
        let mut w = World::without_daemon(settings, faketime);
        w.device.start_daemon(faketime);
        w
    }

    /// Everything but the agent's daemon, which the test starts its own way.
    pub fn without_daemon(settings: &DeviceSettings, faketime: Option<&str>) -> World {
        require_root_and_sshd();
        let sshd = Sshd::start(faketime);
        let cp = ControlPlane::start(&[]);
        let eng = Engineer::new(&cp);
        let device = Device::new(&cp.url, &cp.public, &eng.ca_public(), &sshd, settings);
        World {
            sshd,
            cp,
            eng,
            device,
        }
    }

    /// Waits for the control plane to show the device connected (and the
    /// sealed report to name sshd's host key); on a timeout the panic has
    /// the device's side too: the daemon's stderr and `status`.
    pub fn wait_connected(&self, s: &Session) {
        wait_connected_explained(&self.cp, &self.eng, s, &self.sshd.host_key, || {
            let status = self.device.run(&["status"]);
            format!(
                "the daemon's stderr:\n{}\nsupport-agent status:\n{}{}",
                self.device.daemon_stderr(),
                String::from_utf8_lossy(&status.stdout),
                String::from_utf8_lossy(&status.stderr)
            )
        });
    }

    /// request -> approve -> connected -> admin peer up.
    pub fn connect(&self, request_args: &[&str], terms: &Terms) -> Session {
        let (_, code) = self.device.request(request_args);
        let mut s = approve(&self.cp, &self.eng, &code, terms);
        // Waited for here with what explains a failure (the agent's own words).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !matches!(
            self.cp.state(&self.eng.cp_key, s.id),
            TunnelState::Connected(_)
        ) {
            assert!(
                std::time::Instant::now() < deadline,
                "the device did not report connected in 30 s: the control plane says {:?}; the agent said:\n{}\nits log:\n{}",
                self.cp.state(&self.eng.cp_key, s.id),
                self.device.daemon_stderr(),
                String::from_utf8_lossy(&self.device.run(&["log", &s.id.to_string()]).stdout),
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_connected(&s);
        s.connect();
        s
    }
}
