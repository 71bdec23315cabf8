//! The command line's grammar: global options, one command, and the flags
//! and arguments that belong to that command. Anything else is a usage
//! error (exit 2) that names the problem and the help to read.

use std::ffi::OsString;
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
    "repair",
    "migrate-from-original",
    "help",
];

/// One command-line token, owned (lexopt's borrow the parser).
enum Token {
    /// `--name` or `-c`, written as such.
    Flag(String),
    /// A positional argument.
    Value(OsString),
}

fn next(p: &mut lexopt::Parser) -> Result<Option<Token>, String> {
    Ok(match p.next().map_err(|e| e.to_string())? {
        None => None,
        Some(lexopt::Arg::Long(f)) => Some(Token::Flag(format!("--{f}"))),
        Some(lexopt::Arg::Short(c)) => Some(Token::Flag(format!("-{c}"))),
        Some(lexopt::Arg::Value(v)) => Some(Token::Value(v)),
    })
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
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
                            Some(cmd) => format!(
                                "{f} belongs to a command: support-agent {cmd} {f} (see help {cmd})"
                            ),
                            None => format!("unknown option {f}"),
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
    if !COMMANDS.contains(&name.as_str()) {
        return Err(format!("unknown command '{name}'"));
    }
    if help {
        a.command = Command::Help(Some(name));
        return Ok(a);
    }
    a.command = command(&name, &mut a, &mut p)?;
    Ok(a)
}

/// Takes a global option (allowed before or after the command).
fn global(a: &mut Args, flag: &str, p: &mut lexopt::Parser) -> Result<bool, String> {
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

fn command(name: &str, a: &mut Args, p: &mut lexopt::Parser) -> Result<Command, String> {
    let mut req = RequestArgs::default();
    let (mut json, mut all, mut dry_run, mut yes) = (false, false, false, false);
    let mut root = None;
    let mut positional: Vec<String> = Vec::new();
    while let Some(token) = next(p)? {
        let flag = match token {
            Token::Value(v) if positional.is_empty() && matches!(name, "log" | "stop" | "help") => {
                positional.push(string(v)?);
                continue;
            }
            Token::Value(v) => {
                return Err(format!(
                    "unexpected argument '{}' for {name}",
                    v.to_string_lossy()
                ))
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
            _ => {
                return Err(match owner_of(&flag) {
                    Some(cmd) if cmd != name => {
                        format!("{flag} is not an option of {name} (it belongs to {cmd})")
                    }
                    _ => format!("unknown option {flag} for {name}"),
                })
            }
        }
    }
    let id = positional.pop();
    Ok(match name {
        "request" => {
            req.json = json;
            if req.wait && req.follow {
                return Err(
                    "--wait already follows the tunnel; give one of --wait, --follow".into(),
                );
            }
            Command::Request(req)
        }
        "daemon" => Command::Daemon,
        "status" => Command::Status { json },
        "list" => Command::List { json },
        "log" => Command::Log { id, json },
        "stop" => match (id, all) {
            (Some(_), true) => return Err("give a tunnel id or --all, not both".into()),
            (None, false) => {
                return Err("say which tunnel to stop (support-agent stop ID), or --all".into())
            }
            (id, _) => Command::Stop { id },
        },
        "repair" => Command::Repair,
        "migrate-from-original" => Command::Migrate { dry_run, yes, root },
        "help" => match id {
            Some(c) if !COMMANDS.contains(&c.as_str()) => {
                return Err(format!("unknown command '{c}'"))
            }
            c => Command::Help(c),
        },
        _ => return Err(format!("unknown command '{name}'")),
    })
}

/// Which command a flag belongs to, for a usage error that helps.
fn owner_of(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "--duration" | "--ports" | "--note" | "--follow" | "--wait" => "request",
        "--json" => "status",
        "--all" => "stop",
        "--dry-run" | "--yes" | "--root" => "migrate-from-original",
        _ => return None,
    })
}

fn value(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let v = p.value().map_err(|_| format!("{flag} needs a value"))?;
    string(v)
}

fn string(v: OsString) -> Result<String, String> {
    v.into_string()
        .map_err(|v| format!("'{}' is not valid UTF-8", v.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &[&str]) -> Result<Args, String> {
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
        assert_eq!(
            e(&["request", "2h"]),
            "unexpected argument '2h' for request"
        );
        assert!(e(&["request", "--duration"]).contains("--duration needs a value"));
        assert!(e(&["stop", "--duration", "2h"]).contains("belongs to request"));
        assert!(e(&["--json", "status"]).contains("belongs to a command"));
        assert!(e(&["status", "x"]).contains("unexpected argument 'x'"));
        assert!(e(&["stop"]).contains("say which tunnel"));
        assert!(e(&["stop", "ab", "--all"]).contains("not both"));
        assert!(e(&["log", "a", "b"]).contains("unexpected argument 'b'"));
        assert!(e(&["frobnicate"]).contains("unknown command"));
        assert!(e(&["help", "frobnicate"]).contains("unknown command"));
        assert!(e(&["request", "--wait", "--follow"]).contains("one of"));
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
        assert_eq!(h(&[]), Command::Help(None));
        assert_eq!(h(&["-V"]), Command::Version);
    }
}
