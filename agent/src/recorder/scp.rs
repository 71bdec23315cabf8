//! What a legacy-protocol scp (`scp -O`) moves, read from the side that
//! sends files: `C<mode> <size> <name>` and the data for each file,
//! `D`/`E` around directories, and a status byte after each file
//! (sans-IO: bytes in, transfers out; nothing but a control line is kept).

use crate::recording::{Action, Transfer};

/// The longest control line read.
const MAX_LINE: usize = 4096;

/// The scp command sshd was asked to run: its direction and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScpCommand {
    /// `-t`: files come to the device.
    pub upload: bool,
    /// The path on the device.
    pub target: String,
}

/// Reads `scp [-r] [-p] [-d] [-v] [-q] (-t|-f) [--] PATH`; none if it is
/// not the remote end of a legacy scp.
pub fn parse_command(command: &str) -> Option<ScpCommand> {
    let mut words = command.split_whitespace();
    let program = words.next()?;
    if program != "scp" && !program.ends_with("/scp") {
        return None;
    }
    let mut upload = None;
    let mut rest: Vec<&str> = Vec::new();
    let mut flags_done = false;
    for w in words {
        if !flags_done && w == "--" {
            flags_done = true;
        } else if !flags_done && w.starts_with('-') && w.len() > 1 {
            for c in w[1..].chars() {
                match c {
                    't' => upload = Some(true),
                    'f' => upload = Some(false),
                    'r' | 'p' | 'd' | 'v' | 'q' => {}
                    _ => return None,
                }
            }
        } else {
            flags_done = true;
            rest.push(w);
        }
    }
    let target = rest.join(" ");
    let target = target
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(&target)
        .to_string();
    Some(ScpCommand {
        upload: upload?,
        target,
    })
}

enum State {
    Line(Vec<u8>),
    Data {
        remaining: u64,
        path: String,
        size: u64,
    },
    Status {
        path: String,
        size: u64,
    },
    /// The stream is not scp as expected: nothing more is read from it.
    Lost,
}

/// Follows the sending side of one scp.
pub struct ScpTap {
    command: ScpCommand,
    /// Whether the target was a directory when the session began.
    target_is_dir: bool,
    dirs: Vec<String>,
    state: State,
}

impl ScpTap {
    /// A tap for `command`; `target_is_dir` as the device saw it.
    pub fn new(command: ScpCommand, target_is_dir: bool) -> ScpTap {
        ScpTap {
            command,
            target_is_dir,
            dirs: Vec::new(),
            state: State::Line(Vec::new()),
        }
    }

    /// Whether the files travel from the client (upload) or to it.
    pub fn upload(&self) -> bool {
        self.command.upload
    }

    fn path_of(&self, name: &str) -> String {
        let base = self.command.target.trim_end_matches('/');
        let base = if base.is_empty() { "." } else { base };
        if self.dirs.is_empty() {
            let last = base.rsplit('/').next().unwrap_or(base);
            if (self.command.upload && !self.target_is_dir)
                || (!self.command.upload && last == name)
            {
                return base.to_string();
            }
        }
        let mut p = base.to_string();
        for d in &self.dirs {
            p.push('/');
            p.push_str(d);
        }
        p.push('/');
        p.push_str(name);
        p
    }

    fn action(&self) -> Action {
        if self.command.upload {
            Action::Upload
        } else {
            Action::Download
        }
    }

