//! `support-agent`: the device agent. It requests support, verifies the
//! approval, runs the userspace WireGuard peer and the ephemeral support
//! access, and removes all of it when the tunnel ends.
#![forbid(unsafe_code)]

mod access;
mod approval;
mod cli;
mod config;
mod control;
mod daemon;
mod expiry;
mod group_grants;
mod hooks;
mod journal;
mod lifecycle;
mod machine;
mod migrate;
mod notify;
mod owner_log;
mod recorder;
mod recording;
mod repair;
mod runtime;
mod socket;
mod sshd;
mod state;
mod time_floor;
mod util;

/// A lower bound on "now" that needs no clock: when this release was made.
/// Certificates that expired before it are refused even on a device whose
/// clock reads 1970 (see `support_protocol::certificate`). 2026-11-01.
pub const RELEASE_TIME: u64 = 1_793_491_200;

fn main() -> std::process::ExitCode {
    cli::main()
}
