//! `support-control-plane`: the bookkeeping service: a warp HTTP API over an embedded redb store; never a root of trust.
//!
//! Only `--version` and `--help` work so far; the rest is the control-plane issue.
#![forbid(unsafe_code)]

use std::process::ExitCode;

const HELP: &str = concat!(
    "support-control-plane ", env!("CARGO_PKG_VERSION"), "\n",
    "the bookkeeping service: a warp HTTP API over an embedded redb store; never a root of trust.\n\n",
    "Not implemented yet (the control-plane issue).\n\n",
    "Options:\n  -h, --help     Print this help\n  -V, --version  Print the version\n",
);

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("-V") | Some("--version") => {
            println!(
                "support-control-plane {} (protocol version {})",
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
            eprintln!("support-control-plane: '{other}' is not available yet (the control-plane issue); see --help");
            ExitCode::from(2)
        }
    }
}
