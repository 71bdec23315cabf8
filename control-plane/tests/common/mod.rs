//! A real control plane (the built binary) on loopback with its store in a
//! temp dir, and a client that speaks the real control channel over HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support_protocol::approval_box::{
    seal_approval, ApprovalContents, Approver, RelayEndpoint, SealedApproval, TunnelAddresses,
};
use support_protocol::bounded::{BoundedString, BoundedVec, FixedBytes};
use support_protocol::certificate::{ApproverCertificate, Role, SigningSeed, SupportCa};
use support_protocol::control_channel::{Api, ClientCall, StaticKeypair};
use support_protocol::messages::admin::{ApproveRequest, ListQuery, StopRequest};
use support_protocol::messages::device::PollRequest;
use support_protocol::messages::{
    AdminCall, AdminReply, AdminRequest, AdminResponse, DeviceCall, DeviceFacts, DeviceReply,
    DeviceRequest, DeviceResponse, TunnelRequest,
};
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::{AdminTunnelKeys, DeviceTunnelKeys};
use support_protocol::{ApprovalSeq, RequestId, TunnelId};

pub const BIN: &str = env!("CARGO_BIN_EXE_support-control-plane");

/// A running control plane.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub url: String,
    pub public: [u8; 32],
    pub extra: Vec<String>,
}

