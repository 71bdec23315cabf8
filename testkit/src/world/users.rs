//! The real Unix users a tunnel creates: what the tests need to make them,
//! and what must be gone after a tunnel.

use std::path::Path;
use std::process::Command;

/// Skips (loudly) unless root with sshd, sudo and visudo: the agent creates real users.
pub fn require_root_and_sshd() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    assert!(
        root,
        "these tests create real Unix users: run them as root (scripts/test does)"
    );
    for bin in [
        "/usr/sbin/sshd",
        "/usr/sbin/visudo",
        "/usr/bin/sudo",
        "/usr/sbin/useradd",
    ] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: run scripts/setup (it installs openssh-server and sudo)"
        );
    }
}

/// Nothing of the tunnel's access is left on the device.
pub fn assert_no_access_left(user: &str) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
    assert!(
        !passwd.lines().any(|l| l.starts_with(&format!("{user}:"))),
        "user {user} is gone"
    );
    assert!(
        !Path::new(&format!("/home/{user}")).exists(),
        "home is gone"
    );
    assert!(
        !Path::new(&format!("/etc/sudoers.d/support-tunnel-{user}")).exists(),
        "sudoers entry is gone"
    );
}

/// Whether the Unix user `user` exists.
pub fn user_exists(user: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .expect("passwd")
        .lines()
        .any(|l| l.starts_with(&format!("{user}:")))
}
