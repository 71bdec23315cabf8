//! The command line: its grammar (`args`), its help (`help`), and the
//! commands. When the daemon runs, commands go through its socket;
//! otherwise they work on the state directory directly.

mod args;
mod help;

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use args::{Command, RequestArgs};

use crate::config::{parse_duration, parse_ports, Config, DEFAULT_PATH};
use crate::daemon::Daemon;
use crate::journal;
use crate::owner_log;
use crate::recording;
use crate::runtime::{EndReason, StatusPhase, TunnelStatus};
use crate::socket::{self, ErrorCode, Failure, SocketRequest, SocketResponse};
use crate::state::StateDir;
use crate::util::format_duration;

/// `println!` that ignores a closed stdout: a foreground tunnel
/// (`request --wait | head`) must not die, leaving its access, because
/// nobody reads its output any more.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// What a command fails with: the typed errors of the parts it uses, or a
/// sentence of its own. `main` prints it; nothing looks inside.
type Error = Box<dyn std::error::Error>;

/// Exit status of a usage error.
const USAGE: u8 = 2;
/// Exit status of a followed request the device refused, or that failed.
const REFUSED: u8 = 3;
/// Exit status of a followed request nobody approved in time.
const STALE: u8 = 4;

/// Runs the command line.
pub fn main() -> ExitCode {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(code) = crate::recorder::entry(&raw) {
        return code;
    }
    let args = match args::parse(raw) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("support-agent: {e}\nSee: support-agent --help");
            return ExitCode::from(USAGE);
        }
    };
    let config_path = || {
        args.config
            .clone()
            .or_else(|| std::env::var_os("SUPPORT_AGENT_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    };
    let load = || -> Result<Config, Error> {
        let c = Config::load(&config_path(), &args.overrides)?;
        journal::set_level(match args.verbose {
            true => journal::Level::Debug,
            false => c.log_level,
        });
        Ok(c)
    };
    let result = match args.command {
        Command::Version => {
            out!(
                "support-agent {} (protocol version {}, socket protocol version {})",
                env!("CARGO_PKG_VERSION"),
                support_protocol::PROTOCOL_VERSION,
                socket::VERSION
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Help(ref c) => {
            print!("{}", help::text(c.as_deref()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate {
            dry_run,
            yes,
            ref root,
        } => crate::migrate::run(&crate::migrate::Options {
            root: root.clone().unwrap_or_else(|| PathBuf::from("/")),
            dry_run,
            assume_yes: yes,
        })
        .map(|()| ExitCode::SUCCESS)
        .map_err(Error::from),
        ref command => load().and_then(|config| run(command, config)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("support-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: &Command, config: Config) -> Result<ExitCode, Error> {
    let done = |r: Result<(), Error>| r.map(|()| ExitCode::SUCCESS);
    match command {
        Command::Request(r) => request(r, config),
        Command::Daemon => done(daemon(config)),
        Command::Status { json } => done(status(*json, &config)),
        Command::List { json } => done(list(*json, &config)),
        Command::Log { id, json } => done(log(id.clone(), *json, &config)),
        Command::Stop { id } => done(stop(id.clone(), &config)),
        Command::Repair => done(repair(&config)),
        Command::Watch { id } => done(watch(id.clone(), &config)),
        Command::Replay { id, session, speed } => {
            done(replay(id.as_deref(), *session, *speed, &config))
        }
        Command::InstallSshd { drop_in } => done(install_sshd(drop_in.as_deref(), &config)),
        Command::Help(_) | Command::Version | Command::Migrate { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// The daemon's answer, or its failure.
fn daemon_answer(r: SocketResponse) -> Result<SocketResponse, Failure> {
    if r.ok {
        Ok(r)
    } else {
        Err(Failure::new(
            r.error_code.unwrap_or(ErrorCode::Failed),
            r.error.unwrap_or_else(|| "the daemon refused".into()),
        ))
    }
}

/// What `request` prints once the request is registered.
struct Registration {
    id: String,
    code: String,
    stale_after_secs: u32,
    stale_at: u64,
}

impl Registration {
    fn print(&self, json: bool) {
        if json {
            let v = serde_json::json!({
                "id": self.id,
                "code": self.code,
                "stale_after_secs": self.stale_after_secs,
                "stale_at": self.stale_at,
            });
            out!("{v}");
            return;
        }
        out!("Support request registered. Give this code to support, and only to them:");
        out!();
        out!("{}", self.code);
        out!();
        out!(
            "tunnel {}; the request goes stale in {} if nobody approves it.",
            self.id,
            format_duration(u64::from(self.stale_after_secs))
        );
        out!("Stop it at any time with: support-agent stop {}", self.id);
    }
}

fn request(args: &RequestArgs, config: Config) -> Result<ExitCode, Error> {
    let duration = args
        .duration
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .map(|d| d.as_secs() as u32);
    let ports = args.ports.as_deref().map(parse_ports).transpose()?;
    let note = args.note.clone().unwrap_or_default();
    let req = SocketRequest::Request {
        duration_secs: duration,
        ports: ports.clone(),
        note: Some(note.clone()),
    };
    if let Some(r) = socket::call(&config.socket, &req)? {
        let r = daemon_answer(r)?;
        let reg = Registration {
            id: r.id.unwrap_or_default(),
            code: r.code.unwrap_or_default(),
            stale_after_secs: r.stale_after_secs.unwrap_or(0),
            stale_at: r.stale_at.unwrap_or(0),
        };
        if !(args.follow || args.wait) {
            reg.print(args.json);
            return Ok(ExitCode::SUCCESS);
        }
        let stop_on_signal = match args.wait {
            true => Some(stop_flag()?),
            false => None,
        };
        return follow_daemon(&config, &reg, args.json, stop_on_signal);
    }
    if !args.wait {
        return Err(
            "the daemon is not running (start support-agent.service), or use request --wait to run the tunnel in the foreground"
                .into(),
        );
    }
    let stop = stop_flag()?;
    let d = Daemon::start(config)?;
    let reg = d.request(duration, ports, &note)?;
    Registration {
        id: reg.record.id.clone(),
        code: reg.code.to_string(),
        stale_after_secs: reg.stale_after_secs,
        stale_at: reg.stale_at(),
    }
    .print(args.json);
    if !args.json {
        out!("Waiting in the foreground; Ctrl-C ends the tunnel.");
    }
    let id = reg.record.id.clone();
    drop(reg);
    let watcher = {
        let d = d.clone();
        let json = args.json;
        std::thread::spawn(move || {
            let mut follower = Follower::new(json);
            let mut seen = d.ctx.generation();
            loop {
                if stop.swap(false, Ordering::SeqCst) {
                    if !json {
                        out!("stopping...");
                    }
                    let _ = d.stop(Some(&id));
                }
                if let Some(s) = d.ctx.statuses().into_iter().find(|s| s.id == id) {
                    if let Some(code) = follower.show(&s) {
                        return code;
                    }
                }
                seen = d.ctx.wait_change(seen, Duration::from_millis(200));
            }
        })
    };
    let never = AtomicBool::new(false);
    d.serve(true, &never)?;
    let code = watcher.join().unwrap_or(ExitCode::FAILURE);
    // Give the stop notice a moment to reach the control plane; if it does
    // not, the record keeps it and the next start of the agent sends it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while d.any_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(code)
}

/// A flag raised by SIGINT, SIGTERM or SIGHUP (the terminal closed).
fn stop_flag() -> Result<Arc<AtomicBool>, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

/// Follows the registered tunnel through the daemon's `watch` until it has
/// ended. The code is shown once the watch runs, so every phase after it is
/// seen. With `stop_on_signal`, a signal stops the tunnel (and following
/// goes on until it has ended).
fn follow_daemon(
    config: &Config,
    reg: &Registration,
    json: bool,
    stop_on_signal: Option<Arc<AtomicBool>>,
) -> Result<ExitCode, Error> {
    let id = reg.id.as_str();
    let stream = socket::connect(&config.socket)?.ok_or("the daemon went away")?;
    socket::send(
        &stream,
        &SocketRequest::Watch {
            id: Some(id.into()),
        },
    )?;
    if let Some(flag) = stop_on_signal {
        let (socket_path, id) = (config.socket.clone(), id.to_string());
        std::thread::spawn(move || loop {
            if flag.swap(false, Ordering::SeqCst) {
                let _ = socket::call(
                    &socket_path,
                    &SocketRequest::Stop {
                        id: Some(id.clone()),
                    },
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        });
    }
    let mut reader = BufReader::new(stream);
    let mut follower = Follower::new(json);
    let mut next = socket::receive(&mut reader)?;
    reg.print(json);
    while let Some(answer) = next {
        let answer = daemon_answer(answer)?;
        if let Some(code) = answer.tunnel.as_ref().and_then(|s| follower.show(s)) {
            return Ok(code);
        }
        next = socket::receive(&mut reader)?;
    }
    Err("the daemon closed the watch before the tunnel ended".into())
}

/// Prints each new phase of a followed tunnel; knows the exit status at the end.
struct Follower {
    json: bool,
    last: String,
}

impl Follower {
    fn new(json: bool) -> Follower {
        Follower {
            json,
            last: String::new(),
        }
    }

    /// Shows `s` if it says something new; the exit status once it has ended.
    fn show(&mut self, s: &TunnelStatus) -> Option<ExitCode> {
        let line = match self.json {
            true => serde_json::to_string(s).unwrap_or_default(),
            false => describe(s),
        };
        if line != self.last {
            out!("{line}");
            self.last = line;
        }
        (s.phase == StatusPhase::Ended).then(|| exit_status(s.end_reason))
    }
}

/// The exit status of a followed request, by how it ended.
fn exit_status(end_reason: Option<EndReason>) -> ExitCode {
    match end_reason {
        Some(EndReason::Refused | EndReason::Failed) => ExitCode::from(REFUSED),
        Some(EndReason::Stale) => ExitCode::from(STALE),
        _ => ExitCode::SUCCESS,
    }
}

fn describe(s: &TunnelStatus) -> String {
    match s.phase {
        StatusPhase::Pending => match s.stale_at {
            Some(t) => format!(
                "waiting for support to approve (goes stale at {} if nobody does)",
                crate::util::format_time(t)
            ),
            None => "waiting for support to approve...".to_string(),
        },
        StatusPhase::Connecting => format!(
            "approved by {}; opening the tunnel...",
            s.approver.as_deref().unwrap_or("?")
        ),
        StatusPhase::Connected => format!(
            "connected: support ({}) can log in as {}",
            s.approver.as_deref().unwrap_or("?"),
            s.user.as_deref().unwrap_or("?")
        ),
        StatusPhase::Ending => format!("ending: {}", s.ended.as_deref().unwrap_or("?")),
        StatusPhase::Ended => format!("ended: {}", s.ended.as_deref().unwrap_or("?")),
    }
}

fn daemon(config: Config) -> Result<(), Error> {
    let d = Daemon::start(config)?;
    let never = AtomicBool::new(false);
    Ok(d.serve(false, &never)?)
}

fn status(json: bool, config: &Config) -> Result<(), Error> {
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
    if json {
        let v = serde_json::json!({ "daemon_running": live, "tunnels": tunnels });
        out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    if !live {
        out!("The daemon is not running; this is the last status it wrote.");
    }
    let active: Vec<&TunnelStatus> = tunnels
        .iter()
        .filter(|t| t.phase != StatusPhase::Ended)
        .collect();
    if active.is_empty() {
        out!("No active support tunnel.");
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
        out!("{}  {}{left}{cp}", t.id, describe(t));
    }
    Ok(())
}

/// Asks the daemon, or (root, no daemon) reads the state directory itself.
fn from_daemon_or_files<T>(
    config: &Config,
    req: SocketRequest,
    from_answer: impl FnOnce(SocketResponse) -> T,
    from_files: impl FnOnce(&StateDir) -> Result<T, Failure>,
) -> Result<T, Error> {
    match socket::call(&config.socket, &req)? {
        Some(r) => Ok(from_answer(daemon_answer(r)?)),
        None if rustix::process::geteuid().is_root() => {
            Ok(from_files(&StateDir::existing(&config.state_dir))?)
        }
        None => Err("the daemon is not running; without it only root can read the records".into()),
    }
}

fn list(json: bool, config: &Config) -> Result<(), Error> {
    let rows = from_daemon_or_files(
        config,
        SocketRequest::List {},
        |r| r.list.unwrap_or_default(),
        |state| Ok(owner_log::list(state)),
    )?;
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else if rows.is_empty() {
        out!("This device has no support tunnels on record.");
    } else {
        for r in rows {
            out!("{}  {}", r.id, r.last);
        }
    }
    Ok(())
}

fn log(want: Option<String>, json: bool, config: &Config) -> Result<(), Error> {
    let (id, lines, recordings) = from_daemon_or_files(
        config,
        SocketRequest::Log { id: want.clone() },
        |r| {
            (
                r.id.unwrap_or_default(),
                r.log.unwrap_or_default(),
                r.recordings.unwrap_or_default(),
            )
        },
        |state| {
            let (id, lines) = owner_log::read_tunnel(state, want.as_deref())?;
            let recordings = recording::listed_on_disk(state, &id);
            Ok((id, lines, recordings))
        },
    )?;
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&lines).unwrap_or_default()
        );
        return Ok(());
    }
    out!("tunnel {id}");
    for l in lines {
        out!("  {}", l.render());
    }
    if !recordings.is_empty() {
        out!("recordings (support-agent replay {id} SESSION):");
        for r in recordings {
            let live = if r.live {
                ", live: support-agent watch"
            } else {
                ""
            };
            out!("  session {}: {} bytes{live}", r.session, r.bytes);
        }
    }
    Ok(())
}

/// One line of a recording stream: a session's header, an event, or the
/// daemon's refusal.
enum CastLine {
    Header(serde_json::Value),
    Event(f64, String, String),
    Other,
}

fn cast_line(line: &str) -> Result<CastLine, Error> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("the recording has a line that is not JSON: {e}"))?;
    if v.get("ok") == Some(&serde_json::Value::Bool(false)) {
        // Read from the value: a typed answer here would link a second
        // deserializer of the whole answer into the device binary.
        let why = v["error"].as_str().unwrap_or("the daemon refused");
        return Err(why.into());
    }
    if v.get("version").is_some() {
        return Ok(CastLine::Header(v));
    }
    match v.as_array().map(Vec::as_slice) {
        Some([t, code, data]) => Ok(CastLine::Event(
            t.as_f64().unwrap_or(0.0),
            code.as_str().unwrap_or("").to_string(),
            data.as_str().unwrap_or("").to_string(),
        )),
        _ => Ok(CastLine::Other),
    }
}

fn session_banner(h: &serde_json::Value) -> String {
    let st = &h["support_tunnel"];
    let command = st["command"]
        .as_str()
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    format!(
        "--- session {} ({}) of tunnel {} as {}{command} ---",
        st["session"],
        st["kind"].as_str().unwrap_or("?"),
        st["tunnel"].as_str().unwrap_or("?"),
        st["user"].as_str().unwrap_or("?"),
    )
}

/// Writes one event to the owner's terminal: output as it was, markers
/// (transfers, exit codes) on a line of their own; input is not echoed.
fn show_event(code: &str, data: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout();
    match code {
        "o" => {
            let _ = stdout.write_all(recording::terminal_safe(data).as_bytes());
        }
        "m" => {
            let _ = write!(stdout, "\r\n[{}]\r\n", recording::terminal_safe(data));
        }
        _ => {}
    }
    let _ = stdout.flush();
}

fn watch(id: Option<String>, config: &Config) -> Result<(), Error> {
    let stream = socket::connect(&config.socket)?
        .ok_or("the daemon is not running, so no session is live")?;
    socket::send(&stream, &SocketRequest::WatchSession { id })?;
    eprintln!("Watching support's sessions as they happen (read-only); Ctrl-C stops watching.");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        use std::io::{BufRead as _, Read as _};
        let n = (&mut reader)
            .take(8 << 20)
            .read_line(&mut line)
            .map_err(socket::ClientError::Receive)?;
        if n == 0 {
            break;
        }
        match cast_line(line.trim_end())? {
            CastLine::Header(h) => eprint!("\r\n{}\r\n", session_banner(&h)),
            CastLine::Event(_, code, data) => show_event(&code, &data),
            CastLine::Other => {}
        }
    }
    eprintln!("\r\nThe tunnel has ended; there is nothing more to watch.");
    Ok(())
}

fn replay(
    id: Option<&str>,
    session: Option<u32>,
    speed: f64,
    config: &Config,
) -> Result<(), Error> {
    let daemon = socket::connect(&config.socket)?.is_some();
    if !daemon && !rustix::process::geteuid().is_root() {
        return Err(
            "the daemon is not running; without it only root can read the recordings".into(),
        );
    }
    let state = StateDir::existing(&config.state_dir);
    let (tunnel, sessions) = match session {
        Some(n) => (id.map(String::from), vec![n]),
        None => {
            let (tunnel, listed) = from_daemon_or_files(
                config,
                SocketRequest::Recordings {
                    id: id.map(String::from),
                },
                |r| (r.id.unwrap_or_default(), r.recordings.unwrap_or_default()),
                |state| {
                    let (tunnel, _) = owner_log::read_tunnel(state, id)?;
                    let listed = recording::listed_on_disk(state, &tunnel);
                    Ok((tunnel, listed))
                },
            )?;
            if listed.is_empty() {
                return Err(format!("tunnel {tunnel} has no recorded sessions").into());
            }
            (Some(tunnel), listed.iter().map(|l| l.session).collect())
        }
    };
    for n in sessions {
        let source: Box<dyn std::io::BufRead> = match socket::connect(&config.socket)? {
            Some(stream) => {
                socket::send(
                    &stream,
                    &SocketRequest::Replay {
                        id: tunnel.clone(),
                        session: n,
                    },
                )?;
                Box::new(BufReader::new(stream))
            }
            None => {
                let (t, _) = owner_log::read_tunnel(&state, tunnel.as_deref())?;
                let file =
                    recording::open(&recording::root(&state), &t, n).map_err(|e| e.to_string())?;
                Box::new(BufReader::new(file))
            }
        };
        play(source, speed)?;
    }
    Ok(())
}

/// Plays one recording with its timing (`speed` times as fast, pauses at most 2 s).
fn play(source: Box<dyn std::io::BufRead>, speed: f64) -> Result<(), Error> {
    let mut last = 0.0;
    for line in std::io::BufRead::lines(source) {
        let line = line.map_err(socket::ClientError::Receive)?;
        match cast_line(&line)? {
            CastLine::Header(h) => {
                eprint!("{}\r\n", session_banner(&h));
                last = 0.0;
            }
            CastLine::Event(t, code, data) => {
                let pause = ((t - last) / speed).clamp(0.0, 2.0);
                if pause > 0.0005 && code != "i" {
                    std::thread::sleep(Duration::from_secs_f64(pause));
                }
                last = t;
                show_event(&code, &data);
            }
            CastLine::Other => {}
        }
    }
    eprint!("\r\n");
    Ok(())
}

fn install_sshd(drop_in: Option<&std::path::Path>, config: &Config) -> Result<(), Error> {
    if !rustix::process::geteuid().is_root() {
        return Err("install-sshd needs root (it writes sshd's config)".into());
    }
    let path = drop_in.unwrap_or(std::path::Path::new(crate::sshd::DEFAULT_DROP_IN));
    let done = crate::sshd::install(config, path)?;
    out!(
        "Wrote {}: every session of a support user runs through {} {}.",
        done.drop_in.display(),
        done.agent.display(),
        crate::sshd::RECORD_COMMAND
    );
    out!(
        "sshd accepts it and applies it (checked with a probe user of group {}).",
        config.group
    );
    out!("Reload sshd for it to take effect: systemctl reload ssh");
    Ok(())
}

fn stop(id: Option<String>, config: &Config) -> Result<(), Error> {
    let req = SocketRequest::Stop { id: id.clone() };
    match socket::call(&config.socket, &req)? {
        Some(r) => {
            let done = daemon_answer(r)?.done.unwrap_or_default();
            if done.is_empty() {
                out!("No running tunnel to stop.");
            }
            for id in done {
                out!("stopped {id}; its support access is removed");
            }
            Ok(())
        }
        None => {
            // No daemon: nothing serves a tunnel; end the records here.
            let done = crate::daemon::stop_offline(config.clone(), id.as_deref())?;
            for id in &done {
                out!("stopped {id}; its support access is removed");
            }
            if done.is_empty() {
                out!("No running tunnel to stop.");
            }
            Ok(())
        }
    }
}

fn repair(config: &Config) -> Result<(), Error> {
    let r = match socket::call(&config.socket, &SocketRequest::Repair {})? {
        Some(r) => r,
        None => {
            let r = crate::daemon::repair_offline(config.clone())?;
            let mut answer = match r.problems.is_empty() {
                true => SocketResponse::default(),
                false => SocketResponse::error(ErrorCode::Failed, r.problems.join("; ")),
            };
            answer.done = Some(r.done);
            answer
        }
    };
    for line in r.done.iter().flatten() {
        out!("{line}");
    }
    if r.ok {
        if r.done.as_ref().is_none_or(|d| d.is_empty()) {
            out!("Nothing to repair.");
        }
        Ok(())
    } else {
        Err(r.error.unwrap_or_default().into())
    }
}
