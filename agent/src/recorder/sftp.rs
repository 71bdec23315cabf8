//! What an SFTP session does to files, read from the bytes passing between
//! the client and sftp-server (sans-IO: bytes in, transfers out). Only the
//! head of each packet is kept (paths, handles, lengths), never file data,
//! and every table is bounded, so a hostile stream costs a few KiB.

use std::collections::HashMap;

use crate::recording::{Action, Transfer};

/// Bytes kept of one packet: type, id and a path of up to 4 KiB.
const KEEP: usize = 4096 + 64;
/// Requests and open files tracked at once.
const MAX_TRACKED: usize = 4096;

const OPEN: u8 = 3;
const CLOSE: u8 = 4;
const READ: u8 = 5;
const WRITE: u8 = 6;
const REMOVE: u8 = 13;
const MKDIR: u8 = 14;
const RMDIR: u8 = 15;
const RENAME: u8 = 18;
const EXTENDED: u8 = 200;
const STATUS: u8 = 101;
const HANDLE: u8 = 102;
const DATA: u8 = 103;
const FXF_WRITE: u32 = 0x02;

/// One direction's packet boundaries: `[u32 length][body]`.
#[derive(Default)]
struct Packets {
    len: [u8; 4],
    len_have: usize,
    remaining: usize,
    body: Vec<u8>,
}

impl Packets {
    /// Feeds bytes; calls `f` with the kept head of each whole packet.
    fn feed(&mut self, mut data: &[u8], mut f: impl FnMut(&[u8])) {
        while !data.is_empty() {
            if self.len_have < 4 {
                let take = (4 - self.len_have).min(data.len());
                self.len[self.len_have..self.len_have + take].copy_from_slice(&data[..take]);
                self.len_have += take;
                data = &data[take..];
                if self.len_have == 4 {
                    self.remaining = u32::from_be_bytes(self.len) as usize;
                    self.body.clear();
                    if self.remaining == 0 {
                        self.len_have = 0;
                    }
                }
                continue;
            }
            let take = self.remaining.min(data.len());
            let keep = take.min(KEEP.saturating_sub(self.body.len()));
            self.body.extend_from_slice(&data[..keep]);
            self.remaining -= take;
            data = &data[take..];
            if self.remaining == 0 {
                f(&self.body);
                self.len_have = 0;
            }
        }
    }
}

/// A reader of SFTP fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.0.get(..4)?;
        self.0 = &self.0[4..];
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string's bytes, or none when it does not fit in what was kept.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        let b = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(b)
    }

    /// A string's length alone (file data), which may run past what was kept.
    fn length(&mut self) -> Option<u64> {
        self.u32().map(u64::from)
    }

    fn text(&mut self) -> Option<String> {
        self.bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }
}

enum Request {
    Open { path: String, write: bool },
    Read(Vec<u8>),
    Write(Vec<u8>),
    Op(Action, String),
}

struct OpenFile {
    path: String,
    write: bool,
    bytes: u64,
    ok: bool,
}

/// The state of one SFTP session as seen from the middle.
#[derive(Default)]
pub struct SftpTap {
    client: Packets,
    server: Packets,
    requests: HashMap<u32, Request>,
    files: HashMap<Vec<u8>, OpenFile>,
    out: Vec<Transfer>,
}

impl SftpTap {
    /// Bytes from the client; returns the transfers they completed.
    pub fn client(&mut self, data: &[u8]) -> Vec<Transfer> {
        let mut packets = std::mem::take(&mut self.client);
        packets.feed(data, |p| {
            let _ = self.client_packet(p);
        });
        self.client = packets;
        std::mem::take(&mut self.out)
    }

    /// Bytes from sftp-server; returns the transfers they completed.
    pub fn server(&mut self, data: &[u8]) -> Vec<Transfer> {
        let mut packets = std::mem::take(&mut self.server);
        packets.feed(data, |p| {
            let _ = self.server_packet(p);
        });
        self.server = packets;
        std::mem::take(&mut self.out)
    }

    /// The session ended: files still open count as failed transfers.
    pub fn finish(&mut self) -> Vec<Transfer> {
        for (_, f) in self.files.drain() {
            self.out.push(Transfer {
                action: if f.write {
                    Action::Upload
                } else {
                    Action::Download
                },
                path: f.path,
                bytes: f.bytes,
                ok: false,
            });
        }
        std::mem::take(&mut self.out)
    }

    fn request(&mut self, id: u32, r: Request) {
        if self.requests.len() < MAX_TRACKED {
            self.requests.insert(id, r);
        }
    }

