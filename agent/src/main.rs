//! `support-agent`: the device agent: requests support, verifies the approval, runs the userspace WireGuard peer and the ephemeral support access.
//!
//! Only `--version` and `--help` work so far; the rest is the agent issue.
#![forbid(unsafe_code)]

use std::process::ExitCode;

const HELP: &str = concat!(
    "support-agent ", env!("CARGO_PKG_VERSION"), "\n",
    "the device agent: requests support, verifies the approval, runs the userspace WireGuard peer and the ephemeral support access.\n\n",
    "Not implemented yet (the agent issue).\n\n",
    "Options:\n  -h, --help     Print this help\n  -V, --version  Print the version\n",
);

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("-V") | Some("--version") => {
            println!(
                "support-agent {} (protocol version {})",
                env!("CARGO_PKG_VERSION"),
                support_protocol::PROTOCOL_VERSION
            );
            ExitCode::SUCCESS
        }
        Some("-h") | Some("--help") | None => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "support-agent: '{other}' is not available yet (the agent issue); see --help"
            );
            ExitCode::from(2)
        }
    }
}
