//! Hub providers: where the tunnel's relay runs. The interface is small on
//! purpose (launch, delete, list by label), so another cloud fits in one file.
//! Nothing a provider is given is secret: the relay needs only the two
//! WireGuard public keys (DESIGN invariant 4).

mod credentials;
pub mod gcp;
pub mod local;

use std::net::SocketAddr;

use support_protocol::TunnelId;

/// What a hub is launched for.
pub struct HubSpec {
    /// The tunnel (its label).
    pub tunnel_id: TunnelId,
    /// The device's WireGuard public key.
    pub device_key: [u8; 32],
    /// The admin's WireGuard public key.
    pub admin_key: [u8; 32],
    /// Seconds until the hub ends itself (the tunnel's time plus the wait to connect).
    pub lifetime_secs: u64,
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
    /// "local", "gcp".
    fn name(&self) -> &'static str;
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
