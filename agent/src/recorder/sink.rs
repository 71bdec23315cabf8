//! The recorder's link to the daemon, shared by its threads, and the
//! session it ends when that link breaks (recording fails closed).

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use crate::recording::{write_frame, MAX_FRAME};

/// Frames to the daemon. A failed send ends the session.
#[derive(Clone)]
pub struct Sink {
    stream: Arc<Mutex<UnixStream>>,
    broken: Arc<AtomicBool>,
    /// The session's process group, ended when the recording breaks.
    child: Arc<AtomicI32>,
}

impl Sink {
    /// Frames on `stream`.
    pub fn new(stream: UnixStream) -> Sink {
        Sink {
            stream: Arc::new(Mutex::new(stream)),
            broken: Arc::new(AtomicBool::new(false)),
            child: Arc::new(AtomicI32::new(0)),
        }
    }

    /// The process (group leader) to end if the recording breaks.
    pub fn watch_child(&self, pid: u32) {
        self.child.store(pid as i32, Ordering::SeqCst);
        if self.is_broken() {
            self.end_session();
        }
    }

    /// Whether the daemon stopped taking the recording.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Sends `payload` as frames of `tag`; false (and the session ended)
    /// if the daemon does not take them.
    pub fn send(&self, tag: u8, payload: &[u8]) -> bool {
        if self.is_broken() {
            return false;
        }
        let mut stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let mut ok = true;
        for chunk in payload
            .chunks(MAX_FRAME)
            .chain(payload.is_empty().then_some(&[][..]))
        {
            if write_frame(&mut *stream, tag, chunk).is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            ok = stream.flush().is_ok();
        }
        drop(stream);
        if !ok && !self.broken.swap(true, Ordering::SeqCst) {
            self.end_session();
        }
        ok
    }

    /// Ends the session's programs, as a terminal's hangup would.
    pub fn hang_up(&self) {
        self.end_session();
    }

    fn end_session(&self) {
        let pid = self.child.load(Ordering::SeqCst);
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::HUP);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Writes all of `buf` to `fd` (stdout, a pipe, a pty) without std's
/// line buffering; false once the other side is gone.
pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return false,
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Reads from `fd` into `buf`; 0 at the end (or an error: EIO is how a
/// pty says its last user is gone).
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> usize {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return 0,
        }
    }
}
