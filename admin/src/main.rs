//! `support-admin`: the support engineer's CLI. The support CA, approving
//! with the owner's code (which launches the hub), and then SSH to the
//! device over WireGuard that runs end to end between this laptop and it.
#![forbid(unsafe_code)]

mod approve;
mod ca;
mod commands;
mod control;
mod error;
mod handoff;
mod hub;
mod identity;
mod progress;
mod records;
mod secret_file;
mod session;
mod settings;
mod ssh;
mod ssh_config;
mod term;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::PossibleValue;
use clap::{Parser, Subcommand, ValueEnum};
use support_protocol::messages::TunnelStateKind;

use crate::records::ProviderKind;

/// The support engineer's CLI for support-tunnel.
///
/// A device owner runs `support-agent request` and sends you the one-time
/// code it shows. `support-admin approve CODE` checks that the control plane
/// did not alter the device's request, launches a hub, and sends the device
/// an approval sealed with the code's secret and signed with your key, which
/// the support CA certified. Then `connect`, `exec` and `forward` reach the
/// device over WireGuard that runs end to end between you and it.
///
/// First time: `support-admin init`, then have your keys enrolled
/// (control plane) and certified (support CA) as it explains.
#[derive(Parser)]
#[command(
    name = "support-admin",
    version,
    about,
    long_about,
    verbatim_doc_comment
)]
pub struct Cli {
    /// Keep config, keys and tunnel state under DIR (instead of ~/.config
    /// and ~/.local/share).
    #[arg(long, global = true, env = "SUPPORT_ADMIN_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// The control plane's URL (overrides admin.toml); replicas' URLs separated by commas, tried in turn.
    #[arg(
        long,
        global = true,
        env = "SUPPORT_ADMIN_CONTROL_PLANE",
        value_name = "URL"
    )]
    control_plane: Option<String>,
    /// The control plane's public key, hex (overrides admin.toml; repeat for rotation).
    #[arg(long = "control-plane-key", global = true, value_name = "HEX")]
    control_plane_keys: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The support organization's CA (run on its offline machine).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Create your keys (or install your certificate with --certificate).
    Init {
        /// Install the certificate the support CA gave you (a file, or - for stdin).
        #[arg(long, value_name = "FILE")]
        certificate: Option<String>,
    },
    /// Who you are here: your keys, certificate (and when it expires), the
    /// control plane (reached with its pinned key?), the hub provider, and
    /// the tunnels this machine holds. Exits 1 when something is not ready.
    Status {
        /// Machine-readable output: one object, the schema in
        /// admin/status.schema.json (the exit code is the same).
        #[arg(long)]
        json: bool,
    },
    /// List tunnels known to the control plane.
    List {
        /// Only tunnels in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show one tunnel: the device's facts, state, times.
    Show {
        /// Tunnel id (or a unique prefix of one you approved).
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The control plane's audit log (all, or one tunnel's).
    Audit {
        /// Tunnel id.
        id: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Approve a device's request with the owner's one-time code.
    ///
    /// Checks the code (a mistyped code is caught), fetches the request and
    /// verifies its tag (refuses, before launching anything, if the control
    /// plane altered facts, keys, ports or duration), runs a pre-flight
    /// (your certificate's dates and role, the hub provider), shows the
    /// request and asks (on a terminal), launches the hub, posts the sealed
    /// and signed approval, and waits until the device reports connected.
    /// A tunnel that has a hub gets no second one.
    Approve {
        /// The code exactly as the owner sent it (dashes optional). Left
        /// out, it is asked for (or read from stdin), so it stays out of
        /// the shell's history.
        code: Option<String>,
        /// Where the hub runs [default: admin.toml's provider, else local].
        #[arg(long, value_enum)]
        provider: Option<ProviderArg>,
        /// Grant less time than requested (e.g. 2h, 90m).
        #[arg(long, value_parser = support_protocol::duration_text::parse)]
        duration: Option<u32>,
        /// Grant fewer ports than requested (e.g. 22).
        #[arg(long, value_delimiter = ',')]
        ports: Option<Vec<u16>>,
        /// How long to wait for the device to connect (0: don't wait).
        #[arg(long, default_value = "300", value_name = "SECS")]
        wait: u64,
        /// Do not ask for confirmation (a terminal is asked; scripts pass this).
        #[arg(long)]
        yes: bool,
    },
    /// Wait for the device to connect under the approval you posted.
    Wait {
        /// Tunnel id (or unique prefix).
        id: String,
        /// How long to wait.
        #[arg(long, default_value = "300", value_name = "SECS")]
        wait: u64,
    },
    /// An interactive shell on the device.
    Connect {
        /// Tunnel id (or unique prefix).
        id: String,
    },
    /// Run a command on the device; exits with its exit code.
    Exec {
        /// Tunnel id (or unique prefix).
        id: String,
        /// The command and its arguments (after --).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Forward a local port to a device port, for any tool (browser, ssh, scp).
    Forward {
        /// Tunnel id (or unique prefix).
        id: String,
        /// LOCAL_PORT:DEVICE_PORT, or DEVICE_PORT alone, e.g. 8080:80 or 22;
        /// several at once: forward ID 8080:80 2222:22.
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<String>,
    },
    /// Start the tunnel's session now: the one WireGuard peer that connect,
    /// exec, forward and ssh share (the first of them starts it otherwise).
    Up {
        /// Tunnel id (or unique prefix).
        id: String,
        /// End the session this many seconds after the last tool detaches.
        #[arg(long, default_value = "300", value_name = "SECS")]
        idle: u64,
    },
    /// The session process itself (started by `up` and the other commands).
    #[command(hide = true)]
    Session {
        /// Tunnel id.
        id: String,
        /// Seconds without clients before it ends.
        #[arg(long, default_value = "300")]
        idle: u64,
    },
    /// Print an OpenSSH config block for this tunnel (key and pinned host
    /// key included), or --install one file for all of them that
    /// ~/.ssh/config includes; then `ssh support-ID` works.
    SshConfig {
        /// Tunnel id (or unique prefix); not with --install.
        id: Option<String>,
        /// Reach the device through `support-admin forward ID PORT:22` on this
        /// local port, instead of a ProxyCommand.
        #[arg(long)]
        port: Option<u16>,
        /// Write every tunnel's block to one generated file (kept current by
        /// approve, stop and gc) and include it from ~/.ssh/config, once.
        #[arg(long)]
        install: bool,
    },
    /// Relay stdin/stdout to a device port (used as ssh's ProxyCommand).
    Proxy {
        /// Tunnel id.
        id: String,
        /// Device port.
        port: u16,
    },
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    ///
    /// bash: support-admin completions bash > ~/.local/share/bash-completion/completions/support-admin
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (support-admin.1 and one per command) into DIR.
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
    /// Stop a tunnel: the device tears down, the hub is deleted, local secrets wiped.
    Stop {
        /// Tunnel id (or unique prefix).
        id: String,
    },
    /// Delete hubs of ended tunnels (also ones no local record knows) and wipe their secrets.
    Gc,
    /// Give a live tunnel to another engineer; you can no longer connect.
    ///
    /// NAME must be enrolled at the control plane and certified by the same
    /// support CA as you, with the approver role, and must have run
    /// `support-admin handoffs` once (that publishes the key hand-offs are
    /// sealed to, signed with their certified key, so the control plane
    /// cannot slip in a key of its own).
    ///
    /// The tunnel's secrets (its WireGuard and SSH keys, the one-time secret,
    /// the pinned host keys) are sealed to NAME, signed by you, and left in the
    /// control plane's mailbox, which cannot read them. Once the control plane
    /// confirms, the tunnel's session here ends, its secrets are wiped, and
    /// `connect`/`exec` say to whom it went. NAME runs `support-admin pickup ID`.
    /// The audit log records the hand-off and the pick-up.
    ///
    /// Wiping stops an honest sender: the device's peer key does not change,
    /// so a copy taken before works until the tunnel ends (stop it if that matters).
    Handoff {
        /// Tunnel id (or unique prefix).
        id: String,
        /// The engineer who takes over (their enrolled and certified name).
        #[arg(long, value_name = "NAME")]
        to: String,
        /// Do not ask for confirmation (a terminal is asked; scripts pass this).
        #[arg(long)]
        yes: bool,
    },
    /// Tunnels other engineers handed off to you, waiting for `pickup`.
    ///
    /// Also publishes your hand-off key (your enrolled key, signed with your
    /// certified key): run it once after installing a certificate, so that
    /// others can hand tunnels to you.
    Handoffs {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Take a tunnel handed off to you: verify, store, then connect as usual.
    ///
    /// Checks the sender's certificate (same support CA as yours, approver
    /// role, valid) and signature, that the package is sealed to your key and
    /// is about this tunnel, then stores the tunnel like `approve` does and
    /// deletes the package from the mailbox. Then `connect`, `exec`,
    /// `forward` and `ssh support-ID` work for you.
    Pickup {
        /// Tunnel id (or a unique prefix of one `handoffs` lists).
        id: String,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the CA key (prints the public key that devices pin).
    Init,
    /// Print the CA's public key.
    PublicKey,
    /// Certify an engineer's approver key (prints the certificate).
    Sign {
        /// The engineer's name (shown to device owners in their log).
        name: String,
        /// The engineer's approver key (hex, from `support-admin init`).
        pubkey: String,
        /// Validity in days (keep it short).
        #[arg(long, default_value = "90")]
        days: u32,
        /// approver (may approve) or viewer (may not).
        #[arg(long, value_enum, default_value = "approver")]
        role: RoleArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderArg {
    Local,
    Gcp,
}

impl From<ProviderArg> for ProviderKind {
    fn from(p: ProviderArg) -> ProviderKind {
        match p {
            ProviderArg::Local => ProviderKind::Local,
            ProviderArg::Gcp => ProviderKind::Gcp,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Approver,
    Viewer,
}

/// A tunnel state on the command line, by its one name
/// ([`TunnelStateKind::name`]), in [`TunnelStateKind::ALL`]'s order.
#[derive(Clone, Copy)]
struct StateArg(TunnelStateKind);

impl ValueEnum for StateArg {
    fn value_variants<'a>() -> &'a [Self] {
        static ALL: [StateArg; TunnelStateKind::ALL.len()] = {
            let mut all = [StateArg(TunnelStateKind::Pending); TunnelStateKind::ALL.len()];
            let mut i = 0;
            while i < all.len() {
                all[i] = StateArg(TunnelStateKind::ALL[i]);
                i += 1;
            }
            all
        };
        &ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.name()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("support-admin: {e}");
            ExitCode::FAILURE
        }
    }
}
