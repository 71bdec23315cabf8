//! A real control plane (the built binary) on loopback with its store in a
//! temp dir, and a client that speaks the real control channel over HTTP
//! to it, or (`in_process`) to the routes and service in this process.
//!
//! Every server here keeps its store where `SUPPORT_TEST_STORE` says:
//! unset (or `redb`), store.redb in its data dir; `postgres`, a database of
//! its own in the cluster at `SUPPORT_TEST_POSTGRES` (scripts/test starts
//! one with scripts/pg-scratch and runs the whole suite both ways).
#![allow(dead_code)]

pub mod in_process;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support_protocol::codec::Message;

use support_protocol::approval_box::SealedApproval;
use support_protocol::audit::AuditAction;
use support_protocol::bounded::FixedBytes;
use support_protocol::bounded::{BoundedString, BoundedVec};
use support_protocol::connected_report::ConnectedReport;
use support_protocol::control_channel::{Api, ClientCall, StaticKeypair};
use support_protocol::fixtures::{self, Terms};
use support_protocol::messages::admin::{ApproveRequest, AuditQuery, ListQuery, StopRequest};
use support_protocol::messages::device::ConnectedNotice;
use support_protocol::messages::device::PollRequest;
use support_protocol::messages::{
    AdminCall, AdminReply, AdminRequest, AdminResponse, DeviceCall, DeviceFacts, DeviceReply,
    DeviceRequest, DeviceResponse, StopReason, TunnelRequest,
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
    /// The server's stdout, kept open: a line it prints later (`metrics on
    /// ADDR`) must not meet a closed pipe.
    pub stdout: Option<BufReader<std::process::ChildStdout>>,
    /// The PostgreSQL store's URL, or None for store.redb in `dir`.
    pub store: Option<String>,
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
        let store = postgres::store_for_test();
        Self::start_on(dir, store, extra)
    }

    /// A server on this data dir and store (a second replica shares one).
    pub fn start_on(dir: tempfile::TempDir, store: Option<String>, extra: &[&str]) -> Server {
        if let Some(url) = &store {
            postgres::register(dir.path(), url);
        }
        let mut s = Server {
            dir,
            child: None,
            url: String::new(),
            public: [0; 32],
            extra: extra.iter().map(|s| s.to_string()).collect(),
            stdout: None,
            store,
        };
        s.launch();
        s
    }

    /// Rewrites audit record `seq` in the store, as an attacker with
    /// access to it would.
    pub fn tamper_audit_record(&self, seq: u64) {
        match &self.store {
            Some(url) => support_control_plane::store::postgres::PgStore::open(url)
                .expect("opens")
                .tamper_audit_record(seq),
            None => support_control_plane::store::redb_store::tamper_audit_record(
                &self.data().join("store.redb"),
                seq,
            ),
        }
        .expect("tampers");
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
        if let Some(url) = &self.store {
            cmd.arg("--store").arg(url);
        }
        let mut child = cmd.spawn().expect("server starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reads the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        self.url = format!("http://{addr}");
        self.child = Some(child);
        self.stdout = Some(stdout);
        self.public = self.public_keys()[0];
    }

    pub fn public_keys(&self) -> Vec<[u8; 32]> {
        let out = cli_ok(&["public-key", "--data", path_str(self.data())]);
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
        cli_ok(&[
            "admins",
            "add",
            "--data",
            path_str(self.data()),
            name,
            &hex::encode(key.public),
            "--role",
            role,
        ]);
    }

    pub fn client(&self) -> Client {
        Client::http(&self.url, self.public)
    }

    /// A server with "alice" enrolled as an approver, a client, and alice's key.
    pub fn with_approver(extra: &[&str]) -> (Server, Client, StaticKeypair) {
        let server = Server::start(extra);
        let admin = admin_key();
        server.enroll("alice", &admin, "approver");
        let c = server.client();
        (server, c, admin)
    }

    /// The Prometheus text at `/metrics`.
    pub fn metrics(&self) -> String {
        String::from_utf8_lossy(&get(&self.url, "/metrics").body).into_owned()
    }

    /// Waits until `/metrics` shows `n` long-polls waiting.
    pub fn wait_for_long_polls(&self, n: usize) {
        let line = format!("support_cp_long_polls_waiting {n}\n");
        wait_for(&format!("{n} long-polls waiting"), || {
            self.metrics().contains(&line)
        });
    }
}

