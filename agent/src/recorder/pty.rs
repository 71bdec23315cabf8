//! Sessions in a terminal: the recorder opens a pseudoterminal, starts the
//! shell (or command) on it as the leader of a new session, puts sshd's
//! terminal in raw mode and copies both ways, recording the output (and
//! the input if asked) and passing window changes through.
//!
//! The child is this same binary (`pty-exec`): it makes the pty its
//! controlling terminal and execs the program. Doing that between fork and
//! exec in this process would need `unsafe` (`pre_exec`); an exec of our
//! own binary does it in safe code.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

use rustix::pty::OpenptFlags;
use rustix::termios::{self, OptionalActions, Winsize};

use super::sink::{self, Sink};
use crate::recording::{tag, End};

/// The hidden command that becomes the session's program.
pub const PTY_EXEC: &str = "pty-exec";

/// In the child: `pty-exec PROGRAM ARGV0 [ARGS...]` with the pty as
/// stdin, stdout and stderr.
pub fn child(args: &[OsString]) -> ExitCode {
    let [program, argv0, rest @ ..] = args else {
        eprintln!("support-agent: pty-exec needs a program");
        return ExitCode::from(2);
    };
    let started = rustix::process::setsid()
        .and_then(|_| rustix::process::ioctl_tiocsctty(std::io::stdin().as_fd()));
    if let Err(e) = started {
        eprintln!("support-agent: cannot make the terminal the session's: {e}");
        return ExitCode::from(126);
    }
    let e = Command::new(program).arg0(argv0).args(rest).exec();
    eprintln!(
        "support-agent: cannot run {}: {e}",
        program.to_string_lossy()
    );
    ExitCode::from(127)
}

fn winsize_bytes(w: &Winsize) -> [u8; 4] {
    let (c, r) = (w.ws_col.to_be_bytes(), w.ws_row.to_be_bytes());
    [c[0], c[1], r[0], r[1]]
}

fn open_pty() -> rustix::io::Result<(OwnedFd, OwnedFd)> {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let user = rustix::pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
    Ok((master, user))
}

/// Runs `program` (`argv0`, `args`) on a new pty until it exits.
pub fn run(
    program: &str,
    argv0: &str,
    args: &[&str],
    sink: &Sink,
    record_input: bool,
) -> Result<End, String> {
    let (master, user) = open_pty().map_err(|e| format!("cannot open a terminal: {e}"))?;
    let stdin = std::io::stdin();
    if let Ok(size) = termios::tcgetwinsize(stdin.as_fd()) {
        let _ = termios::tcsetwinsize(&master, size);
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find the agent: {e}"))?;
    let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
    let spawned = (|| {
        Command::new(me)
            .arg(PTY_EXEC)
            .arg(program)
            .arg(argv0)
            .args(args)
            .stdin(stdio(&user)?)
            .stdout(stdio(&user)?)
            .stderr(stdio(&user)?)
            .spawn()
    })();
    drop(user);
    let mut child = spawned.map_err(|e| format!("cannot start the shell: {e}"))?;
    sink.watch_child(child.id());
    // sshd's terminal passes every byte through; the session's own pty
    // does the line editing, echo and signals.
    let saved = termios::tcgetattr(stdin.as_fd()).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        raw.make_raw();
        let _ = termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw);
    }
    let master = std::sync::Arc::new(master);
    let bytes_in = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let (master, sink, bytes_in) = (master.clone(), sink.clone(), bytes_in.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 << 10];
            loop {
                let n = sink::read(std::io::stdin().as_fd(), &mut buf);
                if n == 0 {
                    break;
                }
                bytes_in.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                if record_input && !sink.send(tag::INPUT, &buf[..n]) {
                    break;
                }
                if !sink::write_all(master.as_fd(), &buf[..n]) {
                    break;
                }
            }
        });
    }
    {
        let (master, sink) = (master.clone(), sink.clone());
        // SIGWINCH (sshd got a window change) writes a byte to this pair.
        if let Ok((mut wake, notify)) = std::os::unix::net::UnixStream::pair() {
            if signal_hook::low_level::pipe::register(signal_hook::consts::SIGWINCH, notify).is_ok()
            {
                std::thread::spawn(move || {
                    let mut byte = [0u8; 64];
                    while std::io::Read::read(&mut wake, &mut byte).is_ok_and(|n| n > 0) {
                        if let Ok(size) = termios::tcgetwinsize(std::io::stdin().as_fd()) {
                            let _ = termios::tcsetwinsize(&*master, size);
                            let _ = sink.send(tag::RESIZE, &winsize_bytes(&size));
                        }
                    }
                });
            }
        }
    }
    let mut bytes_out = 0u64;
    let mut buf = vec![0u8; crate::recording::MAX_FRAME];
    loop {
        // EIO once the shell and everything it left on the terminal are gone.
        let n = sink::read(master.as_fd(), &mut buf);
        if n == 0 {
            break;
        }
        bytes_out += n as u64;
        if !sink.send(tag::OUTPUT, &buf[..n]) {
            break;
        }
        if !sink::write_all(std::io::stdout().as_fd(), &buf[..n]) {
            // The engineer is gone: so is the session.
            sink.hang_up();
            break;
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for the shell: {e}"))?;
    if let Some(t) = &saved {
        let _ = termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, t);
    }
    Ok(End {
        exit_code: status.code(),
        bytes_in: bytes_in.load(std::sync::atomic::Ordering::Relaxed),
        bytes_out,
    })
}
