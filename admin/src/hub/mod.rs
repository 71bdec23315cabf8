//! Hub providers: where the tunnel's relay runs. The interface is small on
//! purpose (launch, delete, list by label), so another cloud fits in one file.
//! Nothing a provider is given is secret: the relay needs only the two
//! WireGuard public keys (DESIGN invariant 4).

mod credentials;
mod error;
pub mod gcp;
pub mod local;

pub use error::{
    ApiCall, BodyError, CredentialsError, FirewallProblem, GcpSettingsError, HubError, TokenSource,
};

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
    fn preflight(&self) -> Result<String, HubError>;
    /// Starts a hub; `progress` gets short status lines while it boots.
    fn launch(&self, spec: &HubSpec, progress: &mut dyn FnMut(&str)) -> Result<Hub, HubError>;
    /// Deletes a hub (idempotent: a hub already gone is fine).
    fn delete(&self, handle: &str) -> Result<(), HubError>;
    /// Every hub this provider runs, with its tunnel label.
    fn list(&self) -> Result<Vec<(TunnelId, String)>, HubError>;
}

/// Starts `cmd` in the background (its own process group, so a Ctrl-C in
/// this terminal does not end it; stdin closed, stdout a pipe) and waits up
/// to `timeout` for the first line it prints: how a relay says where it
/// listens and a session that it is ready. `None` when none came in time.
pub(crate) fn spawn_and_read_line(
    cmd: &mut std::process::Command,
    timeout: std::time::Duration,
) -> std::io::Result<(std::process::Child, Option<String>)> {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
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

/// An HTTP answer's body as JSON (`Null` when it is not JSON: an error
/// answer may be a proxy's HTML page), refusing one longer than `limit` bytes.
pub(crate) fn json_body(
    resp: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<serde_json::Value, BodyError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(BodyError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A hub for a verified request of tunnel (device seed 1), admin key 2s, 600 s.
    pub(crate) fn spec() -> HubSpec {
        use support_protocol::bounded::{BoundedString, BoundedVec};
        use support_protocol::messages::{DeviceFacts, TunnelRequest};
        let device = support_protocol::tunnel_keys::DeviceTunnelKeys::from_seed([1; 32]);
        let text = |s: &str| BoundedString::new(s).expect("fits");
        let request = TunnelRequest::new(
            &device,
            DeviceFacts {
                hostname: text("h"),
                model: text("m"),
                firmware: text("f"),
                agent_version: BoundedString::new("a").expect("fits"),
            },
            600,
            BoundedVec::try_from(&[22u16][..]).expect("fits"),
            BoundedString::new("").expect("fits"),
        );
        let verified = support_protocol::request_tag::verify(&device.one_time_secret(), &request)
            .expect("the request verifies");
        HubSpec::new(&verified, [2; 32], 600)
    }

    fn answer(body: ureq::Body) -> ureq::http::Response<ureq::Body> {
        ureq::http::Response::builder()
            .status(200)
            .body(body)
            .expect("a response")
    }

    #[test]
    fn a_json_body_is_read_up_to_its_limit() {
        let json = br#"{"a": [1, 2]}"#;
        let mut resp = answer(ureq::Body::builder().data(&json[..]));
        let v = json_body(&mut resp, json.len() as u64).expect("exactly the limit");
        assert_eq!(v, serde_json::json!({"a": [1, 2]}));
        let mut resp = answer(ureq::Body::builder().data(&json[..]));
        assert!(matches!(
            json_body(&mut resp, json.len() as u64 - 1),
            Err(BodyError::TooLarge { limit }) if limit == json.len() as u64 - 1
        ));
    }

    #[test]
    fn a_body_that_is_not_json_is_null_for_the_caller_to_judge() {
        for text in [&b"<html>502 Bad Gateway</html>"[..], b"", b"\xff\xfe"] {
            let mut resp = answer(ureq::Body::builder().data(text));
            assert_eq!(
                json_body(&mut resp, 1 << 10).expect("read"),
                serde_json::Value::Null
            );
        }
    }

    #[test]
    fn a_body_that_breaks_off_is_a_read_error() {
        struct Broken;
        impl std::io::Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::ConnectionReset.into())
            }
        }
        let mut resp = answer(ureq::Body::builder().reader(Broken));
        match json_body(&mut resp, 1 << 10) {
            Err(BodyError::Read(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset)
            }
            other => panic!("{other:?}"),
        }
    }
}
