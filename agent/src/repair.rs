//! Repair: remove everything this agent created for tunnels that are no
//! longer live. Runs at every start (after a crash or kill -9 nothing stays
//! orphaned) and on `support-agent repair`. Idempotent.

use std::collections::HashSet;

use crate::access;
use crate::runtime::Ctx;
use crate::state::{StateDir, TunnelRecord};

/// What a repair found and did.
#[derive(Debug, Default)]
pub struct Repaired {
    /// Actions taken, one line each.
    pub done: Vec<String>,
    /// What could not be fixed.
    pub problems: Vec<String>,
}

/// Tunnels whose support access may legitimately exist.
pub fn live_ids(state: &StateDir, records: &[TunnelRecord]) -> HashSet<String> {
    records
        .iter()
        .filter(|r| r.is_live() && state.seed(&r.id).is_some())
        .map(|r| r.id.clone())
        .collect()
}

/// Removes users and sudoers drop-ins (and their validation copies) of this
/// instance that belong to no
/// tunnel in `live`.
pub fn remove_orphans(ctx: &Ctx, live: &HashSet<String>) -> Repaired {
    let mut out = Repaired::default();
    for (user, id) in access::our_users(&ctx.instance) {
        if live.contains(&id) {
            continue;
        }
        match access::remove(&ctx.config, &user) {
            Ok(()) => out
                .done
                .push(format!("removed support user {user} of ended tunnel {id}")),
            Err(e) => out.problems.push(e.to_string()),
        }
    }
    for f in access::our_sudoers(&ctx.instance) {
        if live.contains(&f.tunnel) {
            continue;
        }
        let path = f.path;
        if f.check_copy {
            // What an interrupted write_sudoers left: removed silently.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => out
                .done
                .push(format!("removed sudoers entry {}", path.display())),
            Err(e) => out.problems.push(format!("{}: {e}", path.display())),
        }
    }
    out
}
