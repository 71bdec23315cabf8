//! Hub providers: where the tunnel's relay runs. The interface is small on
//! purpose (launch, delete, list by label), so another cloud fits in one file.
//! Nothing a provider is given is secret: the relay needs only the two
//! WireGuard public keys (DESIGN invariant 4).

mod credentials;
pub mod gcp;
pub mod local;

use std::net::SocketAddr;

use support_protocol::request_tag::VerifiedRequest;
use support_protocol::TunnelId;

/// What a hub is launched for.
///
/// Made only from a [`VerifiedRequest`] ([`HubSpec::new`]), so
/// [`Provider::launch`] cannot be reached with a request whose tag was not
/// checked: a hub costs money and relays for the device key it is given, and
/// a control plane that swapped that key must get no hub (DESIGN: the admin
/// verifies the request before launching anything).
pub struct HubSpec {
    tunnel_id: TunnelId,
    device_key: [u8; 32],
    admin_key: [u8; 32],
    lifetime_secs: u64,
}

impl HubSpec {
    /// The hub of the verified `request`'s tunnel, relaying between its
    /// device key and `admin_key`, ending itself after `lifetime_secs`.
    pub fn new(request: &VerifiedRequest, admin_key: [u8; 32], lifetime_secs: u64) -> HubSpec {
        HubSpec {
            tunnel_id: request.tunnel_id(),
            device_key: request.body().wireguard.0,
            admin_key,
            lifetime_secs,
        }
    }

    /// The tunnel (the hub's label).
    pub fn tunnel_id(&self) -> TunnelId {
        self.tunnel_id
    }

    /// The device's WireGuard public key, from the verified request.
    pub fn device_key(&self) -> [u8; 32] {
        self.device_key
    }

    /// The admin's WireGuard public key.
    pub fn admin_key(&self) -> [u8; 32] {
        self.admin_key
    }

    /// Seconds until the hub ends itself (the tunnel's time plus the wait to connect).
    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }
}

/// A launched hub.
pub struct Hub {
    /// The relay's public UDP address.
    pub endpoint: SocketAddr,
    /// What `delete` needs.
    pub handle: String,
}

/// A place to run hubs.
pub trait Provider {
    /// Which provider this is.
    fn kind(&self) -> crate::records::ProviderKind;
    /// "local", "gcp".
    fn name(&self) -> &'static str {
        self.kind().name()
    }
    /// Checks, before anything is spent, that a hub could be launched
    /// (binary, credentials, the firewall rule); says where it would run.
    fn preflight(&self) -> Result<String, String>;
    /// Starts a hub; `progress` gets short status lines while it boots.
    fn launch(&self, spec: &HubSpec, progress: &mut dyn FnMut(&str)) -> Result<Hub, String>;
    /// Deletes a hub (idempotent: a hub already gone is fine).
    fn delete(&self, handle: &str) -> Result<(), String>;
    /// Every hub this provider runs, with its tunnel label.
    fn list(&self) -> Result<Vec<(TunnelId, String)>, String>;
}

/// Starts `cmd` in the background (its own process group, so a Ctrl-C in
/// this terminal does not end it; stdin closed, stdout a pipe) and waits up
/// to `timeout` for the first line it prints: how a relay says where it
/// listens and a session that it is ready. `None` when none came in time.
pub(crate) fn spawn_and_read_line(
    cmd: &mut std::process::Command,
    timeout: std::time::Duration,
) -> Result<(std::process::Child, Option<String>), String> {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    Ok((child, rx.recv_timeout(timeout).ok()))
}

/// Standard base64 (the relay's key format, as `wg` prints keys).
pub fn b64(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// An HTTP answer's body as JSON (`Null` when it is not JSON), reading at
/// most `limit` bytes of it.
pub(crate) fn json_body(
    resp: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<serde_json::Value, String> {
    use std::io::Read;
    let mut text = String::new();
    resp.body_mut()
        .as_reader()
        .take(limit)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}
