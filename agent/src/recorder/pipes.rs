//! Sessions without a terminal (commands, sftp, legacy scp): the program
//! runs on pipes, and one thread per stream copies and records. Threads,
//! not one poll loop: a direction that blocks never stalls the other.

use std::io::Read;
use std::os::fd::AsFd;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::scp::ScpTap;
use super::sftp::SftpTap;
use super::sink::{self, Sink};
use crate::recording::{tag, End, Transfer, EXEC_OUTPUT_CAP};

/// What the recorder reads from the passing bytes.
pub enum Tap {
    /// Nothing but byte counts (and output, for a command).
    None,
    /// SFTP packets.
    Sftp(SftpTap),
    /// The sending side of a legacy scp.
    Scp(ScpTap),
}

impl Tap {
    fn client(&mut self, b: &[u8]) -> Vec<Transfer> {
        match self {
            Tap::Sftp(t) => t.client(b),
            Tap::Scp(t) if t.upload() => t.feed(b),
            _ => Vec::new(),
        }
    }

    fn server(&mut self, b: &[u8]) -> Vec<Transfer> {
        match self {
            Tap::Sftp(t) => t.server(b),
            Tap::Scp(t) if !t.upload() => t.feed(b),
            _ => Vec::new(),
        }
    }

    fn finish(&mut self) -> Vec<Transfer> {
        match self {
            Tap::Sftp(t) => t.finish(),
            Tap::Scp(t) => t.finish(),
            Tap::None => Vec::new(),
        }
    }
}

fn send_transfers(sink: &Sink, list: Vec<Transfer>) {
    for t in list {
        let _ = sink.send(tag::TRANSFER, &serde_json::to_vec(&t).unwrap_or_default());
    }
}

/// The capacity asked for the pipes of a session (the default is 64 KiB).
const PIPE_SIZE: usize = 1 << 20;
/// What one read takes from a stream.
const CHUNK: usize = 128 << 10;

/// What is recorded of the streams.
pub struct Keep {
    /// Record the program's output (a command's), up to [`EXEC_OUTPUT_CAP`].
    pub output: bool,
    /// Record what the client sends.
    pub input: bool,
}

/// Runs `cmd` on pipes between sshd and it until it exits.
pub fn run(mut cmd: Command, sink: &Sink, tap: Tap, keep: Keep) -> Result<End, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the session's program: {e}"))?;
    sink.watch_child(child.id());
    // Deeper pipes on both sides: fewer stalls and wake-ups per megabyte
    // for the two hops the recorder adds (measured: `benches/recording`).
    for fd in [
        child.stdin.as_ref().map(|p| p.as_fd()),
        child.stdout.as_ref().map(|p| p.as_fd()),
        Some(std::io::stdin().as_fd()),
        Some(std::io::stdout().as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_SIZE);
    }
    let tap = Arc::new(Mutex::new(tap));
    let bytes_in = Arc::new(AtomicU64::new(0));
    let bytes_out = Arc::new(AtomicU64::new(0));
    let recorded = Arc::new(AtomicU64::new(0));
    let mut child_in = child.stdin.take();
    {
        let (sink, tap, bytes_in) = (sink.clone(), tap.clone(), bytes_in.clone());
        // Not joined: it may sit in a read of sshd's stdin after the program ended.
        std::thread::spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            let stdin = std::io::stdin();
            loop {
                let n = sink::read(stdin.as_fd(), &mut buf);
                if n == 0 {
                    break;
                }
                let b = &buf[..n];
                bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                let done = tap.lock().unwrap_or_else(|p| p.into_inner()).client(b);
                send_transfers(&sink, done);
                if keep.input && !sink.send(tag::INPUT, b) {
                    break;
                }
                let Some(to) = child_in.as_ref() else { break };
                if !sink::write_all(to.as_fd(), b) {
                    break;
                }
            }
            // The client's end of input is the program's.
            child_in.take();
        });
    }
    let copy = |from: Box<dyn Read + Send>, to_stdout: bool| {
        let (sink, tap, bytes_out, recorded) = (
            sink.clone(),
            tap.clone(),
            bytes_out.clone(),
            recorded.clone(),
        );
        let record_output = keep.output;
        std::thread::spawn(move || {
            let mut from = from;
            let mut buf = vec![0u8; CHUNK];
            let mut told = false;
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let b = &buf[..n];
                bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                if to_stdout {
                    let done = tap.lock().unwrap_or_else(|p| p.into_inner()).server(b);
                    send_transfers(&sink, done);
                }
                if record_output {
                    let before = recorded.fetch_add(n as u64, Ordering::Relaxed);
                    let room = EXEC_OUTPUT_CAP.saturating_sub(before) as usize;
                    if room > 0 && !sink.send(tag::OUTPUT, &b[..n.min(room)]) {
                        break;
                    }
                    if room < n && !told {
                        told = true;
                        let note = format!(
                            "support-tunnel: output past {EXEC_OUTPUT_CAP} bytes is counted, not recorded"
                        );
                        let _ = sink.send(tag::MARKER, note.as_bytes());
                    }
                }
                let ok = match to_stdout {
                    true => sink::write_all(std::io::stdout().as_fd(), b),
                    false => sink::write_all(std::io::stderr().as_fd(), b),
                };
                if !ok {
                    break;
                }
            }
        })
    };
    let out = child.stdout.take().map(|s| copy(Box::new(s), true));
    let err = child.stderr.take().map(|s| copy(Box::new(s), false));
    for t in [out, err].into_iter().flatten() {
        let _ = t.join();
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for the session's program: {e}"))?;
    let done = tap.lock().unwrap_or_else(|p| p.into_inner()).finish();
    send_transfers(sink, done);
    Ok(End {
        exit_code: exit_code(status),
        bytes_in: bytes_in.load(Ordering::Relaxed),
        bytes_out: bytes_out.load(Ordering::Relaxed),
    })
}

/// The exit code, or none if a signal ended the program.
pub fn exit_code(status: ExitStatus) -> Option<i32> {
    status.code()
}
