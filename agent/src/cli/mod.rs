//! Command-line parsing and the commands. When the daemon runs, commands go
//! through its socket; otherwise they work on the state directory directly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{parse_duration, parse_ports, Config, Overrides, DEFAULT_PATH};
use crate::daemon::Daemon;
use crate::owner_log;
use crate::runtime::TunnelStatus;
use crate::socket::{self, SocketRequest, SocketResponse};
use crate::state::StateDir;
use crate::util::format_duration;

const HELP: &str = "\
support-agent: lets support reach this device, only when its owner asks, for a limited time.

Usage: support-agent [OPTIONS] <COMMAND>

Commands:
  request   Ask for support: prints the one-time code to give to support
  daemon    Run the service that waits for approval, connects, and tears down
  status    Show the tunnels and what they are doing
  list      List every tunnel this device has had
  log       Show the owner's record of a tunnel: who approved, which key, connections
  stop      End a tunnel now (or --all): the owner's kill switch
  repair    Remove anything left behind by ended tunnels (safe to run any time)

Options:
  --config PATH         Config file [default: /etc/support-tunnel/agent.toml]
  --control-plane URL   Override the control plane's URL
  --state-dir DIR       Override the state directory
  --socket PATH         Override the daemon's socket
  -h, --help            Help (also: support-agent <COMMAND> --help)
  -V, --version         Version

How it works: `request` registers with the control plane and shows a code.
Send the code to support yourself (chat, e-mail, phone). Support approves
with it and a key the support organization certified; this device checks
that approval itself before it changes anything, then opens SSH (and any
other allowlisted port) to that engineer only, until the time is up or you
run `support-agent stop`.
";

const REQUEST_HELP: &str = "\
support-agent request: ask for support and show the one-time code.

Usage: support-agent request [--duration D] [--ports LIST] [--note TEXT] [--wait]

  --duration D    How long support may stay (e.g. 2h, 90m, 1d); at most the
                  config's max_duration [default: the config's default_duration]
  --ports LIST    Device ports support may reach, e.g. 22,80; each must be in
                  the config's [ports] allowlist [default: default_ports]
  --note TEXT     A note for support (what is wrong)
  --wait          Stay in the foreground until the tunnel ends (for setups
                  without the daemon); Ctrl-C stops the tunnel

The code is printed here only: it is never logged. Anyone holding it can
approve nothing without a key certified by the support organization, but
give it only to support.
";

const DAEMON_HELP: &str = "\
support-agent daemon: the service behind every tunnel.

Usage: support-agent daemon

At start it removes whatever an earlier run left behind and resumes live
tunnels. It then waits for approvals (long poll), verifies them, brings up
the tunnel and the support user, and ends everything at stop or expiry. It
serves a local socket (root and the support group) for request, status and
stop. Run it under systemd with the shipped support-agent.service.
";

const STATUS_HELP: &str = "\
support-agent status: the tunnels and what they are doing.

Usage: support-agent status [--json]
";

const LIST_HELP: &str = "\
support-agent list: every tunnel this device has a record of, newest last.

Usage: support-agent list [--json]
";

const LOG_HELP: &str = "\
support-agent log: the owner's record of a tunnel: who approved it (as the
support organization certified them), which SSH key, each connection with
its port, times and bytes, and how it ended.

Usage: support-agent log [ID] [--json]     (default: the newest tunnel)
";

const STOP_HELP: &str = "\
support-agent stop: end a tunnel now. The support user, its processes, its
key and its sudo entry are removed within seconds; support is told.

Usage: support-agent stop [ID | --all]     (ID may be a unique prefix)
";

const REPAIR_HELP: &str = "\
support-agent repair: remove support users, keys and sudo entries that
belong to no live tunnel (after a crash, say). Safe to run any time.

Usage: support-agent repair
";

