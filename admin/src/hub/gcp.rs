//! The GCP provider: the Compute Engine REST API (instances insert, get,
//! list by label, delete; a firewall rule for the relay's UDP port).
//!
//! The VM is Debian; its `startup-script` fetches the relay binary from an
//! operator-configured URL (the artifacts bucket, read with the hub service
//! account's token), checks its sha256, and runs it under systemd,
//! hardened. The VM has a maximum run duration with delete on termination,
//! so it goes away even if nobody runs `gc`: a relay that ends early is
//! restarted, and the VM is deleted at that deadline or by `stop`/`gc`,
//! whichever comes first. Its metadata holds only public keys (DESIGN
//! invariant 4).
//!
//! The network, the hub firewall rule and the hub service account belong to
//! `infra/` (OpenTofu): the provider only checks that the rule exists. The
//! names below are the ones `infra/` declares (`scripts/check-infra` reads
//! both).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use support_protocol::TunnelId;

use super::credentials;
use super::{b64, Hub, HubSpec, Provider};

/// The label every hub carries, its value the tunnel id (`gc` lists by it).
pub const LABEL: &str = "support-tunnel";
/// The network tag the hub firewall rule targets.
pub const TAG: &str = "support-hub";
/// The relay's UDP port unless `[gcp] port` says otherwise.
pub const DEFAULT_PORT: u16 = 51820;
/// The network `infra/` creates for hubs (not `default`, whose
/// `default-allow-ssh` rule would open SSH on every hub).
pub const DEFAULT_NETWORK: &str = "global/networks/support-tunnel";
/// The subnetwork `infra/` creates in the zone's region.
pub const DEFAULT_SUBNETWORK: &str = "support-hubs";
/// The hub firewall rule's name is this and the port.
pub const FIREWALL_PREFIX: &str = "support-hub-udp-";
/// The hubs' service account: `<id>@<project>.iam.gserviceaccount.com`.
pub const HUB_SERVICE_ACCOUNT_ID: &str = "support-hub";
/// Where a release's relay binary lives in the artifacts bucket.
pub const RELAY_OBJECT: &str = "relay/{version}/support-relay";
/// The only scope a hub's token has: reading the relay binary.
const HUB_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_only";

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
    /// Network [default: global/networks/support-tunnel, from infra/].
    pub network: Option<String>,
    /// Subnetwork [default: regions/<the zone's region>/subnetworks/support-hubs].
    pub subnetwork: Option<String>,
    /// The hubs' service account (default: `support-hub@<project>.iam.gserviceaccount.com`).
    pub service_account: Option<String>,
    /// The relay's UDP port [default: 51820].
    pub port: Option<u16>,
    /// The API base (default: `https://compute.googleapis.com`; tests point it at a fake).
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
        if let Some(object) = s
            .relay_url
            .strip_prefix("https://storage.googleapis.com/")
            .and_then(|rest| rest.split_once('/').map(|(_, object)| object))
        {
            if !is_relay_object(object) {
                return Err(format!(
                    "gcp.relay_url: the object in the artifacts bucket should be {RELAY_OBJECT} \
                     (as scripts/release uploads it and `tofu output admin_toml` prints it)"
                ));
            }
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
        self.s.port.unwrap_or(DEFAULT_PORT)
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
                *cached = Some(credentials::access_token(&self.agent)?);
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
        Ok((status, super::json_body(&mut resp, 4 << 20)?))
    }

    /// The hub firewall rule: `infra/` creates it; engineers need no right
    /// to change firewalls, only to read this one.
    fn check_firewall(&self) -> Result<(), String> {
        let name = self.firewall_name();
        let url = format!(
            "{}/compute/v1/projects/{}/global/firewalls/{name}",
            self.api(),
            self.s.project
        );
        let (status, v) = self.request("GET", &url, None)?;
        match status {
            200 => {}
            404 => {
                return Err(format!(
                    "the hub firewall rule {name} does not exist in project {}: it belongs to the \
                     deployment; run `tofu apply` in infra/ (network.tf creates it, with \
                     relay_port = {})",
                    self.s.project,
                    self.port()
                ))
            }
            _ => {
                return Err(api_error(
                    &format!("reading the firewall rule {name}"),
                    status,
                    &v,
                ))
            }
        }
        match firewall_problem(&v, &self.network(), self.port()) {
            None => Ok(()),
            Some(problem) => Err(format!(
                "the firewall rule {name} {problem}: it was changed outside infra/; run \
                 `tofu apply` there"
            )),
        }
    }

    fn firewall_name(&self) -> String {
        format!("{FIREWALL_PREFIX}{}", self.port())
    }

    fn network(&self) -> String {
        self.s
            .network
            .clone()
            .unwrap_or_else(|| DEFAULT_NETWORK.into())
    }

    fn subnetwork(&self) -> String {
        self.s.subnetwork.clone().unwrap_or_else(|| {
            let region = self
                .s
                .zone
                .rsplit_once('-')
                .map_or(self.s.zone.as_str(), |(r, _)| r);
            format!("regions/{region}/subnetworks/{DEFAULT_SUBNETWORK}")
        })
    }

    fn service_account(&self) -> String {
        self.s.service_account.clone().unwrap_or_else(|| {
            format!(
                "{HUB_SERVICE_ACCOUNT_ID}@{}.iam.gserviceaccount.com",
                self.s.project
            )
        })
    }

    /// The instance body: everything in it is public.
    pub fn instance_body(&self, spec: &HubSpec) -> Value {
        let name = instance_name(spec.tunnel_id());
        json!({
            "name": name,
            "machineType": format!("zones/{}/machineTypes/{}", self.s.zone,
                self.s.machine_type.clone().unwrap_or_else(|| "e2-micro".into())),
            "labels": { LABEL: spec.tunnel_id().to_string() },
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
                "subnetwork": self.subnetwork(),
                "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}],
            }],
            "serviceAccounts": [{
                "email": self.service_account(),
                "scopes": [HUB_SCOPE],
            }],
            "scheduling": {
                "provisioningModel": "STANDARD",
                "instanceTerminationAction": "DELETE",
                "maxRunDuration": {"seconds": spec.lifetime_secs().to_string()},
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
url='{url}'
case "$url" in
https://storage.googleapis.com/*)
  # The artifacts bucket is private: read it as the hub's service account
  # (its only permission). The token goes to Google's storage API only.
  token=$(curl -fsS --retry 5 -H 'Metadata-Flavor: Google' \
    http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token \
    | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p')
  # The header goes through stdin, not the command line (/proc/*/cmdline).
  printf 'Authorization: Bearer %s\n' "$token" |
    curl -fsS --retry 5 --proto '=https' -H @- -o "$tmp" "$url" ;;
*)
  curl -fsSL --retry 5 --proto '=https' -o "$tmp" "$url" ;;
esac
echo '{sha}  '"$tmp" | sha256sum -c -
install -m 0755 "$tmp" /usr/local/bin/support-relay
rm -f "$tmp"
cat > /etc/systemd/system/support-relay.service <<'UNIT'
[Unit]
Description=support-tunnel relay for tunnel {id}
[Service]
ExecStart=/usr/local/bin/support-relay --device-key {dk} --admin-key {ak} --lifetime {life} --listen 0.0.0.0:{port} --tunnel {id}
# A crash restarts it; the VM itself is deleted at its maxRunDuration (the
# same lifetime) or by `support-admin stop`/`gc`, never by the relay, which
# runs as a dynamic user that may not power anything off.
Restart=on-failure
RestartSec=1
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
            id = spec.tunnel_id(),
            url = self.s.relay_url,
            sha = self.s.relay_sha256.to_ascii_lowercase(),
            dk = b64(&spec.device_key()),
            ak = b64(&spec.admin_key()),
            life = spec.lifetime_secs(),
            port = self.port(),
        )
    }
}

