//! `support-relay`: the hub's only program: forwards one tunnel's WireGuard datagrams between its two endpoints and holds no keys.
//!
//! Only `--version` and `--help` work so far; the rest is the data-plane issue.
#![forbid(unsafe_code)]

use std::process::ExitCode;

const HELP: &str = concat!(
    "support-relay ", env!("CARGO_PKG_VERSION"), "\n",
    "the hub's only program: forwards one tunnel's WireGuard datagrams between its two endpoints and holds no keys.\n\n",
    "Not implemented yet (the data-plane issue).\n\n",
    "Options:\n  -h, --help     Print this help\n  -V, --version  Print the version\n",
);

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("-V") | Some("--version") => {
            println!(
                "support-relay {} (protocol version {})",
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
                "support-relay: '{other}' is not available yet (the data-plane issue); see --help"
            );
            ExitCode::from(2)
        }
    }
}