/// Parsed command line.
#[derive(Default, Debug)]
struct Args {
    command: Option<String>,
    positional: Vec<String>,
    config: Option<PathBuf>,
    overrides: Overrides,
    duration: Option<String>,
    ports: Option<String>,
    note: Option<String>,
    wait: bool,
    json: bool,
    all: bool,
    help: bool,
    version: bool,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |n: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{n} needs a value"))
        };
        match name.as_str() {
            "--config" => a.config = Some(value(&name)?.into()),
            "--control-plane" => a.overrides.control_plane = Some(value(&name)?),
            "--state-dir" => a.overrides.state_dir = Some(value(&name)?.into()),
            "--socket" => a.overrides.socket = Some(value(&name)?.into()),
            "--duration" => a.duration = Some(value(&name)?),
            "--ports" => a.ports = Some(value(&name)?),
            "--note" => a.note = Some(value(&name)?),
            "--wait" => a.wait = true,
            "--json" => a.json = true,
            "--all" => a.all = true,
            "-h" | "--help" => a.help = true,
            "-V" | "--version" => a.version = true,
            f if f.starts_with('-') => return Err(format!("unknown option {f}; see --help")),
            _ if a.command.is_none() => a.command = Some(arg),
            _ => a.positional.push(arg),
        }
    }
    Ok(a)
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    if args.version {
        println!(
            "support-agent {} (protocol version {})",
            env!("CARGO_PKG_VERSION"),
            support_protocol::PROTOCOL_VERSION
        );
        return ExitCode::SUCCESS;
    }
    let help = match args.command.as_deref() {
        None => Some(HELP),
        Some("request") => Some(REQUEST_HELP),
        Some("daemon") => Some(DAEMON_HELP),
        Some("status") => Some(STATUS_HELP),
        Some("list") => Some(LIST_HELP),
        Some("log") => Some(LOG_HELP),
        Some("stop") => Some(STOP_HELP),
        Some("repair") => Some(REPAIR_HELP),
        Some("help") => Some(HELP),
        Some(other) => return fail(&format!("unknown command '{other}'; see --help")),
    };
    if args.help || args.command.is_none() || args.command.as_deref() == Some("help") {
        print!("{}", help.unwrap_or(HELP));
        return ExitCode::SUCCESS;
    }
    let path = args
        .config
        .clone()
        .or_else(|| std::env::var_os("SUPPORT_AGENT_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    let config = match Config::load(&path, &args.overrides) {
        Ok(c) => c,
        Err(e) => return fail(&e.0),
    };
    let result = match args.command.as_deref().unwrap_or_default() {
        "request" => request(&args, config),
        "daemon" => daemon(config),
        "status" => status(&args, &config),
        "list" => list(&args, &config),
        "log" => log(&args, &config),
        "stop" => stop(&args, &config),
        "repair" => repair(&config),
        _ => Err("unreachable".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &str) -> ExitCode {
    eprintln!("support-agent: {e}");
    ExitCode::FAILURE
}

fn daemon_answer(r: SocketResponse) -> Result<SocketResponse, String> {
    if r.ok {
        Ok(r)
    } else {
        Err(r.error.unwrap_or_else(|| "the daemon refused".into()))
    }
}

fn print_code(id: &str, code: &str, stale_after_secs: u32) {
    println!("Support request registered. Give this code to support, and only to them:");
    println!();
    println!("{code}");
    println!();
    println!(
        "tunnel {id}; the request goes stale in {} if nobody approves it.",
        format_duration(u64::from(stale_after_secs))
    );
    println!("Stop it at any time with: support-agent stop {id}");
}

fn request(args: &Args, config: Config) -> Result<(), String> {
    let duration = args
        .duration
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .map(|d| d.as_secs() as u32);
    let ports = args.ports.as_deref().map(parse_ports).transpose()?;
    let note = args.note.clone().unwrap_or_default();
    if !args.wait {
        let req = SocketRequest::Request {
            duration_secs: duration,
            ports: ports.clone(),
            note: Some(note.clone()),
        };
        if let Some(r) = socket::call(&config.socket, &req)? {
            let r = daemon_answer(r)?;
            print_code(
                r.id.as_deref().unwrap_or("?"),
                r.code.as_deref().unwrap_or("?"),
                r.stale_after_secs.unwrap_or(0),
            );
            return Ok(());
        }
        return Err(
            "the daemon is not running (start support-agent.service), or use request --wait to stay in the foreground"
                .into(),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let d = Daemon::start(config)?;
    let reg = d.request(duration, ports, &note)?;
    print_code(&reg.record.id, &reg.code, reg.stale_after_secs);
    println!("Waiting in the foreground; Ctrl-C ends the tunnel.");
    let id = reg.record.id.clone();
    drop(reg);
    let watcher = {
        let d = d.clone();
        let stop = stop.clone();
        let id = id.clone();
        std::thread::spawn(move || {
            let mut last = String::new();
            loop {
                if stop.load(Ordering::SeqCst) {
                    println!("stopping...");
                    let _ = d.stop(Some(&id));
                    return;
                }
                if let Some(s) = d.ctx.statuses().into_iter().find(|s| s.id == id) {
                    let line = describe(&s);
                    if line != last {
                        println!("{line}");
                        last = line;
                    }
                    if s.phase == "ended" {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let never = AtomicBool::new(false);
    d.serve(true, &never)?;
    let _ = watcher.join();
    // Give the stop notice a moment to reach the control plane; if it does
    // not, the record keeps it and the next start of the agent sends it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while d.any_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn describe(s: &TunnelStatus) -> String {
    match s.phase.as_str() {
        "pending" => match s.stale_at {
            Some(t) => format!(
                "waiting for support to approve (goes stale at {} if nobody does)",
                crate::util::format_time(t)
            ),
            None => "waiting for support to approve...".to_string(),
        },
        "connecting" => format!(
            "approved by {}; opening the tunnel...",
            s.approver.as_deref().unwrap_or("?")
        ),
        "connected" => format!(
            "connected: support ({}) can log in as {}",
            s.approver.as_deref().unwrap_or("?"),
            s.user.as_deref().unwrap_or("?")
        ),
        "ending" => format!("ending: {}", s.ended.as_deref().unwrap_or("?")),
        "ended" => format!("ended: {}", s.ended.as_deref().unwrap_or("?")),
        other => other.to_string(),
    }
}

fn daemon(config: Config) -> Result<(), String> {
    let d = Daemon::start(config)?;
    eprintln!(
        "support-agent: daemon running; socket {}",
        d.ctx.config.socket.display()
    );
    let never = AtomicBool::new(false);
    d.serve(false, &never)
}

fn status(args: &Args, config: &Config) -> Result<(), String> {
    let (tunnels, live) = match socket::call(&config.socket, &SocketRequest::Status {})? {
        Some(r) => (daemon_answer(r)?.tunnels.unwrap_or_default(), true),
        None => {
            let state = StateDir::existing(&config.state_dir);
            let tunnels = match state.read_status() {
                Ok(b) => serde_json::from_slice::<Vec<TunnelStatus>>(&b).unwrap_or_default(),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(
                    "the daemon is not running, and only root can read the status it last wrote"
                        .into(),
                ),
                Err(_) => Vec::new(),
            };
            (tunnels, false)
        }
    };
    if args.json {
        let v = serde_json::json!({ "daemon_running": live, "tunnels": tunnels });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    if !live {
        println!("The daemon is not running; this is the last status it wrote.");
    }
    let active: Vec<&TunnelStatus> = tunnels.iter().filter(|t| t.phase != "ended").collect();
    if active.is_empty() {
        println!("No active support tunnel.");
    }
    for t in tunnels.iter() {
        let left = t
            .remaining_secs
            .map(|s| format!(", {} left", format_duration(s)))
            .unwrap_or_default();
        let cp = t
            .control_plane_error
            .as_deref()
            .map(|e| format!("\n    control plane: {e} (retrying)"))
            .unwrap_or_default();
        println!("{}  {}{left}{cp}", t.id, describe(t));
    }
    Ok(())
}

/// Asks the daemon, or (root, no daemon) reads the state directory itself.
fn from_daemon_or_files<T>(
    config: &Config,
    req: SocketRequest,
    from_answer: impl FnOnce(SocketResponse) -> T,
    from_files: impl FnOnce(&StateDir) -> Result<T, String>,
) -> Result<T, String> {
    match socket::call(&config.socket, &req)? {
        Some(r) => Ok(from_answer(daemon_answer(r)?)),
        None if rustix::process::geteuid().is_root() => {
            from_files(&StateDir::existing(&config.state_dir))
        }
        None => Err("the daemon is not running; without it only root can read the records".into()),
    }
}

fn list(args: &Args, config: &Config) -> Result<(), String> {
    let rows = from_daemon_or_files(
        config,
        SocketRequest::List {},
        |r| r.list.unwrap_or_default(),
        |state| Ok(owner_log::list(state)),
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else if rows.is_empty() {
        println!("This device has no support tunnels on record.");
    } else {
        for r in rows {
            println!("{}  {}", r.id, r.last);
        }
    }
    Ok(())
}

fn log(args: &Args, config: &Config) -> Result<(), String> {
    let want = args.positional.first().cloned();
    let (id, lines) = from_daemon_or_files(
        config,
        SocketRequest::Log { id: want.clone() },
        |r| (r.id.unwrap_or_default(), r.log.unwrap_or_default()),
        |state| owner_log::read_tunnel(state, want.as_deref()),
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&lines).unwrap_or_default()
        );
    } else {
        println!("tunnel {id}");
        for l in lines {
            println!("  {}", l.render());
        }
    }
    Ok(())
}

fn stop(args: &Args, config: &Config) -> Result<(), String> {
    let id = args.positional.first().cloned();
    if id.is_none() && !args.all {
        return Err("say which tunnel to stop (support-agent stop ID), or --all".into());
    }
    let req = SocketRequest::Stop { id: id.clone() };
    match socket::call(&config.socket, &req)? {
        Some(r) => {
            let done = daemon_answer(r)?.done.unwrap_or_default();
            if done.is_empty() {
                println!("No running tunnel to stop.");
            }
            for id in done {
                println!("stopped {id}; its support access is removed");
            }
            Ok(())
        }
        None => {
            // No daemon: nothing serves a tunnel; end the records here.
            let done = crate::daemon::stop_offline(config.clone(), id.as_deref())?;
            for id in &done {
                println!("stopped {id}; its support access is removed");
            }
            if done.is_empty() {
                println!("No running tunnel to stop.");
            }
            Ok(())
        }
    }
}

fn repair(config: &Config) -> Result<(), String> {
    let r = match socket::call(&config.socket, &SocketRequest::Repair {})? {
        Some(r) => r,
        None => {
            let r = crate::daemon::repair_offline(config.clone())?;
            SocketResponse {
                ok: r.problems.is_empty(),
                error: (!r.problems.is_empty()).then(|| r.problems.join("; ")),
                done: Some(r.done),
                ..SocketResponse::default()
            }
        }
    };
    for line in r.done.iter().flatten() {
        println!("{line}");
    }
    if r.ok {
        if r.done.as_ref().is_none_or(|d| d.is_empty()) {
            println!("Nothing to repair.");
        }
        Ok(())
    } else {
        Err(r.error.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Result<Args, String> {
        parse(s.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags_anywhere() {
        let a = args(&["--state-dir=/x", "request", "--ports", "22,80", "--wait"]).expect("ok");
        assert_eq!(a.command.as_deref(), Some("request"));
        assert_eq!(a.ports.as_deref(), Some("22,80"));
        assert!(a.wait);
        assert_eq!(a.overrides.state_dir, Some(PathBuf::from("/x")));
        assert!(args(&["request", "--duration"]).is_err());
        assert!(args(&["request", "--bogus"]).is_err());
    }
}
