//! The control plane's view of tunnels: `list` and `show`.

use std::process::ExitCode;

use serde_json::json;
use support_protocol::messages::admin::TunnelSummary;
use support_protocol::messages::TunnelStateKind;

use super::Env;
use crate::error::AdminError;
use crate::{ca, handoff};

/// A tunnel as `list --json` prints it (and `show --json` starts from).
fn summary_json(t: &TunnelSummary) -> serde_json::Value {
    json!({
        "id": t.tunnel_id.to_string(),
        "state": t.state.kind().name(),
        "approval": t.state.approval().map(|s| s.0),
        "hostname": t.facts.hostname.as_str(),
        "model": t.facts.model.as_str(),
        "firmware": t.facts.firmware.as_str(),
        "agent_version": t.facts.agent_version.as_str(),
        "created_at": t.created_at,
        "expires_at": t.expires_at,
    })
}

/// `list [--state S]`.
pub(super) fn list(
    env: &Env,
    state: Option<TunnelStateKind>,
    as_json: bool,
) -> Result<ExitCode, AdminError> {
    let tunnels = env.control_plane()?.list_all(state)?;
    if as_json {
        let v: Vec<_> = tunnels.iter().map(summary_json).collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if tunnels.is_empty() {
        println!("No tunnels.");
    } else {
        let now = ca::now();
        let handed: Vec<handoff::HandedOff> = env.records().handed_off_all();
        println!(
            "{:<16}  {:<9}  {:<20}  {:>8}  {:<21}  MODEL",
            "TUNNEL", "STATE", "HOSTNAME", "AGE", "EXPIRES"
        );
        for t in &tunnels {
            let note = handed
                .iter()
                .find(|h| h.id == t.tunnel_id)
                .map(|h| {
                    format!(
                        "  (handed off to {} at {})",
                        h.to,
                        support_protocol::time_text::format(h.at)
                    )
                })
                .unwrap_or_default();
            println!(
                "{:<16}  {:<9}  {:<20}  {:>8}  {:<21}  {}{note}",
                t.tunnel_id,
                t.state.kind().name(),
                t.facts.hostname.as_str(),
                age(now, t.created_at),
                support_protocol::time_text::format(t.expires_at),
                t.facts.model.as_str()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `show ID`: the device's facts, the state, the times.
pub(super) fn show(env: &Env, id: &str, as_json: bool) -> Result<ExitCode, AdminError> {
    let d = env.control_plane()?.show(env.resolve(id)?)?;
    let mut v = summary_json(&d.summary);
    let b = &d.request.body;
    v["requested_duration_secs"] = json!(b.duration_secs);
    v["requested_ports"] = json!(b.ports.to_vec());
    v["note"] = json!(b.note.as_str());
    v["approver"] = json!(d
        .approval
        .as_ref()
        .map(|a| a.certificate.body.name.as_str()));
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let now = ca::now();
        for (k, val) in v.as_object().into_iter().flatten() {
            let shown = match (k.as_str(), val) {
                (_, serde_json::Value::Null) => "-".to_string(),
                ("created_at", serde_json::Value::Number(n)) => {
                    let t = n.as_u64().unwrap_or(0);
                    format!(
                        "{} ({} ago)",
                        support_protocol::time_text::format(t),
                        age(now, t)
                    )
                }
                ("expires_at", serde_json::Value::Number(n)) => {
                    support_protocol::time_text::format(n.as_u64().unwrap_or(0))
                }
                ("requested_duration_secs", serde_json::Value::Number(n)) => {
                    support_protocol::duration_text::format(n.as_u64().unwrap_or(0))
                }
                (_, serde_json::Value::String(s)) => s.clone(),
                (_, other) => other.to_string(),
            };
            println!("{k:<24} {shown}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long ago `t` was, roughly ("3h 05m").
fn age(now: u64, t: u64) -> String {
    support_protocol::duration_text::format(now.saturating_sub(t))
}
