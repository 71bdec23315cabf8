//! What the packaged unit relies on: `Type=notify` readiness (READY=1 only
//! once the API answers, STOPPING=1 on SIGTERM) and `--metrics-listen`
//! keeping `/metrics` off the public address.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{path_str, BIN};

/// `GET path` on `addr`: the status code and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("writes");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("reads");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

/// The server process, killed if a test panics before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &std::path::Path, extra: &[&str], notify: Option<&std::path::Path>) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data", path_str(data)])
        .args(extra);
    if let Some(url) = common::postgres::store_for_test() {
        common::postgres::register(data, &url);
        cmd.arg("--store").arg(url);
    }
    cmd.env("SUPPORT_CP_LOG", "warn")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped());
    if let Some(n) = notify {
        cmd.env("NOTIFY_SOCKET", n);
    }
    Running(cmd.spawn().expect("starts"))
}

fn sigterm(child: &Running) {
    let st = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

#[test]
fn readiness_is_notified_once_the_api_answers_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("binds the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let data = dir.path().join("data");
    let mut child = serve(&data, &[], Some(&sock_path));

    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification before the timeout");
    let ready = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first notification: {ready:?}"
    );
    // READY=1 was sent after the listening line and the operator socket:
    // both are there now, without waiting for anything else.
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line.trim().strip_prefix("listening on ").expect("address");
    assert!(
        ready.contains(&format!("STATUS=serving on {addr}")),
        "{ready:?}"
    );
    assert_eq!(get(addr, "/healthz").0, 200);
    assert!(
        data.join("operator.sock").exists(),
        "the operator socket is not up at READY=1"
    );

    sigterm(&child);
    let n = sock.recv(&mut buf).expect("STOPPING=1 before exit");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert!(child.0.wait().expect("exits").success());
}

#[test]
fn metrics_listen_serves_metrics_there_and_not_on_the_api_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = serve(dir.path(), &["--metrics-listen", "127.0.0.1:0"], None);
    let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("listening line");
    let api = line
        .trim()
        .strip_prefix("listening on ")
        .expect("api")
        .to_string();
    line.clear();
    out.read_line(&mut line).expect("metrics line");
    let metrics = line
        .trim()
        .strip_prefix("metrics on ")
        .expect("metrics")
        .to_string();

    let (status, body) = get(&api, "/metrics");
    assert!(
        status >= 400 && !body.contains("support_cp_"),
        "/metrics is still served on the API address: {body}"
    );
    assert_eq!(get(&api, "/healthz").0, 200);
    let (status, body) = get(&metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("support_cp_"), "{body}");
    // The metrics address serves nothing of the API.
    let mut s = TcpStream::connect(&metrics).expect("connects");
    write!(
        s,
        "POST /v1/device HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("writes");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("reads");
    assert!(text.starts_with("HTTP/1.1 40"), "{text}");
    sigterm(&child);
    assert!(child.0.wait().expect("exits").success());
}

#[test]
fn durations_on_the_command_line_accept_units_and_refuse_nonsense() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            path_str(dir.path()),
        ])
        .args(["--retention", "3 weeks"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--retention") && err.contains("unknown unit"),
        "{err}"
    );
}

/// The packaged backup script (`dist/backup`, run by the backup timer)
/// against the running server, a fake metadata server and a fake Cloud
/// Storage upload endpoint: a consistent copy, uploaded as a new object
/// only, and the newest few kept.
#[test]
fn the_backup_script_copies_the_live_store_uploads_it_create_only_and_keeps_the_newest() {
    use std::sync::{Arc, Mutex};
    use support_testkit::http;

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut child = serve(&data, &[], None);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");

    // Google's side: a token from the metadata server, uploads to storage.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let fake = listener.local_addr().expect("addr").to_string();
    let uploads: Arc<Mutex<Vec<http::Request>>> = Arc::default();
    let seen = uploads.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let Some(req) = http::read_request(&mut stream) else {
                continue;
            };
            if req.path.starts_with("/computeMetadata/") {
                let flavor = req
                    .headers
                    .iter()
                    .any(|(k, v)| k == "metadata-flavor" && v == "Google");
                let (status, body) = if flavor {
                    (
                        200,
                        r#"{"access_token":"meta-tok","expires_in":3599,"token_type":"Bearer"}"#,
                    )
                } else {
                    (403, "{}")
                };
                http::respond(&mut stream, status, body.as_bytes());
            } else {
                // Recorded before the answer: once the script has it, the
                // test may count.
                seen.lock().expect("lock").push(req);
                http::respond(&mut stream, 200, br#"{"kind":"storage#object"}"#);
            }
        }
    });

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/backup");
    let bin_dir = std::path::Path::new(BIN).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for _ in 0..3 {
        let out = Command::new(script)
            .env("PATH", &path)
            .env("SUPPORT_CP_DATA", &data)
            .env("SUPPORT_CP_BACKUP_KEEP", "2")
            .env(
                "SUPPORT_CP_BACKUP_URL",
                "gs://acme-support-backups/control-plane/",
            )
            .env("GCE_METADATA_HOST", &fake)
            .env("SUPPORT_CP_STORAGE_API", format!("http://{fake}"))
            .output()
            .expect("runs the backup script");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut kept: Vec<_> = std::fs::read_dir(data.join("backups"))
        .expect("backups dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 2, "keeps the newest two: {kept:?}");
    let uploads = uploads.lock().expect("lock");
    assert_eq!(uploads.len(), 3);
    let last = &uploads[2];
    let newest = kept[1]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    assert_eq!(last.method, "POST");
    assert_eq!(
        last.path,
        format!(
            "/upload/storage/v1/b/acme-support-backups/o?uploadType=media&ifGenerationMatch=0&name=control-plane%2F{newest}"
        )
    );
    assert_eq!(last.authorization.as_deref(), Some("Bearer meta-tok"));
    assert_eq!(last.body, std::fs::read(&kept[1]).expect("backup"));
    // What was uploaded is a store the server opens: serve from a copy.
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).expect("dir");
    std::fs::write(restored.join("store.redb"), &last.body).expect("write");
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data", path_str(&restored)])
        .env("SUPPORT_CP_LOG", "warn")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sigterm(&child);
    assert!(child.0.wait().expect("exits").success());
}

/// Root running an offline command on the service's data directory would
/// leave a store the service (its own user) cannot open: refused, with the
/// command to use instead, and nothing written.
#[test]
fn offline_commands_refuse_a_data_directory_another_user_owns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("dir");
    // nobody (65534) owns it; the tests run as root, so this is the case.
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).expect("chown (tests run as root)");
    for args in [
        &["admins", "add", "alice", &"ab".repeat(32)][..],
        &["keys", "rotate"][..],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .args(["--data", path_str(&data)])
            .env("SUPPORT_CP_LOG", "warn")
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{args:?} ran");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("sudo -u nobody support-control-plane"),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&data).expect("dir").count(),
        0,
        "something was written"
    );
}
