//! Giving a tunnel to another engineer: `handoff`, `handoffs` (what waits
//! for you) and `pickup`; the sealing and checks are in [`crate::handoff`].

use std::process::ExitCode;

use serde_json::json;
use support_protocol::TunnelId;

use super::Env;
use crate::error::AdminError;
use crate::identity;

/// `handoff ID --to NAME`.
pub(super) fn handoff(env: &Env, id: &str, to: &str, yes: bool) -> Result<ExitCode, AdminError> {
    let records = env.records();
    let rec = records.load(id)?;
    let cp = env.control_plane()?;
    let me = identity::load(&env.dirs)?;
    if !yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        crate::approve::confirm(
            &format!(
                "Hand tunnel {} to {to}? Its secrets are wiped here and you cannot connect any more. [y/N] ",
                rec.id
            ),
            "not handed off; nothing was sent",
        )?;
    }
    let note = crate::handoff::handoff(&cp, &me, &records, &rec, to)?;
    env.refresh_ssh_config();
    eprintln!(
        "tunnel {} handed off to {to}: sealed to their certified key, signed by you, in the control plane's mailbox; \
         its session here ended and its secrets are wiped. {to} runs: support-admin pickup {}",
        note.id, note.id
    );
    println!("{}", note.id);
    Ok(ExitCode::SUCCESS)
}

/// `handoffs`: what waits for us; publishes our hand-off key.
pub(super) fn handoffs(env: &Env, as_json: bool) -> Result<ExitCode, AdminError> {
    let cp = env.control_plane()?;
    let me = identity::load(&env.dirs)?;
    // Publishing is what lets others hand tunnels to us; listing works without it.
    let published = crate::handoff::publish_key(&cp, &me);
    let list = crate::handoff::waiting(&cp)?;
    if as_json {
        let v: Vec<_> = list
            .iter()
            .map(|h| {
                json!({
                    "id": h.tunnel_id.to_string(),
                    "from": h.from.as_str(),
                    "posted_at": h.posted_at,
                    "expires_at": h.expires_at,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if list.is_empty() {
        println!("No hand-offs wait for you.");
    } else {
        println!(
            "{:<16}  {:<16}  {:<21}  EXPIRES",
            "TUNNEL", "FROM", "POSTED"
        );
        for h in &list {
            println!(
                "{:<16}  {:<16}  {:<21}  {}",
                h.tunnel_id,
                h.from.as_str(),
                support_protocol::time_text::format(h.posted_at),
                support_protocol::time_text::format(h.expires_at)
            );
        }
        eprintln!("take one with: support-admin pickup ID");
    }
    match published {
        Ok(()) => eprintln!("your hand-off key is published: others can hand tunnels to you"),
        Err(e) => eprintln!(
            "warning: your hand-off key is not published, so nobody can hand you a tunnel: {e}"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `pickup ID`.
pub(super) fn pickup(env: &Env, id: &str) -> Result<ExitCode, AdminError> {
    let cp = env.control_plane()?;
    let me = identity::load(&env.dirs)?;
    let tunnel: TunnelId = match id.parse() {
        Ok(t) => t,
        Err(_) => crate::handoff::find_waiting(&cp, id)?,
    };
    let (rec, from) = crate::handoff::pickup(&cp, &me, &env.records(), tunnel)?;
    env.refresh_ssh_config();
    eprintln!(
        "picked up tunnel {} from {from}: their certificate and signature verified, the package was sealed to your key; \
         it is yours now (connect, exec, forward, ssh support-{}){}",
        rec.id,
        rec.id,
        if rec.host_keys.is_empty() {
            format!("; the device has not connected yet: support-admin wait {}", rec.id)
        } else {
            String::new()
        }
    );
    println!("{}", rec.id);
    Ok(ExitCode::SUCCESS)
}
