//! `audit [ID]`: the control plane's audit log, for people or as tagged
//! JSON objects (admin/audit.schema.json).

use std::process::ExitCode;

use serde_json::json;
use support_protocol::messages::admin::AuditQuery;
use support_protocol::messages::{AdminRequest, AdminResponse};

use super::Env;
use crate::control::ControlPlaneError;
use crate::error::AdminError;

/// `audit [ID]`: every record, all pages.
pub(super) fn audit(env: &Env, id: Option<&str>, as_json: bool) -> Result<ExitCode, AdminError> {
    let cp = env.control_plane()?;
    let tunnel_id = id.map(|i| env.resolve(i)).transpose()?;
    let mut after = 0;
    let mut rows = Vec::new();
    loop {
        let page = match cp.call(AdminRequest::Audit(AuditQuery {
            tunnel_id,
            after_seq: after,
            limit: 100,
        }))? {
            AdminResponse::Audit(r) => r.into_inner(),
            other => return Err(ControlPlaneError::unexpected(other).into()),
        };
        let Some(last) = page.last().map(|r| r.entry.seq) else {
            break;
        };
        rows.extend(page);
        if last <= after {
            break;
        }
        after = last;
    }
    if as_json {
        let v: Vec<_> = rows.iter().map(audit_json).collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for r in &rows {
            println!(
                "{:>6}  {}  {:<16}  {:<16}  {}",
                r.entry.seq,
                support_protocol::time_text::format(r.entry.at),
                actor_text(&r.entry.actor),
                r.entry
                    .tunnel_id
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into()),
                action_text(&r.entry.action)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One audit record as `audit --json` prints it: tagged objects, the schema
/// in admin/audit.schema.json.
fn audit_json(r: &support_protocol::audit::AuditRecord) -> serde_json::Value {
    use support_protocol::audit::{Actor, AuditAction};
    use support_protocol::messages::StopReason;
    let actor = match &r.entry.actor {
        Actor::Admin(name) => json!({"kind": "admin", "name": name.as_str()}),
        Actor::Device => json!({"kind": "device"}),
        Actor::System => json!({"kind": "system"}),
    };
    let action = match &r.entry.action {
        AuditAction::Requested => json!({"kind": "requested"}),
        AuditAction::Approved(s) => json!({"kind": "approved", "approval": s.0}),
        AuditAction::Connected(s) => json!({"kind": "connected", "approval": s.0}),
        AuditAction::Stopped(reason) => {
            let reason = match reason {
                StopReason::Owner => json!({"kind": "owner"}),
                StopReason::Admin => json!({"kind": "support"}),
                StopReason::Expired => json!({"kind": "expired"}),
                StopReason::Refused(t) => json!({"kind": "refused", "text": t.as_str()}),
                StopReason::Failed(t) => json!({"kind": "failed", "text": t.as_str()}),
            };
            json!({"kind": "stopped", "reason": reason})
        }
        AuditAction::Expired => json!({"kind": "expired"}),
        AuditAction::AdminAdded(n) => json!({"kind": "admin_added", "name": n.as_str()}),
        AuditAction::AdminRemoved(n) => json!({"kind": "admin_removed", "name": n.as_str()}),
        AuditAction::HandedOff(to) => json!({"kind": "handed_off", "to": to.as_str()}),
        AuditAction::PickedUp(from) => json!({"kind": "picked_up", "from": from.as_str()}),
    };
    json!({
        "seq": r.entry.seq,
        "at": r.entry.at,
        "actor": actor,
        "tunnel": r.entry.tunnel_id.map(|t| t.to_string()),
        "action": action,
        "hash": hex::encode(r.hash.0),
    })
}

/// Who, for people.
fn actor_text(a: &support_protocol::audit::Actor) -> String {
    use support_protocol::audit::Actor;
    match a {
        Actor::Admin(name) => name.as_str().to_string(),
        Actor::Device => "(device)".into(),
        Actor::System => "(control plane)".into(),
    }
}

/// What, for people.
fn action_text(a: &support_protocol::audit::AuditAction) -> String {
    use support_protocol::audit::AuditAction;
    use support_protocol::messages::StopReason;
    match a {
        AuditAction::Requested => "requested".into(),
        AuditAction::Approved(s) => format!("approved ({s})"),
        AuditAction::Connected(s) => format!("connected ({s})"),
        AuditAction::Stopped(StopReason::Owner) => "stopped by the owner".into(),
        AuditAction::Stopped(StopReason::Admin) => "stopped by support".into(),
        AuditAction::Stopped(StopReason::Expired) => "expired (device)".into(),
        AuditAction::Stopped(StopReason::Refused(t)) => {
            format!("refused by the device: {}", t.as_str())
        }
        AuditAction::Stopped(StopReason::Failed(t)) => {
            format!("failed on the device: {}", t.as_str())
        }
        AuditAction::Expired => "expired".into(),
        AuditAction::AdminAdded(n) => format!("admin {} enrolled", n.as_str()),
        AuditAction::AdminRemoved(n) => format!("admin {} removed", n.as_str()),
        AuditAction::HandedOff(to) => format!("handed off to {}", to.as_str()),
        AuditAction::PickedUp(from) => format!("picked up (handed off by {})", from.as_str()),
    }
}
