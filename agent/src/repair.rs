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

/// Removes users and sudoers drop-ins of this instance that belong to no
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
    access::remove_check_leftovers(&ctx.instance, live);
    for (path, user) in access::our_sudoers(&ctx.instance) {
        let id = user.strip_prefix("support-").unwrap_or_default();
        if live.contains(id) {
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
