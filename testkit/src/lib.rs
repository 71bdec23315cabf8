//! Test hosts in network namespaces: each a namespace joined to the host by a
//! veth pair, optionally running a stock wireguard-go interface. Everything
//! is named uniquely per run and removed on drop, also when a test fails.
#![forbid(unsafe_code)]

pub mod hash_transfer;
pub mod http;
pub mod load;
pub mod relay;
pub mod sim_path;
pub mod wan;
pub mod world;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(1);

/// Runs a command; panics with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Panics with a clear message unless the test can create namespaces and run wireguard-go.
pub fn require_root_and_wireguard() {
    let uid = sh(&["id", "-u"]);
    assert_eq!(
        uid, "0",
        "this test creates network namespaces: run as root (scripts/test does)"
    );
    for tool in ["wireguard-go", "wg", "ip"] {
        assert!(have(tool), "{tool} is missing: run scripts/setup");
    }
}

/// Whether a program is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// A WireGuard key pair from `wg`.
pub struct WgKey {
    /// Private key (base64).
    pub private: String,
    /// Public key (base64).
    pub public: String,
}

/// A fresh key pair from `wg genkey` and `wg pubkey`.
pub fn wg_key() -> WgKey {
    let private = sh(&["wg", "genkey"]);
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wg pubkey");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(private.as_bytes())
        .expect("writes");
    let out = child.wait_with_output().expect("wg pubkey output");
    WgKey {
        private,
        public: String::from_utf8_lossy(&out.stdout).trim().to_string(),
    }
}

/// A namespace linked to the host: host side `10.<net>.<n>.1/30`, namespace side `.2`.
pub struct Host {
    /// The namespace name.
    pub ns: String,
    /// The host side of the veth pair.
    pub host_ip: Ipv4Addr,
    /// The namespace side of the veth pair.
    pub ns_ip: Ipv4Addr,
    veth: String,
    wg: Option<(String, Child)>,
}

impl Host {
    /// Creates the namespace and its link (requires root).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Host {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{}", std::process::id() % 100_000, n);
        let ns = format!("st-{tag}");
        let veth = format!("sth{tag}");
        let peer = format!("stn{tag}");
        let (a, b) = ((std::process::id() % 200) as u8 + 20, (n % 60) as u8 * 4);
        let host_ip = Ipv4Addr::new(10, a, b, 1);
        let ns_ip = Ipv4Addr::new(10, a, b, 2);
        let host = Host {
            ns: ns.clone(),
            host_ip,
            ns_ip,
            veth: veth.clone(),
            wg: None,
        };
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
        ]);
        sh(&["ip", "link", "set", &peer, "netns", &ns]);
        sh(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &veth]);
        sh(&["ip", "link", "set", &veth, "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &peer,
        ]);
        sh(&["ip", "-n", &ns, "link", "set", &peer, "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        host
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        c
    }

    /// Brings up a wireguard-go interface with `key`, address `addr/24`, and
    /// one peer (`peer_key`, reached at `endpoint`, owning `peer_ip/32`),
    /// sending keepalives every second.
    pub fn wireguard(
        &mut self,
        key: &WgKey,
        addr: Ipv4Addr,
        peer_key: &str,
        endpoint: SocketAddr,
        peer_ip: Ipv4Addr,
    ) {
        self.wireguard_with(key, addr, peer_key, Some(endpoint), peer_ip, None);
    }

    /// Like [`Host::wireguard`], with the peer's endpoint optional (without
    /// one this side cannot initiate) and a fixed listen port.
    pub fn wireguard_with(
        &mut self,
        key: &WgKey,
        addr: Ipv4Addr,
        peer_key: &str,
        endpoint: Option<SocketAddr>,
        peer_ip: Ipv4Addr,
        listen_port: Option<u16>,
    ) {
        let iface = format!("wg{}", &self.ns[3..]);
        let sock = format!("/var/run/wireguard/{iface}.sock");
        let child = self
            .exec(&["wireguard-go", "-f", &iface])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wireguard-go starts");
        self.wg = Some((iface.clone(), child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Path::new(&sock).exists() {
            assert!(
                Instant::now() < deadline,
                "wireguard-go did not create {sock}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let keyfile = std::env::temp_dir().join(format!("{iface}.key"));
        std::fs::write(&keyfile, &key.private).expect("writes key");
        let port = listen_port.map(|p| p.to_string());
        let endpoint = endpoint.map(|e| e.to_string());
        let allowed = format!("{peer_ip}/32");
        let mut args = vec![
            "wg",
            "set",
            &iface,
            "private-key",
            keyfile.to_str().unwrap_or_default(),
        ];
        if let Some(p) = &port {
            args.extend(["listen-port", p]);
        }
        args.extend(["peer", peer_key, "allowed-ips", &allowed]);
        if let Some(e) = &endpoint {
            args.extend(["endpoint", e, "persistent-keepalive", "1"]);
        }
        let status = self.exec(&args).status().expect("wg set");
        let _ = std::fs::remove_file(&keyfile);
        assert!(status.success(), "wg set failed");
        sh(&[
            "ip",
            "-n",
            &self.ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &iface,
        ]);
        sh(&["ip", "-n", &self.ns, "link", "set", &iface, "up"]);
    }
}

impl Host {
    /// The wireguard-go interface name, once up.
    pub fn wg_iface(&self) -> Option<String> {
        self.wg.as_ref().map(|(i, _)| i.clone())
    }

    /// The wireguard-go process (`ip netns exec` execs it), once up.
    pub fn wg_pid(&self) -> Option<u32> {
        self.wg.as_ref().map(|(_, c)| c.id())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some((iface, mut child)) = self.wg.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{iface}.sock"));
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .stderr(Stdio::null())
            .status();
    }
}

/// A free UDP port on the host.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("port")
}
