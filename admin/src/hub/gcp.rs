//! The GCP provider: the Compute Engine REST API (instances insert, get,
//! list by label, delete; a firewall rule for the relay's UDP port).
//!
//! The VM is Debian; its `startup-script` fetches the relay binary from an
//! operator-configured URL, checks its sha256, and runs it under systemd,
//! hardened. The VM has a maximum run duration with delete on termination,
//! so it goes away even if nobody runs `gc`. Its metadata holds only public
//! keys (DESIGN invariant 4).
//!
//! Credentials: `GOOGLE_APPLICATION_CREDENTIALS` (a service-account JSON,
//! exchanged for an OAuth token with an RS256-signed JWT), else
//! `gcloud auth print-access-token`.

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use support_protocol::TunnelId;

use super::{b64, Hub, HubSpec, Provider};

const LABEL: &str = "support-tunnel";
const TAG: &str = "support-hub";
const SCOPE: &str = "https://www.googleapis.com/auth/compute";

/// `[gcp]` in admin.toml.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct GcpSettings {
    /// The project.
    pub project: String,
    /// The zone, e.g. europe-west1-b.
    pub zone: String,
    /// Where VMs fetch the relay binary (https).
    pub relay_url: String,
    /// Its sha256 (hex).
    pub relay_sha256: String,
    /// Machine type [default: e2-micro].
    pub machine_type: Option<String>,
    /// Boot image [default: Debian 12].
    pub image: Option<String>,
    /// Network [default: global/networks/default].
    pub network: Option<String>,
    /// The relay's UDP port [default: 51820].
    pub port: Option<u16>,
    /// The API base [default: https://compute.googleapis.com] (tests point it at a fake).
    pub api: Option<String>,
}

/// Runs hubs on Compute Engine.
pub struct Gcp {
    s: GcpSettings,
    agent: ureq::Agent,
    /// One token per run (they last an hour).
    token: std::sync::Mutex<Option<String>>,
}

