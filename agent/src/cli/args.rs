//! The command line's grammar: global options, one command, and the flags
//! and arguments that belong to that command. Anything else is a usage
//! error (exit 2) that names the problem and the help to read.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::config::Overrides;

/// A parsed command line.
#[derive(Debug, Default)]
pub struct Args {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--control-plane`, `--state-dir`, `--socket`.
    pub overrides: Overrides,
    /// `-v`/`--verbose`: debug lines in the log.
    pub verbose: bool,
    /// What to do.
    pub command: Command,
}

/// The commands, each with its own flags.
#[derive(Debug, Default, PartialEq)]
pub enum Command {
    /// Print the general help, or one command's.
    Help(Option<String>),
    /// Print the version.
    #[default]
    Version,
    /// `request`.
    Request(RequestArgs),
    /// `daemon`.
    Daemon,
    /// `status [--json]`.
    Status { json: bool },
    /// `list [--json]`.
    List { json: bool },
    /// `log [ID] [--json]`.
    Log { id: Option<String>, json: bool },
    /// `stop ID | --all`.
    Stop { id: Option<String> },
    /// `repair`.
    Repair,
    /// `watch [ID]`: follow a live session.
    Watch { id: Option<String> },
    /// `replay ID [SESSION] [--speed N]`.
    Replay {
        id: Option<String>,
        session: Option<u32>,
        speed: f64,
    },
    /// `install-sshd [--drop-in PATH]`.
    InstallSshd { drop_in: Option<PathBuf> },
    /// `migrate-from-original [--dry-run] [--yes] [--root DIR]`.
    Migrate {
        dry_run: bool,
        yes: bool,
        root: Option<PathBuf>,
    },
}

/// `request`'s flags.
#[derive(Debug, Default, PartialEq)]
pub struct RequestArgs {
    /// `--duration`.
    pub duration: Option<String>,
    /// `--ports`.
    pub ports: Option<String>,
    /// `--note`.
    pub note: Option<String>,
    /// `--json`.
    pub json: bool,
    /// `--follow`.
    pub follow: bool,
    /// `--wait`.
    pub wait: bool,
}

/// The commands, in the order the help lists them.
pub const COMMANDS: &[&str] = &[
    "request",
    "daemon",
    "status",
    "list",
    "log",
    "stop",
    "watch",
    "replay",
    "repair",
    "install-sshd",
    "migrate-from-original",
    "help",
];

/// A command line this program cannot follow. `main` prints it with a
/// pointer to the help and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// A name that is no command.
    UnknownCommand(String),
    /// A flag before the command that no command has.
    UnknownFlag(String),
    /// A command's flag given before any command.
    FlagBeforeCommand {
        /// The flag.
        flag: String,
        /// The command it belongs to.
        command: &'static str,
    },
    /// A flag the command does not have, and no other command has either.
    UnknownFlagFor {
        /// The flag.
        flag: String,
        /// The command given.
        command: &'static str,
    },
    /// Another command's flag.
    FlagOfAnotherCommand {
        /// The flag.
        flag: String,
        /// The command given.
        command: &'static str,
        /// The command the flag belongs to.
        owner: &'static str,
    },
    /// A flag without the value it takes.
    MissingValue(String),
    /// A value given to a flag that takes none (`--json=yes`).
    UnexpectedValue {
        /// The flag.
        flag: String,
        /// The value.
        value: OsString,
    },
    /// An argument the command does not take.
    StrayArgument {
        /// The argument.
        arg: String,
        /// The command given.
        command: &'static str,
    },
    /// An argument that is not UTF-8 (shown lossily).
    NotUtf8(String),
    /// `request --wait --follow`.
    WaitAndFollow,
    /// `stop ID --all`.
    StopIdAndAll,
    /// `stop` with neither an id nor `--all`.
    StopWhat,
    /// `replay` without a tunnel id.
    ReplayWhat,
    /// A value that is not what the flag takes.
    BadValue {
        /// The flag or argument.
        what: String,
        /// The value.
        value: String,
    },
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCommand(name) => write!(f, "unknown command '{name}'"),
            Self::UnknownFlag(flag) => write!(f, "unknown option {flag}"),
            Self::FlagBeforeCommand { flag, command } => write!(
                f,
                "{flag} belongs to a command: support-agent {command} {flag} (see help {command})"
            ),
            Self::UnknownFlagFor { flag, command } => {
                write!(f, "unknown option {flag} for {command}")
            }
            Self::FlagOfAnotherCommand {
                flag,
                command,
                owner,
            } => write!(
                f,
                "{flag} is not an option of {command} (it belongs to {owner})"
            ),
            Self::MissingValue(flag) => write!(f, "{flag} needs a value"),
            Self::UnexpectedValue { flag, value } => {
                write!(f, "unexpected argument for option '{flag}': {value:?}")
            }
            Self::StrayArgument { arg, command } => {
                write!(f, "unexpected argument '{arg}' for {command}")
            }
            Self::NotUtf8(arg) => write!(f, "'{arg}' is not valid UTF-8"),
            Self::WaitAndFollow => {
                f.write_str("--wait already follows the tunnel; give one of --wait, --follow")
            }
            Self::StopIdAndAll => f.write_str("give a tunnel id or --all, not both"),
            Self::StopWhat => {
                f.write_str("say which tunnel to stop (support-agent stop ID), or --all")
            }
            Self::ReplayWhat => f.write_str(
                "say which tunnel's sessions to replay (support-agent replay ID [SESSION]; support-agent log lists them)",
            ),
            Self::BadValue { what, value } => write!(f, "'{value}' is not a valid {what}"),
        }
    }
}

impl std::error::Error for UsageError {}

/// One command-line token, owned (lexopt's borrow the parser).
enum Token {
    /// `--name` or `-c`, written as such.
    Flag(String),
    /// A positional argument.
    Value(OsString),
}

fn next(p: &mut lexopt::Parser) -> Result<Option<Token>, UsageError> {
    // lexopt documents one failure of `next`: a value given to a flag that
    // takes none (`--json=yes`); anything else is shown as an unknown option.
    let arg = p.next().map_err(|e| match e {
        lexopt::Error::UnexpectedValue { option, value } => UsageError::UnexpectedValue {
            flag: option,
            value,
        },
        other => UsageError::UnknownFlag(other.to_string()),
    })?;
    Ok(match arg {
        None => None,
        Some(lexopt::Arg::Long(f)) => Some(Token::Flag(format!("--{f}"))),
        Some(lexopt::Arg::Short(c)) => Some(Token::Flag(format!("-{c}"))),
        Some(lexopt::Arg::Value(v)) => Some(Token::Value(v)),
    })
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, UsageError> {
    let mut p = lexopt::Parser::from_args(args);
    let mut a = Args::default();
    let mut help = false;
    let name = loop {
        match next(&mut p)? {
            None => break None,
            Some(Token::Value(v)) => break Some(string(v)?),
            Some(Token::Flag(f)) => {
                if global(&mut a, &f, &mut p)? {
                    continue;
                }
                match f.as_str() {
                    "-h" | "--help" => help = true,
                    "-V" | "--version" => return Ok(a),
                    _ => {
                        return Err(match owner_of(&f) {
                            Some(command) => UsageError::FlagBeforeCommand { flag: f, command },
                            None => UsageError::UnknownFlag(f),
                        })
                    }
                }
            }
        }
    };
    let Some(name) = name else {
        a.command = Command::Help(None);
        return Ok(a);
    };
    let Some(name) = known(&name) else {
        return Err(UsageError::UnknownCommand(name));
    };
    if help {
        a.command = Command::Help(Some(name.into()));
        return Ok(a);
    }
    a.command = command(name, &mut a, &mut p)?;
    Ok(a)
}

/// The command of that name.
fn known(name: &str) -> Option<&'static str> {
    COMMANDS.iter().copied().find(|c| *c == name)
}

/// Takes a global option (allowed before or after the command).
fn global(a: &mut Args, flag: &str, p: &mut lexopt::Parser) -> Result<bool, UsageError> {
    match flag {
        "--config" => a.config = Some(value(p, flag)?.into()),
        "--control-plane" => a.overrides.control_plane = Some(value(p, flag)?),
        "--state-dir" => a.overrides.state_dir = Some(value(p, flag)?.into()),
        "--socket" => a.overrides.socket = Some(value(p, flag)?.into()),
        "-v" | "--verbose" => a.verbose = true,
        _ => return Ok(false),
    }
    Ok(true)
}

fn command(
    name: &'static str,
    a: &mut Args,
    p: &mut lexopt::Parser,
) -> Result<Command, UsageError> {
    let mut req = RequestArgs::default();
    let (mut json, mut all, mut dry_run, mut yes) = (false, false, false, false);
    let mut root = None;
    let mut drop_in = None;
    let mut speed = None;
    let mut positional: Vec<String> = Vec::new();
    while let Some(token) = next(p)? {
        let flag = match token {
            Token::Value(v)
                if (positional.is_empty()
                    && matches!(name, "log" | "stop" | "help" | "watch" | "replay"))
                    || (positional.len() == 1 && name == "replay") =>
            {
                positional.push(string(v)?);
                continue;
            }
            Token::Value(v) => {
                return Err(UsageError::StrayArgument {
                    arg: v.to_string_lossy().into_owned(),
                    command: name,
                })
            }
            Token::Flag(f) => f,
        };
        if global(a, &flag, p)? {
            continue;
        }
        match (name, flag.as_str()) {
            (_, "-h" | "--help") => return Ok(Command::Help(Some(name.into()))),
            ("request", "--duration") => req.duration = Some(value(p, &flag)?),
            ("request", "--ports") => req.ports = Some(value(p, &flag)?),
            ("request", "--note") => req.note = Some(value(p, &flag)?),
            ("request", "--follow") => req.follow = true,
            ("request", "--wait") => req.wait = true,
            ("request" | "status" | "list" | "log", "--json") => json = true,
            ("stop", "--all") => all = true,
            ("migrate-from-original", "--dry-run") => dry_run = true,
            ("migrate-from-original", "--yes") => yes = true,
            ("migrate-from-original", "--root") => root = Some(value(p, &flag)?.into()),
            ("install-sshd", "--drop-in") => drop_in = Some(value(p, &flag)?.into()),
            ("replay", "--speed") => {
                let v = value(p, &flag)?;
                match v.parse::<f64>() {
                    Ok(x) if x > 0.0 && x.is_finite() => speed = Some(x),
                    _ => {
                        return Err(UsageError::BadValue {
                            what: "--speed (a number above 0, e.g. 2 or 0.5)".into(),
                            value: v,
                        })
                    }
                }
            }
            _ => {
                return Err(match owner_of(&flag) {
                    Some(owner) if owner != name => UsageError::FlagOfAnotherCommand {
                        flag,
                        command: name,
                        owner,
                    },
                    _ => UsageError::UnknownFlagFor {
                        flag,
                        command: name,
                    },
                })
            }
        }
    }
    if name == "replay" {
        let mut it = positional.into_iter();
        let id = it.next().ok_or(UsageError::ReplayWhat)?;
        let session = match it.next() {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| UsageError::BadValue {
                what: "session number".into(),
                value: v,
            })?),
        };
        return Ok(Command::Replay {
            id: Some(id),
            session,
            speed: speed.unwrap_or(1.0),
        });
    }
    let id = positional.pop();
    Ok(match name {
        "request" => {
            req.json = json;
            if req.wait && req.follow {
                return Err(UsageError::WaitAndFollow);
            }
            Command::Request(req)
        }
        "daemon" => Command::Daemon,
        "status" => Command::Status { json },
        "list" => Command::List { json },
        "log" => Command::Log { id, json },
        "stop" => match (id, all) {
            (Some(_), true) => return Err(UsageError::StopIdAndAll),
            (None, false) => return Err(UsageError::StopWhat),
            (id, _) => Command::Stop { id },
        },
        "repair" => Command::Repair,
        "watch" => Command::Watch { id },
        "install-sshd" => Command::InstallSshd { drop_in },
        "migrate-from-original" => Command::Migrate { dry_run, yes, root },
        "help" => match id {
            Some(c) if known(&c).is_none() => return Err(UsageError::UnknownCommand(c)),
            c => Command::Help(c),
        },
        _ => return Err(UsageError::UnknownCommand(name.into())),
    })
}

/// Which command a flag belongs to, for a usage error that helps.
fn owner_of(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "--duration" | "--ports" | "--note" | "--follow" | "--wait" => "request",
        "--json" => "status",
        "--all" => "stop",
        "--dry-run" | "--yes" | "--root" => "migrate-from-original",
        "--drop-in" => "install-sshd",
        "--speed" => "replay",
        _ => return None,
    })
}

fn value(p: &mut lexopt::Parser, flag: &str) -> Result<String, UsageError> {
    let v = p
        .value()
        .map_err(|_| UsageError::MissingValue(flag.into()))?;
    string(v)
}

fn string(v: OsString) -> Result<String, UsageError> {
    v.into_string()
        .map_err(|v| UsageError::NotUtf8(v.to_string_lossy().into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &[&str]) -> Result<Args, UsageError> {
        parse(s.iter().map(OsString::from))
    }

    #[test]
    fn flags_belong_to_their_command() {
        let a =
            parse_str(&["--state-dir=/x", "request", "--ports", "22,80", "--follow"]).expect("ok");
        let Command::Request(r) = a.command else {
            panic!("request")
        };
        assert_eq!(r.ports.as_deref(), Some("22,80"));
        assert!(r.follow);
        assert_eq!(a.overrides.state_dir, Some(PathBuf::from("/x")));
        let a = parse_str(&["status", "--config", "/c", "-v"]).expect("globals after");
        assert_eq!(a.config, Some(PathBuf::from("/c")));
        assert!(a.verbose);

        let e = |s: &[&str]| parse_str(s).expect_err(&format!("{s:?}"));
        let flag = |f: &str| f.to_string();
        for (args, want) in [
            (
                &["request", "2h"][..],
                UsageError::StrayArgument {
                    arg: "2h".into(),
                    command: "request",
                },
            ),
            (
                &["request", "--duration"],
                UsageError::MissingValue(flag("--duration")),
            ),
            (
                &["stop", "--duration", "2h"],
                UsageError::FlagOfAnotherCommand {
                    flag: flag("--duration"),
                    command: "stop",
                    owner: "request",
                },
            ),
            (
                &["--json", "status"],
                UsageError::FlagBeforeCommand {
                    flag: flag("--json"),
                    command: "status",
                },
            ),
            (&["--bogus"], UsageError::UnknownFlag(flag("--bogus"))),
            (
                &["request", "--bogus"],
                UsageError::UnknownFlagFor {
                    flag: flag("--bogus"),
                    command: "request",
                },
            ),
            (
                &["status", "--json=yes"],
                UsageError::UnexpectedValue {
                    flag: flag("--json"),
                    value: "yes".into(),
                },
            ),
            (
                &["status", "x"],
                UsageError::StrayArgument {
                    arg: "x".into(),
                    command: "status",
                },
            ),
            (&["stop"], UsageError::StopWhat),
            (&["stop", "ab", "--all"], UsageError::StopIdAndAll),
            (
                &["log", "a", "b"],
                UsageError::StrayArgument {
                    arg: "b".into(),
                    command: "log",
                },
            ),
            (
                &["frobnicate"],
                UsageError::UnknownCommand("frobnicate".into()),
            ),
            (
                &["help", "frobnicate"],
                UsageError::UnknownCommand("frobnicate".into()),
            ),
            (
                &["request", "--wait", "--follow"],
                UsageError::WaitAndFollow,
            ),
            (&["replay"], UsageError::ReplayWhat),
            (
                &["replay", "ab", "x"],
                UsageError::BadValue {
                    what: "session number".into(),
                    value: "x".into(),
                },
            ),
            (
                &["replay", "ab", "--speed", "0"],
                UsageError::BadValue {
                    what: "--speed (a number above 0, e.g. 2 or 0.5)".into(),
                    value: "0".into(),
                },
            ),
            (
                &["replay", "ab", "1", "2"],
                UsageError::StrayArgument {
                    arg: "2".into(),
                    command: "replay",
                },
            ),
        ] {
            assert_eq!(e(args), want, "{args:?}");
        }
    }

    #[test]
    fn usage_errors_read_as_before() {
        let text = |s: &[&str]| parse_str(s).expect_err(&format!("{s:?}")).to_string();
        assert_eq!(
            text(&["--json", "status"]),
            "--json belongs to a command: support-agent status --json (see help status)"
        );
        assert_eq!(
            text(&["status", "--json=yes"]),
            "unexpected argument for option '--json': \"yes\""
        );
        assert_eq!(text(&["--bogus"]), "unknown option --bogus");
        assert_eq!(
            text(&["request", "--wait", "--follow"]),
            "--wait already follows the tunnel; give one of --wait, --follow"
        );
        assert_eq!(
            text(&["stop", "ab", "--all"]),
            "give a tunnel id or --all, not both"
        );
        assert_eq!(
            text(&["stop"]),
            "say which tunnel to stop (support-agent stop ID), or --all"
        );
    }

    #[test]
    fn arguments_that_are_not_utf8_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'a', 0xff]);
        let e = parse([OsString::from("log"), bad]).expect_err("not UTF-8");
        assert_eq!(e, UsageError::NotUtf8("a\u{fffd}".into()));
        assert_eq!(e.to_string(), "'a\u{fffd}' is not valid UTF-8");
    }

    #[test]
    fn help_for_a_command() {
        let h = |s: &[&str]| parse_str(s).expect("ok").command;
        assert_eq!(
            h(&["help", "request"]),
            Command::Help(Some("request".into()))
        );
        assert_eq!(
            h(&["request", "--help"]),
            Command::Help(Some("request".into()))
        );
        assert_eq!(h(&["--help", "stop"]), Command::Help(Some("stop".into())));
        assert_eq!(
            h(&["replay", "ab", "3", "--speed", "2.5"]),
            Command::Replay {
                id: Some("ab".into()),
                session: Some(3),
                speed: 2.5
            }
        );
        assert_eq!(h(&["watch"]), Command::Watch { id: None });
        assert_eq!(
            h(&["install-sshd", "--drop-in", "/x.conf"]),
            Command::InstallSshd {
                drop_in: Some("/x.conf".into())
            }
        );
        assert_eq!(h(&[]), Command::Help(None));
        assert_eq!(h(&["-V"]), Command::Version);
    }
}