    fn client_packet(&mut self, p: &[u8]) -> Option<()> {
        let mut f = Fields(p);
        let kind = f.u8()?;
        let id = f.u32()?;
        match kind {
            OPEN => {
                let path = f.text()?;
                let flags = f.u32()?;
                let write = flags & FXF_WRITE != 0;
                self.request(id, Request::Open { path, write });
            }
            CLOSE => {
                let handle = f.bytes()?;
                if let Some(file) = self.files.remove(handle) {
                    self.out.push(Transfer {
                        action: if file.write {
                            Action::Upload
                        } else {
                            Action::Download
                        },
                        path: file.path,
                        bytes: file.bytes,
                        ok: file.ok,
                    });
                }
            }
            READ => {
                let handle = f.bytes()?.to_vec();
                self.request(id, Request::Read(handle));
            }
            WRITE => {
                let handle = f.bytes()?.to_vec();
                f.skip(8)?;
                let n = f.length()?;
                if let Some(file) = self.files.get_mut(&handle) {
                    file.bytes += n;
                }
                self.request(id, Request::Write(handle));
            }
            REMOVE => {
                let path = f.text()?;
                self.request(id, Request::Op(Action::Remove, path));
            }
            MKDIR => {
                let path = f.text()?;
                self.request(id, Request::Op(Action::Mkdir, path));
            }
            RMDIR => {
                let path = f.text()?;
                self.request(id, Request::Op(Action::Rmdir, path));
            }
            RENAME => {
                let (from, to) = (f.text()?, f.text()?);
                self.request(id, Request::Op(Action::Rename, format!("{from} -> {to}")));
            }
            EXTENDED => self.extended(id, f)?,
            _ => {}
        }
        Some(())
    }

    fn extended(&mut self, id: u32, mut f: Fields<'_>) -> Option<()> {
        if f.bytes()? == b"posix-rename@openssh.com" {
            let (from, to) = (f.text()?, f.text()?);
            self.request(id, Request::Op(Action::Rename, format!("{from} -> {to}")));
        }
        Some(())
    }

    fn server_packet(&mut self, p: &[u8]) -> Option<()> {
        let mut f = Fields(p);
        let kind = f.u8()?;
        let id = f.u32()?;
        let request = self.requests.remove(&id);
        if kind == STATUS {
            let code = f.u32()?;
            return self.status(request?, code);
        }
        match (kind, request) {
            (HANDLE, Some(Request::Open { path, write })) => {
                let handle = f.bytes()?.to_vec();
                if self.files.len() < MAX_TRACKED {
                    self.files.insert(
                        handle,
                        OpenFile {
                            path,
                            write,
                            bytes: 0,
                            ok: true,
                        },
                    );
                }
            }
            (DATA, Some(Request::Read(h))) => {
                let n = f.length()?;
                if let Some(file) = self.files.get_mut(&h) {
                    file.bytes += n;
                }
            }
            _ => {}
        }
        Some(())
    }
}

impl SftpTap {
    /// A status answer to `request`: 0 is success, and a read's end of
    /// file (1) is no failure either.
    fn status(&mut self, request: Request, code: u32) -> Option<()> {
        let ok = code == 0;
        match request {
            Request::Open { path, write } => self.out.push(Transfer {
                action: if write {
                    Action::Upload
                } else {
                    Action::Download
                },
                path,
                bytes: 0,
                ok: false,
            }),
            Request::Write(h) if !ok => self.failed(&h),
            Request::Read(h) if code > 1 => self.failed(&h),
            Request::Op(action, path) => self.out.push(Transfer {
                action,
                path,
                bytes: 0,
                ok,
            }),
            _ => {}
        }
        Some(())
    }