impl Gcp {
    /// Validates the settings (they end up in a shell script on the VM).
    pub fn new(s: GcpSettings) -> Result<Gcp, String> {
        let safe = |v: &str| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:~%?&=+@".contains(&b))
        };
        if !safe(&s.relay_url) || !s.relay_url.starts_with("https://") {
            return Err("gcp.relay_url must be an https:// URL without quotes or spaces".into());
        }
        if s.relay_sha256.len() != 64 || !s.relay_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("gcp.relay_sha256 must be 64 hex digits (sha256sum of the relay)".into());
        }
        for (name, v) in [("project", &s.project), ("zone", &s.zone)] {
            if !safe(v) || v.contains('/') {
                return Err(format!("gcp.{name} '{v}' is not a valid name"));
            }
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Gcp {
            s,
            agent,
            token: std::sync::Mutex::new(None),
        })
    }

    fn api(&self) -> String {
        self.s
            .api
            .clone()
            .unwrap_or_else(|| "https://compute.googleapis.com".into())
            .trim_end_matches('/')
            .to_string()
    }

    fn zone_url(&self) -> String {
        format!(
            "{}/compute/v1/projects/{}/zones/{}",
            self.api(),
            self.s.project,
            self.s.zone
        )
    }

    fn port(&self) -> u16 {
        self.s.port.unwrap_or(51820)
    }

    fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let auth = {
            let mut cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
            if cached.is_none() {
                *cached = Some(token(&self.agent)?);
            }
            format!("Bearer {}", cached.as_deref().unwrap_or_default())
        };
        let resp = match (method, body) {
            ("POST", Some(b)) => self
                .agent
                .post(url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(b.to_string().as_bytes()),
            ("DELETE", _) => self.agent.delete(url).header("authorization", &auth).call(),
            _ => self.agent.get(url).header("authorization", &auth).call(),
        };
        let mut resp = resp.map_err(|e| format!("the Compute Engine API is unreachable: {e}"))?;
        let status = resp.status().as_u16();
        let mut text = String::new();
        resp.body_mut()
            .as_reader()
            .take(4 << 20)
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, v))
    }

    fn ensure_firewall(&self) -> Result<(), String> {
        let base = format!(
            "{}/compute/v1/projects/{}/global/firewalls",
            self.api(),
            self.s.project
        );
        let name = format!("{TAG}-udp-{}", self.port());
        let (status, _) = self.request("GET", &format!("{base}/{name}"), None)?;
        if status == 200 {
            return Ok(());
        }
        let body = json!({
            "name": name,
            "network": self.network(),
            "direction": "INGRESS",
            "targetTags": [TAG],
            "allowed": [{"IPProtocol": "udp", "ports": [self.port().to_string()]}],
            "sourceRanges": ["0.0.0.0/0"],
            "description": "support-tunnel hubs: the relay's UDP port only",
        });
        let (status, v) = self.request("POST", &base, Some(&body))?;
        if status == 200 || status == 409 {
            Ok(())
        } else {
            Err(api_error("creating the firewall rule", status, &v))
        }
    }

    fn network(&self) -> String {
        self.s
            .network
            .clone()
            .unwrap_or_else(|| "global/networks/default".into())
    }

    /// The instance body: everything in it is public.
    pub fn instance_body(&self, spec: &HubSpec) -> Value {
        let name = instance_name(spec.tunnel_id);
        json!({
            "name": name,
            "machineType": format!("zones/{}/machineTypes/{}", self.s.zone,
                self.s.machine_type.clone().unwrap_or_else(|| "e2-micro".into())),
            "labels": { LABEL: spec.tunnel_id.to_string() },
            "tags": { "items": [TAG] },
            "disks": [{
                "boot": true,
                "autoDelete": true,
                "initializeParams": {
                    "sourceImage": self.s.image.clone().unwrap_or_else(||
                        "projects/debian-cloud/global/images/family/debian-12".into()),
                },
            }],
            "networkInterfaces": [{
                "network": self.network(),
                "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}],
            }],
            "scheduling": {
                "provisioningModel": "STANDARD",
                "instanceTerminationAction": "DELETE",
                "maxRunDuration": {"seconds": spec.lifetime_secs.to_string()},
                "automaticRestart": false,
                "onHostMaintenance": "TERMINATE",
            },
            "metadata": {"items": [
                {"key": "startup-script", "value": self.startup_script(spec)},
            ]},
        })
    }

    /// Fetch, verify, install and run the relay, hardened, for the lifetime.
    pub fn startup_script(&self, spec: &HubSpec) -> String {
        format!(
            r#"#!/bin/sh
# support-tunnel hub for tunnel {id}: a blind UDP relay. No secrets here:
# the two keys below are WireGuard PUBLIC keys.
set -eu
tmp=$(mktemp)
curl -fsSL --retry 5 --proto '=https' -o "$tmp" '{url}'
echo '{sha}  '"$tmp" | sha256sum -c -
install -m 0755 "$tmp" /usr/local/bin/support-relay
rm -f "$tmp"
cat > /etc/systemd/system/support-relay.service <<'UNIT'
[Unit]
Description=support-tunnel relay for tunnel {id}
[Service]
ExecStart=/usr/local/bin/support-relay --device-key {dk} --admin-key {ak} --lifetime {life} --listen 0.0.0.0:{port} --tunnel {id}
ExecStopPost=/usr/bin/systemctl poweroff
DynamicUser=yes
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallFilter=@system-service
CapabilityBoundingSet=
AmbientCapabilities=
UNIT
systemctl daemon-reload
systemctl start support-relay
"#,
            id = spec.tunnel_id,
            url = self.s.relay_url,
            sha = self.s.relay_sha256.to_ascii_lowercase(),
            dk = b64(&spec.device_key),
            ak = b64(&spec.admin_key),
            life = spec.lifetime_secs,
            port = self.port(),
        )
    }
}

/// `support-hub-<id>`.
pub fn instance_name(id: TunnelId) -> String {
    format!("{TAG}-{id}")
}

fn api_error(what: &str, status: u16, v: &Value) -> String {
    let msg = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    format!("{what}: the Compute Engine API answered {status}: {msg}")
}

