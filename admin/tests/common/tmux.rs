//! A tmux session on its own server socket: a real terminal for `connect`.

use std::process::Command;
use std::time::Duration;

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A tmux session on its own server socket, killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn new(command: &str) -> Tmux {
        let socket = format!(
            "admin-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let st = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-x",
                "100",
                "-y",
                "30",
                command,
            ])
            .env("TERM", "xterm")
            .status()
            .expect("tmux");
        assert!(st.success());
        Tmux { socket }
    }

    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-S", "-100"])
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn wait_for_text(&self, text: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.screen().contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{text:?} never appeared; the screen:\n{}", self.screen());
    }

    pub fn keys(&self, line: &str) {
        let st = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", line, "Enter"])
            .status()
            .expect("tmux");
        assert!(st.success());
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        let st = Command::new("tmux")
            .args([
                "-L",
                &self.socket,
                "resize-window",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
            ])
            .status()
            .expect("tmux");
        assert!(st.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
