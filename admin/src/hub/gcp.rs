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
use super::{b64, ApiCall, FirewallProblem, GcpSettingsError, Hub, HubError, HubSpec, Provider};

/// How long a hub VM has to run with a public address.
const START_TIMEOUT: Duration = Duration::from_secs(180);

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
    pub fn new(s: GcpSettings) -> Result<Gcp, GcpSettingsError> {
        let safe = |v: &str| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:~%?&=+@".contains(&b))
        };
        if !safe(&s.relay_url) || !s.relay_url.starts_with("https://") {
            return Err(GcpSettingsError::RelayUrl);
        }
        if let Some(object) = s
            .relay_url
            .strip_prefix("https://storage.googleapis.com/")
            .and_then(|rest| rest.split_once('/').map(|(_, object)| object))
        {
            if !is_relay_object(object) {
                return Err(GcpSettingsError::RelayObject);
            }
        }
        if s.relay_sha256.len() != 64 || !s.relay_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GcpSettingsError::RelaySha256);
        }
        for (setting, v) in [("project", &s.project), ("zone", &s.zone)] {
            if !safe(v) || v.contains('/') {
                return Err(GcpSettingsError::Name {
                    setting,
                    value: v.clone(),
                });
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

    /// Makes `call` (`body` for an insert); the answer's status and JSON.
    fn request(
        &self,
        call: &ApiCall,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), HubError> {
        let auth = {
            let mut cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
            if cached.is_none() {
                *cached = Some(credentials::access_token(&self.agent)?);
            }
            format!("Bearer {}", cached.as_deref().unwrap_or_default())
        };
        let resp = match (call.http_method(), body) {
            ("POST", Some(b)) => self
                .agent
                .post(url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(b.to_string().as_bytes()),
            ("DELETE", _) => self.agent.delete(url).header("authorization", &auth).call(),
            _ => self.agent.get(url).header("authorization", &auth).call(),
        };
        let mut resp = resp.map_err(|source| HubError::Unreachable {
            call: call.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let v = super::json_body(&mut resp, 4 << 20).map_err(|source| HubError::Unreadable {
            call: call.clone(),
            source,
        })?;
        Ok((status, v))
    }

    /// The hub firewall rule: `infra/` creates it; engineers need no right
    /// to change firewalls, only to read this one.
    fn check_firewall(&self) -> Result<(), HubError> {
        let rule = self.firewall_name();
        let url = format!(
            "{}/compute/v1/projects/{}/global/firewalls/{rule}",
            self.api(),
            self.s.project
        );
        let call = ApiCall::ReadFirewall { rule: rule.clone() };
        let (status, v) = self.request(&call, &url, None)?;
        if status == 404 {
            return Err(HubError::FirewallRuleMissing {
                rule,
                project: self.s.project.clone(),
                port: self.port(),
            });
        }
        let v = success(&call, status, v)?;
        match firewall_problem(&v, &self.network(), self.port()) {
            None => Ok(()),
            Some(problem) => Err(HubError::FirewallRuleChanged { rule, problem }),
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
fn firewall_problem(rule: &Value, network: &str, port: u16) -> Option<FirewallProblem> {
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
        Some(FirewallProblem::NotIngress)
    } else if rule["disabled"] == true {
        Some(FirewallProblem::Disabled)
    } else if !rule["targetTags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == TAG))
    {
        Some(FirewallProblem::NoHubTag)
    } else if !admits_port {
        Some(FirewallProblem::PortNotAdmitted { port })
    } else if network_name(rule["network"].as_str().unwrap_or_default()) != network_name(network)
        || network_name(network).is_none()
    {
        Some(FirewallProblem::OtherNetwork {
            network: network.to_string(),
        })
    } else if !rule["sourceRanges"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r == "0.0.0.0/0"))
    {
        Some(FirewallProblem::NotFromAnywhere)
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

/// The JSON object `v` a successful `call` answers, else why not.
fn success(call: &ApiCall, status: u16, v: Value) -> Result<Value, HubError> {
    match status {
        200 if v.is_object() => Ok(v),
        200 => Err(HubError::Malformed { call: call.clone() }),
        _ => Err(api_error(call, status, &v)),
    }
}

/// The Compute Engine API's error answer `v` (status `status`) to `call`,
/// with Google's message if it has one.
fn api_error(call: &ApiCall, status: u16, v: &Value) -> HubError {
    HubError::Api {
        call: call.clone(),
        status,
        message: v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

impl Provider for Gcp {
    fn kind(&self) -> crate::records::ProviderKind {
        crate::records::ProviderKind::Gcp
    }

    fn preflight(&self) -> Result<String, HubError> {
        // Needs a token (the credentials work) and the rule infra/ made.
        self.check_firewall()?;
        Ok(format!(
            "a VM in project {} ({}); the hub firewall rule is in place",
            self.s.project, self.s.zone
        ))
    }

    fn launch(&self, spec: &HubSpec, progress: &mut dyn FnMut(&str)) -> Result<Hub, HubError> {
        progress("creating the hub VM");
        let call = ApiCall::CreateVm;
        let (status, v) = self.request(
            &call,
            &format!("{}/instances", self.zone_url()),
            Some(&self.instance_body(spec)),
        )?;
        if status != 200 {
            return Err(api_error(&call, status, &v));
        }
        let name = instance_name(spec.tunnel_id());
        let url = format!("{}/instances/{name}", self.zone_url());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            progress("waiting for the hub VM to run");
            let call = ApiCall::ReadVm;
            let (status, v) = self.request(&call, &url, None)?;
            // Not found yet is fine: the insert may not be visible at once.
            let v = match status {
                404 => Value::Null,
                _ => success(&call, status, v)?,
            };
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
                return Err(HubError::VmDidNotStart {
                    within: START_TIMEOUT,
                    deleted: self.delete(&name).map_err(Box::new),
                });
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    fn delete(&self, handle: &str) -> Result<(), HubError> {
        let call = ApiCall::DeleteVm;
        let (status, v) = self.request(
            &call,
            &format!("{}/instances/{handle}", self.zone_url()),
            None,
        )?;
        match status {
            200 | 404 => Ok(()),
            _ => Err(api_error(&call, status, &v)),
        }
    }

    fn list(&self) -> Result<Vec<(TunnelId, String)>, HubError> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut url = format!("{}/instances?filter=labels.{LABEL}%3A*", self.zone_url());
            if let Some(p) = &page {
                url.push_str(&format!("&pageToken={p}"));
            }
            let call = ApiCall::ListVms;
            let (status, v) = self.request(&call, &url, None)?;
            let v = success(&call, status, v)?;
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
        use FirewallProblem::*;
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
        let other = |network: &str| OtherNetwork {
            network: network.into(),
        };
        for (r, net, problem) in [
            (changed("/direction", json!("EGRESS")), net, NotIngress),
            (changed("/disabled", json!(true)), net, Disabled),
            (changed("/targetTags", json!(["web"])), net, NoHubTag),
            (
                changed("/allowed/0/ports", json!(["51821"])),
                net,
                PortNotAdmitted { port: 51820 },
            ),
            (
                changed("/allowed/0/IPProtocol", json!("tcp")),
                net,
                PortNotAdmitted { port: 51820 },
            ),
            (
                changed("/sourceRanges", json!(["10.0.0.0/8"])),
                net,
                NotFromAnywhere,
            ),
            (
                rule(),
                "global/networks/tunnel",
                other("global/networks/tunnel"),
            ),
            (
                rule(),
                "global/networks/default",
                other("global/networks/default"),
            ),
            (rule(), "support-tunnel", other("support-tunnel")),
        ] {
            assert_eq!(
                firewall_problem(&r, net, 51820),
                Some(problem),
                "{r} on {net}"
            );
        }
        let e = HubError::FirewallRuleChanged {
            rule: "support-hub-udp-51820".into(),
            problem: NoHubTag,
        };
        assert_eq!(
            e.to_string(),
            "the firewall rule support-hub-udp-51820 does not target the tag support-hub: \
             it was changed outside infra/; run `tofu apply` there"
        );
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
            assert_eq!(e, GcpSettingsError::RelayObject, "{bad}");
            assert!(
                e.to_string().contains("relay/{version}/support-relay"),
                "{e}"
            );
        }
        // Elsewhere (an operator's own server), any https path.
        assert!(Gcp::new(settings("https://downloads.example.com/relay")).is_ok());
    }

    #[test]
    fn settings_that_would_break_the_startup_script_are_refused() {
        let refused = |s: GcpSettings| Gcp::new(s).err();
        for url in [
            "http://example.com/relay",
            "https://example.com/re lay",
            "https://example.com/'relay'",
            "",
        ] {
            assert_eq!(
                refused(settings(url)),
                Some(GcpSettingsError::RelayUrl),
                "{url:?}"
            );
        }
        let ok = "https://example.com/relay";
        for sha in ["ab".repeat(31), "zz".repeat(32), "ab".repeat(33)] {
            let mut s = settings(ok);
            s.relay_sha256 = sha;
            assert_eq!(refused(s), Some(GcpSettingsError::RelaySha256));
        }
        let mut s = settings(ok);
        s.project = "acme/../other".into();
        assert_eq!(
            refused(s),
            Some(GcpSettingsError::Name {
                setting: "project",
                value: "acme/../other".into()
            })
        );
        let mut s = settings(ok);
        s.zone = "europe west".into();
        let e = refused(s).expect("refused");
        assert_eq!(
            e,
            GcpSettingsError::Name {
                setting: "zone",
                value: "europe west".into()
            }
        );
        assert_eq!(e.to_string(), "gcp.zone 'europe west' is not a valid name");
    }

    #[test]
    fn an_error_answer_keeps_google_s_message() {
        let call = ApiCall::CreateVm;
        let answer = json!({"error": {"code": 403, "message": "Required 'compute.instances.create' permission"}});
        let e = api_error(&call, 403, &answer);
        assert!(
            matches!(
                &e,
                HubError::Api { call: ApiCall::CreateVm, status: 403, message: Some(m) }
                    if m == "Required 'compute.instances.create' permission"
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "creating the hub VM: the Compute Engine API answered 403: \
             Required 'compute.instances.create' permission"
        );
        // A proxy's page, not Google's JSON: no message, said so.
        let e = api_error(&ApiCall::ListVms, 502, &Value::Null);
        assert!(
            matches!(
                &e,
                HubError::Api {
                    call: ApiCall::ListVms,
                    status: 502,
                    message: None
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "listing hub VMs: the Compute Engine API answered 502: no message"
        );
    }

    #[test]
    fn a_success_is_a_json_object_or_an_error() {
        let call = ApiCall::ReadFirewall {
            rule: "support-hub-udp-51820".into(),
        };
        assert_eq!(success(&call, 200, rule()).expect("an object"), rule());
        // A 200 that is not the resource (a captive portal's page) is not
        // an empty list or a rule without fields.
        for v in [Value::Null, json!([]), json!("ok")] {
            assert!(
                matches!(
                    success(&ApiCall::ListVms, 200, v.clone()),
                    Err(HubError::Malformed {
                        call: ApiCall::ListVms
                    })
                ),
                "{v}"
            );
        }
        assert!(matches!(
            success(&call, 404, Value::Null),
            Err(HubError::Api {
                status: 404,
                message: None,
                ..
            })
        ));
        assert_eq!(ApiCall::CreateVm.http_method(), "POST");
        assert_eq!(ApiCall::DeleteVm.http_method(), "DELETE");
        assert_eq!(call.http_method(), "GET");
    }

    #[test]
    fn a_missing_firewall_rule_says_which_apply_creates_it() {
        let e = HubError::FirewallRuleMissing {
            rule: "support-hub-udp-51820".into(),
            project: "acme".into(),
            port: 51820,
        };
        assert_eq!(
            e.to_string(),
            "the hub firewall rule support-hub-udp-51820 does not exist in project acme: it \
             belongs to the deployment; run `tofu apply` in infra/ (network.tf creates it, \
             with relay_port = 51820)"
        );
    }

    #[test]
    fn a_vm_that_did_not_start_says_whether_it_was_deleted() {
        let within = START_TIMEOUT;
        let deleted = HubError::VmDidNotStart {
            within,
            deleted: Ok(()),
        };
        assert_eq!(
            deleted.to_string(),
            "the hub VM did not start within 180 s; it was deleted"
        );
        let kept = HubError::VmDidNotStart {
            within,
            deleted: Err(Box::new(api_error(&ApiCall::DeleteVm, 500, &Value::Null))),
        };
        assert_eq!(
            kept.to_string(),
            "the hub VM did not start within 180 s, and deleting it failed: deleting the hub \
             VM: the Compute Engine API answered 500: no message"
        );
        assert!(std::error::Error::source(&kept).is_some());
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
        let spec = crate::hub::tests::spec();
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