pub fn permissive_limits() -> Vec<String> {
    [
        "--creates-per-minute-per-address",
        "1000000",
        "--creates-per-minute",
        "1000000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Server {
            dir,
            child: None,
            url: String::new(),
            public: [0; 32],
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.launch();
        s
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (or restarts) the server process on the same data dir.
    pub fn launch(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(self.dir.path())
            .args(&self.extra)
            .env("SUPPORT_CP_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reads the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        self.url = format!("http://{addr}");
        self.child = Some(child);
        self.public = self.public_keys()[0];
    }

    pub fn public_keys(&self) -> Vec<[u8; 32]> {
        let out = cli(&["public-key", "--data", path_str(self.data())]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                hex::decode(l.trim())
                    .expect("hex")
                    .try_into()
                    .expect("32 bytes")
            })
            .collect()
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("server did not stop within 40 s of SIGTERM");
        }
    }

    /// kill -9.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn enroll(&self, name: &str, key: &StaticKeypair, role: &str) {
        let out = cli(&[
            "admins",
            "add",
            "--data",
            path_str(self.data()),
            name,
            &hex::encode(key.public),
            "--role",
            role,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn client(&self) -> Client {
        Client {
            url: self.url.clone(),
            server: self.public,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.crash();
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub fn cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("SUPPORT_CP_LOG", "warn")
        .output()
        .expect("cli runs")
}

/// An HTTP response: status and body.
pub struct Raw {
    pub status: u16,
    pub body: Vec<u8>,
}

pub fn post(url: &str, path: &str, body: &[u8]) -> Raw {
    let r = minreq::post(format!("{url}{path}"))
        .with_body(body.to_vec())
        .with_timeout(60)
        .send()
        .expect("HTTP request");
    Raw {
        status: r.status_code as u16,
        body: r.as_bytes().to_vec(),
    }
}

pub fn get(url: &str, path: &str) -> Raw {
    let r = minreq::get(format!("{url}{path}"))
        .with_timeout(30)
        .send()
        .expect("HTTP request");
    Raw {
        status: r.status_code as u16,
        body: r.as_bytes().to_vec(),
    }
}

pub fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    getrandom::getrandom(&mut s).expect("randomness");
    s
}

pub fn rid() -> RequestId {
    RequestId(u64::from_le_bytes(seed()[..8].try_into().expect("8 bytes")))
}

/// A control-channel client.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    pub server: [u8; 32],
}

impl Client {
    /// Builds the HTTP body of a device call (to post, or to replay).
    pub fn device_body(&self, key: &StaticKeypair, call: &DeviceCall) -> (ClientCall, Vec<u8>) {
        let bytes = support_protocol::encode(call).expect("encodes");
        ClientCall::start(Api::Device, key, &self.server, seed(), &bytes).expect("channel starts")
    }

    pub fn device(&self, key: &StaticKeypair, call: &DeviceCall) -> (u16, DeviceReply) {
        let (cc, body) = self.device_body(key, call);
        let raw = post(&self.url, "/v1/device", &body);
        let plain = cc.finish(&raw.body).unwrap_or_else(|e| {
            panic!(
                "status {}: {e}: {:?}",
                raw.status,
                String::from_utf8_lossy(&raw.body)
            )
        });
        (
            raw.status,
            support_protocol::decode(&plain).expect("reply decodes"),
        )
    }

    pub fn admin_body(&self, key: &StaticKeypair, call: &AdminCall) -> (ClientCall, Vec<u8>) {
        let bytes = support_protocol::encode(call).expect("encodes");
        ClientCall::start(Api::Admin, key, &self.server, seed(), &bytes).expect("channel starts")
    }

    pub fn admin(&self, key: &StaticKeypair, call: &AdminCall) -> (u16, AdminReply) {
        let (cc, body) = self.admin_body(key, call);
        let raw = post(&self.url, "/v1/admin", &body);
        let plain = cc.finish(&raw.body).unwrap_or_else(|e| {
            panic!(
                "status {}: {e}: {:?}",
                raw.status,
                String::from_utf8_lossy(&raw.body)
            )
        });
        (
            raw.status,
            support_protocol::decode(&plain).expect("reply decodes"),
        )
    }

    pub fn admin_req(&self, key: &StaticKeypair, req: AdminRequest) -> (u16, AdminReply) {
        self.admin(
            key,
            &AdminCall {
                request_id: rid(),
                request: req,
            },
        )
    }

    pub fn device_req(&self, key: &StaticKeypair, req: DeviceRequest) -> (u16, DeviceReply) {
        self.device(
            key,
            &DeviceCall {
                request_id: rid(),
                request: req,
            },
        )
    }
}

pub fn text<const N: usize>(s: &str) -> BoundedString<N> {
    BoundedString::new(s).expect("fits")
}

/// One device with its tunnel keys and request.
pub struct Device {
    pub keys: DeviceTunnelKeys,
    pub request: TunnelRequest,
}

impl Device {
    pub fn new() -> Device {
        let keys = DeviceTunnelKeys::from_seed(seed());
        let facts = DeviceFacts {
            hostname: text("amplipi"),
            model: text("AmpliPi"),
            firmware: text("0.4.7"),
            agent_version: text("0.1.0"),
        };
        let request = TunnelRequest::new(
            &keys,
            facts,
            3600,
            BoundedVec::try_from(&[22u16][..]).expect("fits"),
            text("help"),
        );
        Device { keys, request }
    }

    pub fn id(&self) -> TunnelId {
        self.keys.tunnel_id()
    }

    pub fn cred(&self) -> StaticKeypair {
        self.keys.credential()
    }

    pub fn create(&self, c: &Client) -> (u16, DeviceReply) {
        c.device_req(
            &self.cred(),
            DeviceRequest::Create(Box::new(self.request.clone())),
        )
    }

    pub fn poll(&self, c: &Client, known: TunnelState, wait: u16) -> (u16, DeviceReply) {
        c.device_req(
            &self.cred(),
            DeviceRequest::Poll(PollRequest {
                tunnel_id: self.id(),
                known,
                wait_secs: wait,
            }),
        )
    }
}

/// A support CA with one certified approver.
pub struct Approvers {
    pub ca: SupportCa,
    pub key: SigningSeed,
    pub cert: ApproverCertificate,
}

impl Approvers {
    pub fn new() -> Approvers {
        let ca = SupportCa(SigningSeed::new(seed()));
        let key = SigningSeed::new(seed());
        let cert = ca.certify(
            text("alice"),
            key.public(),
            Role::Approver,
            1,
            0,
            u64::MAX / 2,
        );
        Approvers { ca, key, cert }
    }

    /// What `support-admin approve` would post: a sealed, signed approval.
    pub fn approval(&self, d: &Device, seq: u32) -> SealedApproval {
        let admin = AdminTunnelKeys::from_seed(seed());
        let (ct, _) =
            support_protocol::kem::encapsulate(&d.request.body.kem.0, &admin.kem_randomness())
                .expect("kem");
        let contents = ApprovalContents {
            relay: RelayEndpoint::V4([127, 0, 0, 1], 51820),
            admin_wireguard: FixedBytes(admin.wireguard().public),
            admin_ssh: FixedBytes(admin.ssh_public()),
            addresses: TunnelAddresses {
                device: [10, 77, 0, 2],
                admin: [10, 77, 0, 3],
                prefix_len: 28,
            },
            kem_ciphertext: FixedBytes(ct),
            duration_secs: 600,
            ports: BoundedVec::try_from(&[22u16][..]).expect("fits"),
            issued_at: 1_800_000_000,
        };
        seal_approval(
            &contents,
            d.id(),
            &d.request.device_public_keys(),
            ApprovalSeq(seq),
            &d.keys.one_time_secret(),
            admin.box_salt(),
            &Approver {
                key: &self.key,
                certificate: &self.cert,
            },
        )
    }
}

pub fn approve_req(d: &Device, expected: Option<u32>, approval: SealedApproval) -> AdminRequest {
    AdminRequest::Approve(Box::new(ApproveRequest {
        tunnel_id: d.id(),
        expected: expected.map(ApprovalSeq),
        approval,
    }))
}

pub fn stop_req(id: TunnelId) -> AdminRequest {
    AdminRequest::Stop(StopRequest {
        tunnel_id: id,
        note: text("done"),
    })
}

pub fn list_req() -> AdminRequest {
    AdminRequest::List(ListQuery {
        state: None,
        after: None,
        limit: 100,
    })
}

pub fn ok_device(r: (u16, DeviceReply)) -> DeviceResponse {
    assert_eq!(r.0, 200, "{:?}", r.1);
    r.1.result.expect("ok")
}

pub fn ok_admin(r: (u16, AdminReply)) -> AdminResponse {
    assert_eq!(r.0, 200, "{:?}", r.1);
    r.1.result.expect("ok")
}

pub fn admin_key() -> StaticKeypair {
    StaticKeypair::from_secret(seed())
}

pub fn data_dir(s: &Server) -> PathBuf {
    s.data().to_path_buf()
}