    fn failed(&mut self, handle: &[u8]) {
        if let Some(file) = self.files.get_mut(handle) {
            file.ok = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, id: u32, fields: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![kind];
        body.extend_from_slice(&id.to_be_bytes());
        for f in fields {
            body.extend_from_slice(f);
        }
        let mut p = (body.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&body);
        p
    }

    fn string(b: &[u8]) -> Vec<u8> {
        let mut s = (b.len() as u32).to_be_bytes().to_vec();
        s.extend_from_slice(b);
        s
    }

    fn u32b(n: u32) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    #[test]
    fn an_upload_and_a_download_byte_by_byte() {
        let mut tap = SftpTap::default();
        let mut client = Vec::new();
        let mut server = Vec::new();
        // Upload "up.bin": open for writing, two writes of 1000 and 24 bytes, close.
        client.extend(packet(
            OPEN,
            1,
            &[&string(b"up.bin"), &u32b(0x1a), &u32b(0)],
        ));
        server.push(packet(HANDLE, 1, &[&string(b"h1")]));
        let data = vec![7u8; 1000];
        client.extend(packet(WRITE, 2, &[&string(b"h1"), &[0; 8], &string(&data)]));
        client.extend(packet(
            WRITE,
            3,
            &[&string(b"h1"), &[0; 8], &string(&data[..24])],
        ));
        client.extend(packet(CLOSE, 4, &[&string(b"h1")]));
        // Feeding the client's bytes one at a time: boundaries do not matter.
        let mut done = Vec::new();
        let (head, tail) =
            client.split_at(packet(OPEN, 1, &[&string(b"up.bin"), &u32b(0x1a), &u32b(0)]).len());
        for b in head {
            done.extend(tap.client(std::slice::from_ref(b)));
        }
        done.extend(tap.server(&server.concat()));
        for b in tail {
            done.extend(tap.client(std::slice::from_ref(b)));
        }
        assert_eq!(
            done,
            vec![Transfer {
                action: Action::Upload,
                path: "up.bin".into(),
                bytes: 1024,
                ok: true
            }]
        );
        // Download: open for reading, a read answered with 5 bytes, EOF, close.
        tap.client(&packet(
            OPEN,
            5,
            &[&string(b"/etc/hostname"), &u32b(1), &u32b(0)],
        ));
        tap.server(&packet(HANDLE, 5, &[&string(b"h2")]));
        tap.client(&packet(READ, 6, &[&string(b"h2"), &[0; 8], &u32b(32768)]));
        tap.server(&packet(DATA, 6, &[&string(b"hello")]));
        tap.client(&packet(READ, 7, &[&string(b"h2"), &[0; 8], &u32b(32768)]));
        tap.server(&packet(
            STATUS,
            7,
            &[&u32b(1), &string(b"EOF"), &string(b"")],
        ));
        let done = tap.client(&packet(CLOSE, 8, &[&string(b"h2")]));
        assert_eq!(
            done,
            vec![Transfer {
                action: Action::Download,
                path: "/etc/hostname".into(),
                bytes: 5,
                ok: true
            }]
        );
    }

    #[test]
    fn refused_opens_operations_and_unfinished_files() {
        let mut tap = SftpTap::default();
        tap.client(&packet(
            OPEN,
            1,
            &[&string(b".ssh/authorized_keys"), &u32b(0x1a), &u32b(0)],
        ));
        let done = tap.server(&packet(
            STATUS,
            1,
            &[&u32b(3), &string(b"denied"), &string(b"")],
        ));
        assert_eq!(done.len(), 1);
        assert!(!done[0].ok && done[0].action == Action::Upload);
        tap.client(&packet(RENAME, 2, &[&string(b"a"), &string(b"b")]));
        let done = tap.server(&packet(STATUS, 2, &[&u32b(0), &string(b""), &string(b"")]));
        assert_eq!(done[0].path, "a -> b");
        assert!(done[0].ok);
        tap.client(&packet(OPEN, 3, &[&string(b"half"), &u32b(0x1a), &u32b(0)]));
        tap.server(&packet(HANDLE, 3, &[&string(b"h")]));
        let done = tap.finish();
        assert_eq!((done[0].path.as_str(), done[0].ok), ("half", false));
    }

    #[test]
    fn hostile_streams_stay_bounded() {
        let mut tap = SftpTap::default();
        // A packet claiming 4 GiB: only its head is kept, and nothing breaks.
        let mut p = u32::MAX.to_be_bytes().to_vec();
        p.extend(vec![OPEN; 1 << 16]);
        assert!(tap.client(&p).is_empty());
        assert!(tap.client.body.len() <= KEEP);
        // Many opens never answered: the table stops growing.
        let mut tap = SftpTap::default();
        for id in 0..(MAX_TRACKED as u32 + 100) {
            tap.client(&packet(OPEN, id, &[&string(b"x"), &u32b(1), &u32b(0)]));
        }
        assert_eq!(tap.requests.len(), MAX_TRACKED);
        // Truncated fields and garbage: no transfer, no panic.
        for junk in [
            &[0u8, 0, 0, 1, OPEN][..],
            &[0, 0, 0, 0],
            &[0, 0, 0, 3, WRITE, 0, 0],
        ] {
            assert!(tap.client(junk).is_empty());
            assert!(tap.server(junk).is_empty());
        }
    }
}
