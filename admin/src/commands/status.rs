//! `status`: who the engineer is here and whether everything is ready (the
//! keys, the certificate's dates, the control plane with its pinned key,
//! the hub provider, the tunnels this machine holds), for people or as JSON
//! (admin/status.schema.json); exit 1 when something is not ready.

use std::process::ExitCode;

use serde_json::json;
use support_protocol::messages::admin::TunnelSummary;
use support_protocol::TunnelId;

use super::Env;
use crate::error::AdminError;
use crate::records::ProviderKind;
use crate::{ca, handoff, identity, secret_file, session};

/// What `support-admin status` found, printed for people or as JSON.
struct StatusReport {
    now: u64,
    identity_path: std::path::PathBuf,
    /// Whether the identity file is sealed with a passphrase; `None` when
    /// there is no identity (then nothing else is looked at).
    sealed: Option<bool>,
    checks: Option<StatusChecks>,
}

/// Everything `status` checks once there is an identity.
struct StatusChecks {
    certificate: Option<support_protocol::certificate::ApproverCertificate>,
    url: Option<String>,
    pinned_keys: Vec<String>,
    /// The control plane's tunnels, reached with its pinned key, or why not.
    control_plane: Result<Vec<TunnelSummary>, AdminError>,
    provider: String,
    /// The provider's pre-flight: where hubs run, or why it is not ready.
    preflight: Result<String, AdminError>,
    /// Local records: id and whether its session runs.
    tunnels: Vec<(TunnelId, bool)>,
    handed_off: Vec<handoff::HandedOff>,
}

impl StatusReport {
    fn gather(env: &Env) -> Result<StatusReport, AdminError> {
        let now = ca::now();
        let identity_path = env.dirs.config.join("identity.key");
        let sealed = std::fs::read(&identity_path)
            .ok()
            .map(|b| secret_file::is_sealed(&b));
        let checks = match sealed {
            None => None,
            Some(_) => Some(StatusChecks::gather(env)?),
        };
        Ok(StatusReport {
            now,
            identity_path,
            sealed,
            checks,
        })
    }

    /// Whether everything is ready (exit 0): an identity, a certificate that
    /// has not expired, the control plane reached, the provider ready.
    fn fine(&self) -> bool {
        self.checks.as_ref().is_some_and(|c| {
            c.certificate
                .as_ref()
                .is_some_and(|cert| cert.body.not_after >= self.now)
                && c.control_plane.is_ok()
                && c.preflight.is_ok()
        })
    }

    fn exit_code(&self) -> ExitCode {
        if self.fine() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

impl StatusChecks {
    fn gather(env: &Env) -> Result<StatusChecks, AdminError> {
        let certificate = identity::certificate(&env.dirs)?;
        let url = env
            .cli_url
            .clone()
            .or_else(|| env.settings.control_plane.clone());
        let pinned_keys = if env.cli_keys.is_empty() {
            env.settings.control_plane_keys.clone()
        } else {
            env.cli_keys.clone()
        };
        let control_plane = env.control_plane().and_then(|cp| Ok(cp.list_all(None)?));
        let provider = env
            .settings
            .provider
            .clone()
            .unwrap_or_else(|| ProviderKind::Local.name().into());
        let preflight = env
            .default_provider()
            .and_then(|k| env.provider(k))
            .and_then(|p| Ok(p.preflight()?));
        let records = env.records();
        let tunnels = records
            .ids()
            .into_iter()
            .map(|id| (id, session::running(&records, id)))
            .collect();
        Ok(StatusChecks {
            certificate,
            url,
            pinned_keys,
            control_plane,
            provider,
            preflight,
            tunnels,
            handed_off: records.handed_off_all(),
        })
    }

    /// The control plane's view of a local tunnel, if it was reached and knows it.
    fn summary(&self, id: TunnelId) -> Option<&TunnelSummary> {
        self.control_plane
            .as_ref()
            .ok()?
            .iter()
            .find(|t| t.tunnel_id == id)
    }
}

/// `support-admin status`: every line says what is fine or what to do.
pub(super) fn status(env: &Env, as_json: bool) -> Result<ExitCode, AdminError> {
    let report = StatusReport::gather(env)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status_json(&report)).unwrap_or_default()
        );
    } else {
        print_status(&report);
    }
    Ok(report.exit_code())
}

