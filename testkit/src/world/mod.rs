//! Real parts for end-to-end tests: the control-plane binary on a fixed
//! loopback port, Debian's sshd on a loopback port with its own host key,
//! and the device agent (as root, with real users) under a temp dir.
//! Shared by the agent's and the admin's tests.
//!
//! | module | part |
//! |---|---|
//! | `control_plane` | [`ControlPlane`]: the binary, its CLI, admin calls over its channel |
//! | `agent` | [`Device`]: the agent's config, state dir, daemon and CLI |
//! | `sshd` | [`Sshd`]: Debian's sshd, and OpenSSH keys |
//! | `users` | the real Unix users a tunnel creates, and what must be gone after it |
//! | this one | what every part uses: ports, temp dirs, binaries, waits, clocks |
#![allow(missing_docs)]

mod agent;
mod control_plane;
mod sshd;
mod users;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use agent::{agent_bin, raw_socket, Device, DeviceSettings};
pub use control_plane::ControlPlane;
pub use sshd::{ssh_keygen, Sshd};
pub use users::{assert_no_access_left, require_root_and_sshd, user_exists};

/// 32 random bytes.
pub fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("randomness");
    b
}

/// A binary of another workspace package, built next to this test.
pub fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    // This profile's build first; a bench may use the debug build of a helper.
    let candidates = [dir.join(name), dir.with_file_name("debug").join(name)];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{} is not built: run `cargo build -p {name}` (scripts/test builds the workspace)",
                candidates[0].display()
            )
        })
}

/// A loopback TCP port free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binds")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `f` until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A world-traversable temp dir (others must reach sockets inside it).
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("agent-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// Runs `cmd` with its wall clock shifted by `offset` (libfaketime, e.g.
/// "-4y"), preloaded directly: the `faketime` wrapper forks, so killing it
/// would orphan the program instead of ending it. The monotonic clock stays real.
pub fn with_fake_clock(cmd: &mut Command, offset: &str) {
    cmd.env(
        "LD_PRELOAD",
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    )
    .env("FAKETIME", offset)
    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// The wall clock, in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}