    /// Bytes of the sending side; returns the files they completed.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<Transfer> {
        let mut out = Vec::new();
        let action = self.action();
        while !data.is_empty() {
            match &mut self.state {
                State::Lost => break,
                State::Line(line) => {
                    let end = data.iter().position(|&b| b == b'\n');
                    let take = end.map_or(data.len(), |e| e + 1);
                    if line.len() + take > MAX_LINE {
                        self.state = State::Lost;
                        break;
                    }
                    line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if end.is_some() {
                        let text = String::from_utf8_lossy(line).trim_end().to_string();
                        self.state = State::Line(Vec::new());
                        self.control(&text, &mut out);
                    }
                }
                State::Data {
                    remaining,
                    path,
                    size,
                } => {
                    let take = (*remaining).min(data.len() as u64);
                    *remaining -= take;
                    data = &data[take as usize..];
                    if *remaining == 0 {
                        self.state = State::Status {
                            path: std::mem::take(path),
                            size: *size,
                        };
                    }
                }
                State::Status { path, size } => {
                    out.push(Transfer {
                        action,
                        path: std::mem::take(path),
                        bytes: *size,
                        ok: data[0] == 0,
                    });
                    data = &data[1..];
                    self.state = State::Line(Vec::new());
                }
            }
        }
        out
    }

    fn control(&mut self, line: &str, out: &mut Vec<Transfer>) {
        let mut chars = line.chars();
        match chars.next() {
            Some('C') => {
                let mut f = line[1..].splitn(3, ' ');
                let (_mode, size, name) = (f.next(), f.next(), f.next());
                match (size.and_then(|s| s.parse::<u64>().ok()), name) {
                    (Some(size), Some(name)) if !name.contains('/') => {
                        let path = self.path_of(name);
                        self.state = if size == 0 {
                            State::Status { path, size }
                        } else {
                            State::Data {
                                remaining: size,
                                path,
                                size,
                            }
                        };
                    }
                    _ => self.state = State::Lost,
                }
            }
            Some('D') => match line[1..].splitn(3, ' ').nth(2) {
                Some(name) if !name.contains('/') && self.dirs.len() < 64 => {
                    self.dirs.push(name.to_string())
                }
                _ => self.state = State::Lost,
            },
            Some('E') => {
                self.dirs.pop();
            }
            Some('T') => {}
            // The sender's error ("scp: x: No such file or directory").
            Some('\u{1}' | '\u{2}') => out.push(Transfer {
                action: self.action(),
                path: line[1..].trim().to_string(),
                bytes: 0,
                ok: false,
            }),
            _ => self.state = State::Lost,
        }
    }

    /// The session ended: a file cut short is a failed transfer.
    pub fn finish(&mut self) -> Vec<Transfer> {
        match std::mem::replace(&mut self.state, State::Lost) {
            State::Data {
                path,
                size,
                remaining,
            } => vec![Transfer {
                action: self.action(),
                path,
                bytes: size - remaining,
                ok: false,
            }],
            State::Status { path, size } => vec![Transfer {
                action: self.action(),
                path,
                bytes: size,
                ok: false,
            }],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(
            parse_command("scp -t ."),
            Some(ScpCommand {
                upload: true,
                target: ".".into()
            })
        );
        assert_eq!(
            parse_command("/usr/bin/scp -v -r -f -- 'my file'"),
            Some(ScpCommand {
                upload: false,
                target: "my file".into()
            })
        );
        assert_eq!(parse_command("scp -S evil -t ."), None);
        assert_eq!(parse_command("scp x y"), None);
        assert_eq!(parse_command("rsync --server ."), None);
    }

    #[test]
    fn files_and_directories_in_pieces() {
        let cmd = parse_command("scp -r -t work").expect("scp");
        let mut tap = ScpTap::new(cmd, true);
        let mut stream =
            b"C0644 5 a.txt\nhello\0D0755 0 sub\nT1 0 1 0\nC0600 3 b\nabc\x01".to_vec();
        stream.extend_from_slice(b"E\nC0644 0 empty\n\0");
        let mut got = Vec::new();
        for chunk in stream.chunks(2) {
            got.extend(tap.feed(chunk));
        }
        let summary: Vec<(String, u64, bool)> = got
            .iter()
            .map(|t| (t.path.clone(), t.bytes, t.ok))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("work/a.txt".into(), 5, true),
                ("work/sub/b".into(), 3, false),
                ("work/empty".into(), 0, true),
            ]
        );
        assert!(tap.finish().is_empty());
    }

    #[test]
    fn a_download_of_one_file_and_a_missing_one() {
        let mut tap = ScpTap::new(parse_command("scp -f /var/log/syslog").expect("scp"), false);
        let got = tap.feed(b"C0640 4 syslog\nlogs");
        assert!(got.is_empty());
        let cut = tap.finish();
        assert_eq!(
            (cut[0].path.as_str(), cut[0].bytes, cut[0].ok),
            ("/var/log/syslog", 4, false)
        );
        let mut tap = ScpTap::new(parse_command("scp -f nothere").expect("scp"), false);
        let got = tap.feed(b"\x01scp: nothere: No such file or directory\n");
        assert!(!got[0].ok && got[0].path.contains("nothere"));
    }

    #[test]
    fn hostile_streams_are_dropped_not_followed() {
        let mut tap = ScpTap::new(parse_command("scp -t .").expect("scp"), true);
        assert!(tap.feed(&[b'x'; 10_000]).is_empty());
        assert!(tap.feed(b"C0644 5 ../../etc/passwd\n").is_empty());
        let mut tap = ScpTap::new(parse_command("scp -t .").expect("scp"), true);
        assert!(tap.feed(b"C0644 99999999999999999999 x\n").is_empty());
        assert!(matches!(tap.state, State::Lost));
    }
}