fn print_status(r: &StatusReport) {
    let now = r.now;
    let (Some(sealed), Some(c)) = (r.sealed, &r.checks) else {
        println!("identity     none: run support-admin init");
        return;
    };
    println!(
        "identity     {} ({})",
        r.identity_path.display(),
        if sealed {
            "sealed with a passphrase"
        } else {
            "NOT sealed: anyone who reads this file can act as you"
        }
    );
    match &c.certificate {
        Some(cert) => {
            let warn = if cert.body.not_after < now {
                "  EXPIRED: ask the support CA for a new one".to_string()
            } else if ca::expires_soon(cert, now) {
                format!(
                    "  expires in {}: ask the support CA for a new one soon",
                    support_protocol::duration_text::format(cert.body.not_after - now)
                )
            } else {
                String::new()
            };
            println!(
                "certificate  {}, {:?}, serial {}, valid until {}{warn}",
                cert.body.name.as_str(),
                cert.body.role,
                cert.body.serial,
                support_protocol::time_text::format(cert.body.not_after)
            );
        }
        None => println!(
            "certificate  none: send your approver key to the support CA, then init --certificate FILE"
        ),
    }
    match &c.control_plane {
        Ok(t) => println!(
            "control plane {} reached with its pinned key ({} tunnels)",
            c.url.clone().unwrap_or_default(),
            t.len()
        ),
        Err(e) => println!("control plane NOT reached: {e}"),
    }
    match &c.preflight {
        Ok(place) => println!("provider     {}: {place}", c.provider),
        Err(e) => println!("provider     {}: NOT ready: {e}", c.provider),
    }
    if c.tunnels.is_empty() {
        println!("tunnels      none on this machine");
    }
    for (id, session) in &c.tunnels {
        let state = c
            .summary(*id)
            .map(|t| {
                format!(
                    "{}, expires {}",
                    t.state.kind().name(),
                    support_protocol::time_text::format(t.expires_at)
                )
            })
            .unwrap_or_else(|| "unknown to the control plane".into());
        println!(
            "tunnel       {id}: {state}{}",
            if *session { "; session running" } else { "" }
        );
    }
    for h in &c.handed_off {
        println!(
            "tunnel       {}: handed off to {} at {} (its secrets are wiped here)",
            h.id,
            h.to,
            support_protocol::time_text::format(h.at)
        );
    }
}

/// Unix seconds as `status --json` gives them: the number under `key`, and
/// the same time for people under `key_text`.
fn time_fields(v: &mut serde_json::Value, key: &str, secs: Option<u64>) {
    v[key] = json!(secs);
    v[format!("{key}_text")] = json!(secs.map(support_protocol::time_text::format));
}

/// `status --json`: the same facts as the text, the schema in
/// admin/status.schema.json.
fn status_json(r: &StatusReport) -> serde_json::Value {
    let identity = json!({
        "path": r.identity_path.display().to_string(),
        "present": r.sealed.is_some(),
        "sealed": r.sealed,
    });
    let Some(c) = &r.checks else {
        return json!({
            "ready": false,
            "identity": identity,
            "certificate": null,
            "control_plane": null,
            "provider": null,
            "tunnels": [],
            "handed_off": [],
        });
    };
    let certificate = c.certificate.as_ref().map(|cert| {
        let b = &cert.body;
        let mut v = json!({
            "name": b.name.as_str(),
            "role": format!("{:?}", b.role).to_lowercase(),
            "serial": b.serial,
            "issuer": hex::encode(b.issuer.0),
            "expired": b.not_after < r.now,
            "expires_soon": b.not_after >= r.now && ca::expires_soon(cert, r.now),
        });
        time_fields(&mut v, "valid_from", Some(b.not_before));
        time_fields(&mut v, "valid_until", Some(b.not_after));
        v
    });
    let (reachable, error, count) = match &c.control_plane {
        Ok(t) => (true, None, Some(t.len())),
        Err(e) => (false, Some(e.to_string()), None),
    };
    let control_plane = json!({
        "url": c.url,
        "pinned_keys": c.pinned_keys,
        "reachable": reachable,
        "error": error,
        "tunnel_count": count,
    });
    let provider = json!({
        "name": c.provider,
        "ready": c.preflight.is_ok(),
        "detail": c.preflight.as_ref().ok(),
        "error": c.preflight.as_ref().err().map(|e| e.to_string()),
    });
    let tunnels: Vec<_> = c
        .tunnels
        .iter()
        .map(|(id, session)| {
            let t = c.summary(*id);
            let mut v = json!({
                "id": id.to_string(),
                "state": t.map(|t| t.state.kind().name()),
                "session_running": session,
            });
            time_fields(&mut v, "expires_at", t.map(|t| t.expires_at));
            v
        })
        .collect();
    let handed_off: Vec<_> = c
        .handed_off
        .iter()
        .map(|h| {
            let mut v = json!({"id": h.id.to_string(), "to": h.to});
            time_fields(&mut v, "at", Some(h.at));
            v
        })
        .collect();
    json!({
        "ready": r.fine(),
        "identity": identity,
        "certificate": certificate,
        "control_plane": control_plane,
        "provider": provider,
        "tunnels": tunnels,
        "handed_off": handed_off,
    })
}
