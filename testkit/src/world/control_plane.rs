//! The control-plane binary on a fixed loopback port, its CLI, and admin
//! calls over its Noise channel.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use support_protocol::control_channel::{Api, ClientCall, StaticKeypair};
use support_protocol::messages::admin::TunnelDetail;
use support_protocol::messages::{AdminCall, AdminReply, AdminRequest, AdminResponse};
use support_protocol::state::TunnelState;
use support_protocol::{RequestId, TunnelId};

use super::{free_tcp_port, random32, sibling_bin, tempdir};

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