impl Provider for Gcp {
    fn name(&self) -> &'static str {
        "gcp"
    }

    fn launch(&self, spec: &HubSpec, progress: &mut dyn FnMut(&str)) -> Result<Hub, String> {
        progress("checking the hub firewall rule");
        self.ensure_firewall()?;
        progress("creating the hub VM");
        let (status, v) = self.request(
            "POST",
            &format!("{}/instances", self.zone_url()),
            Some(&self.instance_body(spec)),
        )?;
        if status != 200 {
            return Err(api_error("creating the hub VM", status, &v));
        }
        let name = instance_name(spec.tunnel_id);
        let url = format!("{}/instances/{name}", self.zone_url());
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            progress("waiting for the hub VM to run");
            let (status, v) = self.request("GET", &url, None)?;
            if status != 200 && status != 404 {
                return Err(api_error("reading the hub VM", status, &v));
            }
            let running = v.get("status").and_then(Value::as_str) == Some("RUNNING");
            let ip = v
                .pointer("/networkInterfaces/0/accessConfigs/0/natIP")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<std::net::IpAddr>().ok());
            if let (true, Some(ip)) = (running, ip) {
                return Ok(Hub {
                    endpoint: SocketAddr::new(ip, self.port()),
                    handle: name,
                });
            }
            if Instant::now() > deadline {
                let _ = self.delete(&name);
                return Err("the hub VM did not start within 180 s; it was deleted".into());
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    fn delete(&self, handle: &str) -> Result<(), String> {
        let (status, v) = self.request(
            "DELETE",
            &format!("{}/instances/{handle}", self.zone_url()),
            None,
        )?;
        match status {
            200 | 404 => Ok(()),
            _ => Err(api_error("deleting the hub VM", status, &v)),
        }
    }

    fn list(&self) -> Result<Vec<(TunnelId, String)>, String> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut url = format!("{}/instances?filter=labels.{LABEL}%3A*", self.zone_url());
            if let Some(p) = &page {
                url.push_str(&format!("&pageToken={p}"));
            }
            let (status, v) = self.request("GET", &url, None)?;
            if status != 200 {
                return Err(api_error("listing hub VMs", status, &v));
            }
            for item in v
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let label = item
                    .pointer(&format!("/labels/{LABEL}"))
                    .and_then(Value::as_str);
                let name = item.get("name").and_then(Value::as_str);
                if let (Some(l), Some(n)) = (label, name) {
                    if let Ok(id) = l.parse() {
                        out.push((id, n.to_string()));
                    }
                }
            }
            match v.get("nextPageToken").and_then(Value::as_str) {
                Some(t) if page.as_deref() != Some(t) => page = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }
}

/// An OAuth access token from the standard places.
fn token(agent: &ureq::Agent) -> Result<String, String> {
    if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        return service_account_token(agent, std::path::Path::new(&path));
    }
    let out = std::process::Command::new("gcloud")
        .args(["auth", "print-access-token"])
        .output()
        .map_err(|_| "no GCP credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service-account JSON, or log in with gcloud".to_string())?;
    if !out.status.success() {
        return Err(format!(
            "gcloud auth print-access-token failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    token_uri: Option<String>,
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// The JWT-bearer grant (RFC 7523) with the service account's RSA key.
fn service_account_token(agent: &ureq::Agent, path: &std::path::Path) -> Result<String, String> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let sa: ServiceAccount = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a service-account key: {e}", path.display()))?;
    let der: Vec<u8> = sa
        .private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .pipe(|b| base64::engine::general_purpose::STANDARD.decode(b))
        .map_err(|_| "the service account's private key is not PEM".to_string())?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| format!("the service account's private key is unusable: {e}"))?;
    let aud = sa
        .token_uri
        .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into());
    let now = crate::ca::now();
    let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = b64url(
        json!({"iss": sa.client_email, "scope": SCOPE, "aud": aud, "iat": now, "exp": now + 3600})
            .to_string()
            .as_bytes(),
    );
    let signing_input = format!("{header}.{claims}");
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "signing the token request failed".to_string())?;
    let jwt = format!("{signing_input}.{}", b64url(&sig));
    let form =
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}");
    let mut resp = agent
        .post(&aud)
        .header("content-type", "application/x-www-form-urlencoded")
        .send(form.as_bytes())
        .map_err(|e| format!("the token endpoint is unreachable: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = String::new();
    resp.body_mut()
        .as_reader()
        .take(1 << 20)
        .read_to_string(&mut body)
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v.get("access_token")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| format!("the token endpoint answered {status} without a token"))
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}
