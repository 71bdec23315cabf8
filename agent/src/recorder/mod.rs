//! The session recorder: what sshd runs for every session of a support
//! user (the drop-in's `ForceCommand`; see `sshd`). It runs as that user,
//! asks the daemon over the local socket to record (the daemon knows the
//! tunnel by the caller's uid, so one tunnel's session cannot be filed
//! under another), then runs what the engineer asked for:
//!
//! * no command: the login shell, in a terminal (`pty`), as asciicast;
//! * `internal-sftp` or an sftp-server: the SFTP server, with every file
//!   transfer and file operation read from its packets (`sftp`);
//! * `scp -t`/`scp -f` (legacy scp): scp, with each file (`scp`);
//! * anything else: the command through the login shell, with its output.
//!
//! It fails closed: no daemon, no session; a recording that breaks ends
//! the session.

mod pipes;
pub mod pty;
mod scp;
mod sftp;
mod sink;

use std::ffi::OsString;
use std::io::BufReader;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, ExitCode};

use crate::recording::{tag, Kind};
use crate::socket::{self, SocketRequest};
use crate::sshd::RECORD_COMMAND;
use pipes::{Keep, Tap};
use sink::Sink;

/// Runs the hidden commands: `--socket PATH record-session` (sshd's
/// `ForceCommand`) and `pty-exec` (the recorder's child). Anything else is
/// the ordinary command line (`None`).
pub fn entry(args: &[OsString]) -> Option<ExitCode> {
    match args {
        [flag, socket, cmd] if flag == "--socket" && cmd == RECORD_COMMAND => {
            Some(run(Path::new(socket)))
        }
        [cmd, rest @ ..] if cmd == pty::PTY_EXEC => Some(pty::child(rest)),
        _ => None,
    }
}

/// What the session is, from the command sshd was asked to run.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Shell,
    Exec(String),
    Sftp,
    Scp(String, scp::ScpCommand),
}

fn plan(original: Option<&str>) -> Plan {
    let Some(cmd) = original.filter(|c| !c.trim().is_empty()) else {
        return Plan::Shell;
    };
    let program = cmd.split_whitespace().next().unwrap_or("");
    if cmd.trim() == "internal-sftp" || program.ends_with("/sftp-server") {
        return Plan::Sftp;
    }
    match scp::parse_command(cmd) {
        Some(s) => Plan::Scp(cmd.to_string(), s),
        None => Plan::Exec(cmd.to_string()),
    }
}

/// The recorder's main: exits with the session's exit status.
fn run(socket: &Path) -> ExitCode {
    // Other processes of the support user may not trace or read this one.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    match session(socket) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("support-agent: {e}; on this device a support session runs only while it is recorded, so it ends here");
            ExitCode::from(1)
        }
    }
}

/// The user's login shell, from /etc/passwd.
fn login_shell() -> String {
    let uid = rustix::process::getuid().as_raw().to_string();
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[2] == uid)
        .map(|f| f[6].to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into())
}

fn session(socket: &Path) -> Result<ExitCode, String> {
    let original = std::env::var("SSH_ORIGINAL_COMMAND").ok();
    let plan = plan(original.as_deref());
    let stdin = std::io::stdin();
    let tty = rustix::termios::isatty(stdin.as_fd());
    let size = rustix::termios::tcgetwinsize(stdin.as_fd()).ok();
    let kind = match &plan {
        Plan::Shell => Kind::Shell,
        Plan::Exec(_) => Kind::Exec,
        Plan::Sftp => Kind::Sftp,
        Plan::Scp(..) => Kind::Scp,
    };
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "the session cannot be recorded: the agent's socket {} does not answer ({e})",
            socket.display()
        )
    })?;
    socket::send(
        &stream,
        &SocketRequest::Record {
            kind,
            command: original.clone(),
            width: size.map(|s| s.ws_col),
            height: size.map(|s| s.ws_row),
            term: std::env::var("TERM").ok(),
        },
    )
    .map_err(|e| format!("the session cannot be recorded: {e}"))?;
    let answer = socket::receive(&mut BufReader::new(&stream))
        .map_err(|e| format!("the session cannot be recorded: {e}"))?
        .ok_or("the session cannot be recorded: the agent closed the socket")?;
    if !answer.ok {
        return Err(format!(
            "the agent refuses to record this session: {}",
            answer.error.unwrap_or_default()
        ));
    }
    let input = answer.record_input.unwrap_or(false);
    let sink = Sink::new(stream);
    if matches!(plan, Plan::Shell | Plan::Exec(_)) {
        eprint!(
            "support-tunnel: this session is recorded (session {}); the device's owner can watch it live and replay it.{}",
            answer.session.unwrap_or(0),
            if tty { "\r\n" } else { "\n" }
        );
    }
    let shell = login_shell();
    let end = match &plan {
        Plan::Shell if tty => {
            let name = Path::new(&shell)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let argv0 = format!("-{}", name.unwrap_or_else(|| "sh".into()));
            pty::run(&shell, &argv0, &[], &sink, input)
        }
        Plan::Exec(cmd) if tty => pty::run(&shell, &shell, &["-c", cmd.as_str()], &sink, input),
        Plan::Shell | Plan::Exec(_) => {
            // No terminal: the shell reads its commands, or runs the one given.
            let mut c = Command::new(&shell);
            match &plan {
                Plan::Exec(cmd) => c.arg("-c").arg(cmd),
                _ => c.arg("-l"),
            };
            let keep = Keep {
                output: true,
                input,
            };
            pipes::run(c, &sink, Tap::None, keep)
        }
        Plan::Sftp => {
            let server = answer
                .sftp_server
                .unwrap_or_else(|| "/usr/lib/openssh/sftp-server".into());
            pipes::run(
                Command::new(server),
                &sink,
                Tap::Sftp(sftp::SftpTap::default()),
                Keep {
                    output: false,
                    input: false,
                },
            )
        }
        Plan::Scp(cmd, parsed) => {
            let is_dir = Path::new(&parsed.target).is_dir();
            let mut c = Command::new(&shell);
            c.arg("-c").arg(cmd);
            pipes::run(
                c,
                &sink,
                Tap::Scp(scp::ScpTap::new(parsed.clone(), is_dir)),
                Keep {
                    output: false,
                    input: false,
                },
            )
        }
    }?;
    let recorded = sink.send(tag::END, &serde_json::to_vec(&end).unwrap_or_default());
    if !recorded || sink.is_broken() {
        return Err("the recording broke off (the agent went away)".into());
    }
    Ok(match end.exit_code {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_sshd_asked_for_decides_the_session() {
        assert_eq!(plan(None), Plan::Shell);
        assert_eq!(plan(Some("  ")), Plan::Shell);
        assert_eq!(plan(Some("internal-sftp")), Plan::Sftp);
        assert_eq!(plan(Some("/usr/lib/openssh/sftp-server")), Plan::Sftp);
        assert!(matches!(plan(Some("scp -t .")), Plan::Scp(..)));
        assert_eq!(plan(Some("uname -a")), Plan::Exec("uname -a".into()));
        // Escapes are commands like any other: run through the shell, recorded.
        assert_eq!(
            plan(Some("exec /bin/bash -i")),
            Plan::Exec("exec /bin/bash -i".into())
        );
        assert_eq!(
            plan(Some("internal-sftp; bash")),
            Plan::Exec("internal-sftp; bash".into())
        );
    }
}
