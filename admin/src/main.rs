//! `support-admin`: the support engineer's CLI: support CA, approve and launch the hub, connect, exec, forward, stop, gc.
//!
//! Only `--version` and `--help` work so far; the rest is the admin issue.
#![forbid(unsafe_code)]

use std::process::ExitCode;

const HELP: &str = concat!(
    "support-admin ", env!("CARGO_PKG_VERSION"), "\n",
    "the support engineer's CLI: support CA, approve and launch the hub, connect, exec, forward, stop, gc.\n\n",
    "Not implemented yet (the admin issue).\n\n",
    "Options:\n  -h, --help     Print this help\n  -V, --version  Print the version\n",
);

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("-V") | Some("--version") => {
            println!(
                "support-admin {} (protocol version {})",
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
                "support-admin: '{other}' is not available yet (the admin issue); see --help"
            );
            ExitCode::from(2)
        }
    }
}
