//! A 1 MB transfer checked by SHA-256 across a stock WireGuard path: a
//! Python server and client, each run inside a host's namespace.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Output, Stdio};

use crate::Host;

/// Listens on `argv[1]`:7000, says so, takes one connection, reads up to
/// 1,000,000 bytes and answers their SHA-256 in hex.
const SERVER_PY: &str = "import socket,sys,hashlib\n\
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind((sys.argv[1], 7000)); s.listen(1); print('listening', flush=True); c,_=s.accept()\n\
data=b''\n\
while len(data) < 1000000:\n    d=c.recv(65536)\n    if not d: break\n    data+=d\n\
c.sendall(hashlib.sha256(data).hexdigest().encode()); c.close()\n";

/// Connects to `argv[1]`:7000 (retrying while the path comes up), sends
/// 1,000,000 random bytes and prints `ok` if the answer is their SHA-256.
const CLIENT_PY: &str = "import socket,sys,hashlib,os,time\n\
data=os.urandom(1000000)\n\
for i in range(100):\n    try:\n        c=socket.create_connection((sys.argv[1], 7000), timeout=2); break\n    except OSError: time.sleep(0.2)\n\
c.settimeout(20); c.sendall(data); c.shutdown(socket.SHUT_WR)\n\
got=c.recv(100).decode()\n\
print('ok' if got == hashlib.sha256(data).hexdigest() else 'mismatch '+got)\n";

impl Host {
    /// Starts the hash server on `ip`:7000 inside the namespace and returns
    /// once it listens. It serves one connection; kill it when done.
    pub fn hash_server(&self, ip: Ipv4Addr) -> Child {
        let mut child = self
            .exec(&["python3", "-c", SERVER_PY, &ip.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("hash server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the hash server's first line");
        assert_eq!(line.trim(), "listening", "the hash server did not start");
        child
    }

    /// Runs the hash client against `ip`:7000 inside the namespace; its
    /// stdout is `ok` when the server's checksum matched.
    pub fn hash_client(&self, ip: Ipv4Addr) -> Output {
        self.exec(&["python3", "-c", CLIENT_PY, &ip.to_string()])
            .output()
            .expect("hash client runs")
    }
}
