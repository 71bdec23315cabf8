//! Ending tunnels and collecting what they leave: `stop` (the device tears
//! down, the hub is deleted, local secrets wiped) and `gc` (hubs and
//! secrets of ended tunnels, also hubs no record knows).

use std::collections::HashSet;
use std::process::ExitCode;

use support_protocol::TunnelId;

use super::Env;
use crate::error::AdminError;
use crate::records::ProviderKind;
use crate::session;

/// `stop ID`.
pub(super) fn stop(env: &Env, id: &str) -> Result<ExitCode, AdminError> {
    let records = env.records();
    let rec = records.load(id).ok();
    let tunnel = match &rec {
        Some(r) => r.id,
        None => id.parse().map_err(|_| {
            AdminError::Usage(format!(
                "no tunnel {id} on this machine, and it is not a full id"
            ))
        })?,
    };
    let cp = env.control_plane()?;
    match cp.stop(tunnel, "stopped by support") {
        Ok(()) => eprintln!("tunnel {tunnel} stopped; the device is tearing down"),
        Err(e) => eprintln!("{e} (cleaning up here anyway)"),
    }
    if let Some(r) = rec {
        env.provider(r.hub.provider)?.delete(&r.hub.handle)?;
        eprintln!("hub {} ({}) deleted", r.hub.handle, r.hub.provider);
        session::quit(&records, r.id);
        records.wipe(r.id);
        eprintln!("local secrets of {tunnel} wiped");
    }
    Ok(ExitCode::SUCCESS)
}

/// `gc`.
pub(super) fn gc(env: &Env) -> Result<ExitCode, AdminError> {
    let cp = env.control_plane()?;
    let live: HashSet<TunnelId> = cp
        .list_all(None)?
        .iter()
        .filter(|t| !t.state.kind().is_terminal())
        .map(|t| t.tunnel_id)
        .collect();
    let records = env.records();
    let mut done = 0;
    for id in records.ids() {
        if live.contains(&id) {
            continue;
        }
        let rec = match records.get(id) {
            Ok(rec) => rec,
            // Its secrets must not outlive the tunnel because the record
            // cannot be read; its hub, if any, is found by label below.
            Err(e) => {
                session::quit(&records, id);
                records.wipe(id);
                eprintln!("tunnel {id} has ended and {e}: its secrets wiped");
                done += 1;
                continue;
            }
        };
        if let Ok(p) = env.provider(rec.hub.provider) {
            p.delete(&rec.hub.handle)?;
        }
        session::quit(&records, id);
        records.wipe(id);
        eprintln!(
            "tunnel {id} has ended: hub {} deleted, secrets wiped",
            rec.hub.handle
        );
        done += 1;
    }
    for h in records.handed_off_all() {
        if !live.contains(&h.id) {
            records.forget_handed_off(h.id);
        }
    }
    let mut providers = vec![ProviderKind::Local];
    if env.settings.gcp.is_some() {
        providers.push(ProviderKind::Gcp);
    }
    for kind in providers {
        let p = env.provider(kind)?;
        for (tunnel, handle) in p.list()? {
            if live.contains(&tunnel) {
                continue;
            }
            p.delete(&handle)?;
            eprintln!("orphan hub {handle} ({kind}) of ended tunnel {tunnel} deleted");
            done += 1;
        }
    }
    if done == 0 {
        eprintln!("nothing to collect");
    }
    Ok(ExitCode::SUCCESS)
}
