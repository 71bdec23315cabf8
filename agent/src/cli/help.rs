//! The help texts: `support-agent --help`, `help CMD`, `CMD --help`.

/// The general help.
pub const HELP: &str = "\
support-agent: lets support reach this device, only when its owner asks, for a limited time.

Usage: support-agent [OPTIONS] <COMMAND> [ARGS]

Commands:
  request   Ask for support: prints the one-time code to give to support
  daemon    Run the service that waits for approval, connects, and tears down
  status    Show the tunnels and what they are doing
  list      List every tunnel this device has had
  log       Show the owner's record of a tunnel: who approved, which key, connections
  stop      End a tunnel now (or --all): the owner's kill switch
  watch     Follow support's live session on this device, read-only
  replay    Replay a recorded support session
  repair    Remove anything left behind by ended tunnels (safe to run any time)
  install-sshd
            Install the sshd drop-in that records every support session
  migrate-from-original
            Remove what the original (Python) support tunnel left on this device
  help      This help, or a command's: support-agent help request

Options (before or after the command):
  --config PATH         Config file [default: /etc/support-tunnel/agent.toml]
  --control-plane URL   Override the control plane's URL (several: comma-separated)
  --state-dir DIR       Override the state directory
  --socket PATH         Override the daemon's socket
  -v, --verbose         Debug lines in the log (the config's log_level otherwise)
  -h, --help            Help (also: support-agent help <COMMAND>)
  -V, --version         Version

How it works: `request` registers with the control plane and shows a code.
Send the code to support yourself (chat, e-mail, phone). Support approves
with it and a key the support organization certified; this device checks
that approval itself before it changes anything, then opens SSH (and any
other allowlisted port) to that engineer only, until the time is up or you
run `support-agent stop`.

Exit status: 0 done, 1 failed, 2 usage error; request --follow/--wait also
3 (refused or failed) and 4 (nobody approved in time). Programs (the
device's web UI) talk to the daemon's socket: see SOCKET.md.
";

const REQUEST: &str = "\
support-agent request: ask for support and show the one-time code.

Usage: support-agent request [--duration D] [--ports LIST] [--note TEXT]
                             [--json] [--follow | --wait]

  --duration D    How long support may stay (e.g. 2h, 90m, 1d); at most the
                  config's max_duration [default: the config's default_duration]
  --ports LIST    Device ports support may reach, e.g. 22,80; each must be in
                  the config's [ports] allowlist [default: default_ports]
  --note TEXT     A note for support (what is wrong)
  --json          Print {\"id\", \"code\", \"stale_after_secs\", \"stale_at\"} as
                  JSON (and with --follow, each status as a JSON line)
  --follow        Then print each phase (approved by whom, connected, ended)
                  until the tunnel ends; Ctrl-C stops following, not the tunnel
  --wait          Like --follow, but Ctrl-C ends the tunnel; without a running
                  daemon it runs the tunnel in the foreground itself

Exit status with --follow or --wait: 0 when the tunnel ended after support
connected or when it was stopped, 3 when the device refused the approval or
failed to open the tunnel, 4 when nobody approved it before it went stale.

The code is printed here only: it is never logged. Anyone holding it can
approve nothing without a key certified by the support organization, but
give it only to support.
";

const DAEMON: &str = "\
support-agent daemon: the service behind every tunnel.

Usage: support-agent daemon

At start it removes whatever an earlier run left behind and resumes live
tunnels. It then waits for approvals (long poll), verifies them, brings up
the tunnel and the support user, and ends everything at stop or expiry. It
serves a local socket (root and the support group; protocol in SOCKET.md)
and, under systemd (Type=notify), reports READY and a STATUS line. Run it
with the shipped support-agent.service.
";

const STATUS: &str = "\
support-agent status: the tunnels and what they are doing.

Usage: support-agent status [--json]

  --json   {\"daemon_running\": bool, \"tunnels\": [status...]}; each status's
           fields are listed in SOCKET.md (\"The status object\")
";

const LIST: &str = "\
support-agent list: every tunnel this device has a record of, newest last.

Usage: support-agent list [--json]
";

const LOG: &str = "\
support-agent log: the owner's record of a tunnel: who approved it (as the
support organization certified them), which SSH key, each connection with
its port, times and bytes, each recorded session (its command, exit code,
files transferred), the recordings kept, and how it ended.

Usage: support-agent log [ID] [--json]     (default: the newest tunnel)
";

const WATCH: &str = "\
support-agent watch: follow support's session on this device as it
happens, read-only: what their terminal shows appears in yours. It follows
each session of the tunnel in turn until the tunnel ends; Ctrl-C stops
watching (not the session; support-agent stop ends that).

Usage: support-agent watch [ID]     (default: the newest live tunnel)

Needs the sshd drop-in (support-agent install-sshd): without it sessions
are not recorded, and there is nothing to watch.
";

const REPLAY: &str = "\
support-agent replay: play back what support's sessions showed, with their
timing. Files transferred and commands' exit codes are shown between the
lines. Without SESSION every recorded session of the tunnel plays in turn.

Usage: support-agent replay ID [SESSION] [--speed N]

  --speed N   Play N times as fast (e.g. 4, or 0.5) [default: 1]; pauses
              longer than 2 s are shortened to 2 s

The recordings are asciicast v2 files under the state directory
(recordings/ID/NNNN.cast), so asciinema can play them too. support-agent
log ID lists a tunnel's sessions.
";

const INSTALL_SSHD: &str = "\
support-agent install-sshd: make sshd send every session of a support user
through this agent's session recorder, so the owner can watch and replay
it. Writes the drop-in (Match Group <group> User support-*: the key file in
a root-owned directory, ForceCommand to the recorder, no forwarding of any
kind, no ~/.ssh/rc), has sshd check its configuration, and checks with a
short-lived probe user that sshd really applies it (the drop-in must be
included from sshd_config, as Debian's Include /etc/ssh/sshd_config.d/*.conf
does). Then reload sshd (systemctl reload ssh).

Usage: support-agent install-sshd [--drop-in PATH]

  --drop-in PATH   Where to write it [default: /etc/ssh/sshd_config.d/support-tunnel.conf]

The config's sshd_config, authorized_keys_dir and socket are what the
drop-in names. With require_recording = true the agent refuses to open a
tunnel whose sessions sshd would not record.
";

const STOP: &str = "\
support-agent stop: end a tunnel now. The support user, its processes, its
key and its sudo entry are removed within seconds; support is told.

Usage: support-agent stop ID | --all     (ID may be a unique prefix)
";

const REPAIR: &str = "\
support-agent repair: remove support users, keys and sudo entries that
belong to no live tunnel (after a crash, say). Safe to run any time.

Usage: support-agent repair
";

const MIGRATE: &str = "\
support-agent migrate-from-original: remove what the original (Python)
support tunnel left on this device: its wg-quick@support-N units and their
configs, the support users it made (exactly as it made them), its database
/var/lib/support_tunnel, its cron file, and AmpliPi's sudoers rule for the
whole support group (which would give this agent's users root without
expiry). Each item is listed with the reason first. Users that only look
like its users are left alone and named; the support group stays.

Usage: support-agent migrate-from-original [--dry-run] [--yes] [--root DIR]

  --dry-run   Only list what would be removed, and why
  --yes       Do not ask for confirmation (needed when stdin is not a terminal)
  --root DIR  Work on the tree under DIR instead of / (an image being built)
";

const HELP_CMD: &str = "\
support-agent help: the general help, or a command's.

Usage: support-agent help [COMMAND]
";

/// The help of `command` (the general help for `None`).
pub fn text(command: Option<&str>) -> &'static str {
    match command {
        Some("request") => REQUEST,
        Some("daemon") => DAEMON,
        Some("status") => STATUS,
        Some("list") => LIST,
        Some("log") => LOG,
        Some("stop") => STOP,
        Some("repair") => REPAIR,
        Some("watch") => WATCH,
        Some("replay") => REPLAY,
        Some("install-sshd") => INSTALL_SSHD,
        Some("migrate-from-original") => MIGRATE,
        Some("help") => HELP_CMD,
        _ => HELP,
    }
}