/// What keeps the hub firewall rule `rule` (as the API returns it) from
/// admitting devices and engineers to the relay's UDP `port` on hubs in
/// `network`, if anything.
fn firewall_problem(rule: &Value, network: &str, port: u16) -> Option<String> {
    // "global/networks/X", "projects/P/global/networks/X" or a full URL.
    let network_name = |n: &str| {
        n.rsplit_once("/networks/")
            .map(|(_, name)| name.to_string())
    };
    let port_in = |spec: &Value| {
        let spec = spec.as_str().unwrap_or_default();
        match spec.split_once('-') {
            Some((lo, hi)) => {
                lo.parse::<u16>().is_ok_and(|lo| lo <= port)
                    && hi.parse::<u16>().is_ok_and(|hi| port <= hi)
            }
            None => spec.parse::<u16>() == Ok(port),
        }
    };
    let admits_port = rule["allowed"].as_array().is_some_and(|a| {
        a.iter().any(|r| {
            matches!(r["IPProtocol"].as_str(), Some("udp" | "17" | "all"))
                && r["ports"]
                    .as_array()
                    .is_none_or(|p| p.is_empty() || p.iter().any(port_in))
        })
    });
    if rule["direction"].as_str().unwrap_or("INGRESS") != "INGRESS" {
        Some("is not an ingress rule".into())
    } else if rule["disabled"] == true {
        Some("is disabled".into())
    } else if !rule["targetTags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == TAG))
    {
        Some(format!("does not target the tag {TAG}"))
    } else if !admits_port {
        Some(format!("does not admit udp/{port}"))
    } else if network_name(rule["network"].as_str().unwrap_or_default()) != network_name(network)
        || network_name(network).is_none()
    {
        Some(format!("is not on the hubs' network {network}"))
    } else if !rule["sourceRanges"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r == "0.0.0.0/0"))
    {
        Some("does not admit 0.0.0.0/0 (devices and engineers connect from anywhere)".into())
    } else {
        None
    }
}

