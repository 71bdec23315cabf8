//! The relay binary as a child process; hosts come from support-testkit.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

pub use support_testkit::*;

/// A running support-relay (killed on drop).
pub struct RelayProc {
    pub child: Child,
    pub port: u16,
}

impl RelayProc {
    pub fn start(device_key: &str, admin_key: &str, listen: &str, lifetime: u64) -> RelayProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_support-relay"))
            .args([
                "--device-key",
                device_key,
                "--admin-key",
                admin_key,
                "--listen",
                listen,
            ])
            .args(["--lifetime", &lifetime.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("relay starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("relaying line");
        let addr: SocketAddr = line
            .trim()
            .trim_start_matches("relaying on ")
            .parse()
            .expect("address");
        RelayProc {
            child,
            port: addr.port(),
        }
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