/// Polls `done` until it holds; panics after 20 s with `what`.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
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

/// Runs `serve` on `data` (with `store`, or with no store setting at all)
/// and waits for it to exit; panics if it serves instead. Returns its
/// stderr.
pub fn serve_refused(data: &Path, store: Option<&str>) -> String {
    use std::io::Read;
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("SUPPORT_CP_LOG", "warn")
        .env_remove("SUPPORT_CP_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(url) = store {
        cmd.args(["--store", url]);
    }
    let mut child = cmd.spawn().expect("server starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the control plane kept running where it should have refused to serve");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("reads");
    assert!(!status.success(), "{stderr}");
    stderr
}

/// Runs the CLI; a command on the data dir of a server with a PostgreSQL
/// store is pointed at that store, as its operator would point it.
pub fn cli(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("SUPPORT_CP_LOG", "warn");
    let data = args
        .windows(2)
        .find(|w| w[0] == "--data")
        .map(|w| Path::new(w[1]));
    if let Some(url) = data.and_then(postgres::registered) {
        cmd.env("SUPPORT_CP_STORE", url);
    }
    cmd.output().expect("cli runs")
}

/// Runs the CLI and checks that it succeeded.
pub fn cli_ok(args: &[&str]) -> std::process::Output {
    let out = cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An HTTP response: status and body.
pub struct Raw {
    pub status: u16,
    pub body: Vec<u8>,
}

pub fn post(url: &str, path: &str, body: &[u8]) -> Raw {
    send(
        minreq::post(format!("{url}{path}"))
            .with_body(body.to_vec())
            .with_timeout(60),
    )
}

pub fn get(url: &str, path: &str) -> Raw {
    send(minreq::get(format!("{url}{path}")).with_timeout(30))
}

fn send(request: minreq::Request) -> Raw {
    let r = request.send().expect("HTTP request");
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

/// A control-channel client: over HTTP to `url`, or to an in-process
/// control plane's routes.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    pub server: [u8; 32],
    pub in_process: Option<Arc<in_process::InProcess>>,
}

impl Client {
    /// A client of the server at `url` that pins `server`.
    pub fn http(url: &str, server: [u8; 32]) -> Client {
        Client {
            url: url.to_string(),
            server,
            in_process: None,
        }
    }

    /// Posts `body` to `path`, over HTTP or in process.
    pub fn post(&self, path: &str, body: &[u8]) -> Raw {
        match &self.in_process {
            Some(p) => p.post(path, body),
            None => post(&self.url, path, body),
        }
    }

    /// Builds the HTTP body of a call (to post, or to replay).
    fn body<C: Message>(&self, api: Api, key: &StaticKeypair, call: &C) -> (ClientCall, Vec<u8>) {
        let bytes = support_protocol::encode(call).expect("encodes");
        ClientCall::start(api, key, &self.server, seed(), &bytes).expect("channel starts")
    }

    /// Posts a call and opens its answer.
    fn call<C: Message, R: Message>(
        &self,
        api: Api,
        path: &str,
        key: &StaticKeypair,
        call: &C,
    ) -> (u16, R) {
        let (cc, body) = self.body(api, key, call);
        let raw = self.post(path, &body);
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

    /// Builds the HTTP body of a device call (to post, or to replay).
    pub fn device_body(&self, key: &StaticKeypair, call: &DeviceCall) -> (ClientCall, Vec<u8>) {
        self.body(Api::Device, key, call)
    }

    pub fn device(&self, key: &StaticKeypair, call: &DeviceCall) -> (u16, DeviceReply) {
        self.call(Api::Device, "/v1/device", key, call)
    }

    pub fn admin_body(&self, key: &StaticKeypair, call: &AdminCall) -> (ClientCall, Vec<u8>) {
        self.body(Api::Admin, key, call)
    }

    pub fn admin(&self, key: &StaticKeypair, call: &AdminCall) -> (u16, AdminReply) {
        self.call(Api::Admin, "/v1/admin", key, call)
    }

    pub fn admin_req(&self, key: &StaticKeypair, req: AdminRequest) -> (u16, AdminReply) {
        self.admin(key, &admin_call(req))
    }

    /// The actions of the audit records about tunnel `id`, oldest first.
    pub fn audit_actions(&self, admin: &StaticKeypair, id: TunnelId) -> Vec<AuditAction> {
        let query = AuditQuery {
            tunnel_id: Some(id),
            after_seq: 0,
            limit: 100,
        };
        match ok_admin(self.admin_req(admin, AdminRequest::Audit(query))) {
            AdminResponse::Audit(r) => r.iter().map(|r| r.entry.action.clone()).collect(),
            other => panic!("{other:?}"),
        }
    }

    pub fn device_req(&self, key: &StaticKeypair, req: DeviceRequest) -> (u16, DeviceReply) {
        self.device(key, &device_call(req))
    }
}

/// The audit of a tunnel requested, approved (1), connected and stopped by an admin.
pub fn the_whole_story() -> Vec<AuditAction> {
    vec![
        AuditAction::Requested,
        AuditAction::Approved(ApprovalSeq(1)),
        AuditAction::Connected(ApprovalSeq(1)),
        AuditAction::Stopped(StopReason::Admin),
    ]
}

/// `request` as a device call with a fresh request id.
pub fn device_call(request: DeviceRequest) -> DeviceCall {
    DeviceCall {
        request_id: rid(),
        request,
    }
}

/// `request` as an admin call with a fresh request id.
pub fn admin_call(request: AdminRequest) -> AdminCall {
    AdminCall {
        request_id: rid(),
        request,
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

    pub fn create_req(&self) -> DeviceRequest {
        DeviceRequest::Create(Box::new(self.request.clone()))
    }

    pub fn create(&self, c: &Client) -> (u16, DeviceReply) {
        c.device_req(&self.cred(), self.create_req())
    }

    /// The HTTP body of this device's create call (to post, or to replay).
    pub fn create_body(&self, c: &Client) -> Vec<u8> {
        c.device_body(&self.cred(), &device_call(self.create_req()))
            .1
    }

    /// "Connected with approval `seq`", with the sealed report naming the
    /// box (by its hash) the device accepted.
    pub fn connected_req(&self, accepted_box: [u8; 32], seq: u32) -> DeviceRequest {
        let report = ConnectedReport {
            accepted_box: FixedBytes(accepted_box),
            host_keys: BoundedVec::empty(),
        }
        .seal(
            self.id(),
            ApprovalSeq(seq),
            &self.keys.one_time_secret(),
            seed(),
        )
        .expect("fits");
        DeviceRequest::Connected(ConnectedNotice {
            tunnel_id: self.id(),
            approval_seq: ApprovalSeq(seq),
            report,
        })
    }

    /// A long-poll (`known`, up to 25 s) on another thread: its answer and
    /// how long it took.
    pub fn poll_in_background(
        &self,
        c: &Client,
        known: TunnelState,
    ) -> std::thread::JoinHandle<(Duration, (u16, DeviceReply))> {
        let (c, cred, id) = (c.clone(), self.cred(), self.id());
        std::thread::spawn(move || {
            let start = Instant::now();
            let poll = PollRequest {
                tunnel_id: id,
                known,
                wait_secs: 25,
            };
            let r = c.device_req(&cred, DeviceRequest::Poll(poll));
            (start.elapsed(), r)
        })
    }

    /// A new device whose request `c` accepted.
    pub fn requested(c: &Client) -> Device {
        let d = Device::new();
        match ok_device(d.create(c)) {
            DeviceResponse::Created { tunnel_id, .. } => assert_eq!(tunnel_id, d.id()),
            other => panic!("{other:?}"),
        }
        d
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

/// A support CA with one certified approver, from random seeds (the
/// protocol's shared fixture).
pub struct Approvers(pub fixtures::Approvers);

impl Approvers {
    pub fn new() -> Approvers {
        Approvers(fixtures::Approvers::new(
            seed(),
            seed(),
            "alice",
            0,
            u64::MAX / 2,
        ))
    }

    /// What `support-admin approve` would post: a sealed, signed approval.
    pub fn approval(&self, d: &Device, seq: u32) -> SealedApproval {
        let terms = Terms {
            duration_secs: 600,
            ..Terms::new(1_800_000_000)
        };
        let admin = AdminTunnelKeys::from_seed(seed());
        self.0.approve(&d.keys, &admin, &terms, ApprovalSeq(seq))
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