/// Whether `object` is [`RELAY_OBJECT`] for some version.
fn is_relay_object(object: &str) -> bool {
    let (before, after) = RELAY_OBJECT
        .split_once("{version}")
        .unwrap_or((RELAY_OBJECT, ""));
    object
        .strip_prefix(before)
        .and_then(|rest| rest.strip_suffix(after))
        .is_some_and(|version| !version.is_empty() && !version.contains('/'))
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
    fn kind(&self) -> crate::records::ProviderKind {
        crate::records::ProviderKind::Gcp
    }

    fn preflight(&self) -> Result<String, String> {
        // Needs a token (the credentials work) and the rule infra/ made.
        self.check_firewall()?;
        Ok(format!(
            "a VM in project {} ({}); the hub firewall rule is in place",
            self.s.project, self.s.zone
        ))
    }

    fn launch(&self, spec: &HubSpec, progress: &mut dyn FnMut(&str)) -> Result<Hub, String> {
        progress("creating the hub VM");
        let (status, v) = self.request(
            "POST",
            &format!("{}/instances", self.zone_url()),
            Some(&self.instance_body(spec)),
        )?;
        if status != 200 {
            return Err(api_error("creating the hub VM", status, &v));
        }
        let name = instance_name(spec.tunnel_id());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(relay_url: &str) -> GcpSettings {
        GcpSettings {
            project: "acme".into(),
            zone: "europe-west1-b".into(),
            relay_url: relay_url.into(),
            relay_sha256: "ab".repeat(32),
            machine_type: None,
            image: None,
            network: None,
            subnetwork: None,
            service_account: None,
            port: None,
            api: None,
        }
    }

    fn rule() -> Value {
        json!({
            "name": "support-hub-udp-51820",
            "network": "https://www.googleapis.com/compute/v1/projects/acme/global/networks/support-tunnel",
            "direction": "INGRESS",
            "targetTags": ["support-hub"],
            "allowed": [{"IPProtocol": "udp", "ports": ["51820"]}],
            "sourceRanges": ["0.0.0.0/0"],
            "disabled": false,
        })
    }

    #[test]
    fn the_hub_firewall_rule_must_admit_the_relay_port_to_hubs_from_anywhere() {
        let net = "global/networks/support-tunnel";
        assert_eq!(firewall_problem(&rule(), net, 51820), None);
        assert_eq!(
            firewall_problem(
                &rule(),
                "projects/acme/global/networks/support-tunnel",
                51820
            ),
            None
        );
        let mut range = rule();
        range["allowed"] = json!([{"IPProtocol": "udp", "ports": ["51000-52000"]}]);
        assert_eq!(firewall_problem(&range, net, 51820), None);
        let changed = |pointer: &str, v: Value| {
            let mut r = rule();
            *r.pointer_mut(pointer).expect("field") = v;
            r
        };
        for (r, net, why) in [
            (
                changed("/direction", json!("EGRESS")),
                net,
                "not an ingress rule",
            ),
            (changed("/disabled", json!(true)), net, "disabled"),
            (
                changed("/targetTags", json!(["web"])),
                net,
                "does not target",
            ),
            (
                changed("/allowed/0/ports", json!(["51821"])),
                net,
                "udp/51820",
            ),
            (
                changed("/allowed/0/IPProtocol", json!("tcp")),
                net,
                "udp/51820",
            ),
            (
                changed("/sourceRanges", json!(["10.0.0.0/8"])),
                net,
                "0.0.0.0/0",
            ),
            (rule(), "global/networks/tunnel", "hubs' network"),
            (rule(), "global/networks/default", "hubs' network"),
            (rule(), "support-tunnel", "hubs' network"),
        ] {
            let problem = firewall_problem(&r, net, 51820).unwrap_or_default();
            assert!(problem.contains(why), "{r} on {net}: {problem:?}");
        }
    }

    #[test]
    fn a_relay_in_the_artifacts_bucket_must_be_where_the_release_puts_it() {
        let ok = "https://storage.googleapis.com/acme-support-artifacts/relay/0.2.0/support-relay";
        assert!(Gcp::new(settings(ok)).is_ok());
        for bad in [
            "https://storage.googleapis.com/acme-support-artifacts/support-relay",
            "https://storage.googleapis.com/acme-support-artifacts/relay//support-relay",
            "https://storage.googleapis.com/acme-support-artifacts/relay/a/b/support-relay",
        ] {
            let e = Gcp::new(settings(bad)).err().expect(bad);
            assert!(e.contains("relay/{version}/support-relay"), "{e}");
        }
        // Elsewhere (an operator's own server), any https path.
        assert!(Gcp::new(settings("https://downloads.example.com/relay")).is_ok());
    }

    #[test]
    fn defaults_are_infra_s_network_subnetwork_and_hub_account() {
        let g = Gcp::new(settings("https://example.com/r")).expect("valid");
        assert_eq!(g.network(), "global/networks/support-tunnel");
        assert_eq!(
            g.subnetwork(),
            "regions/europe-west1/subnetworks/support-hubs"
        );
        assert_eq!(
            g.service_account(),
            "support-hub@acme.iam.gserviceaccount.com"
        );
        assert_eq!(g.firewall_name(), "support-hub-udp-51820");
    }

    #[test]
    fn the_startup_script_reads_the_bucket_with_the_hub_token_only_from_google() {
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
        let spec = HubSpec::new(&verified, [2; 32], 600);
        let gcs = Gcp::new(settings(
            "https://storage.googleapis.com/acme-support-artifacts/relay/0.2.0/support-relay",
        ))
        .expect("valid");
        let script = gcs.startup_script(&spec);
        assert!(script.contains("Metadata-Flavor: Google"), "{script}");
        // Elsewhere the token is never fetched or sent: the script's URL
        // switch sends it only to storage.googleapis.com.
        let case = script
            .find("https://storage.googleapis.com/*)")
            .expect("case");
        let token_use = script.find("Authorization: Bearer %s").expect("use");
        let other = script.find("\n*)").expect("other branch");
        assert!(case < token_use && token_use < other);
        assert!(!script[other..].contains("token"), "{script}");
    }
}
