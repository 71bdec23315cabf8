//! PostgreSQL for the tests: which store a server gets, a database of its
//! own per server, and throwaway clusters (scripts/pg-scratch) for tests
//! that must stop or restart theirs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use support_control_plane::store::postgres::PgStore;
use support_control_plane::store::redb_store::RedbStore;
use support_control_plane::store::Store;

/// Which data dirs use which PostgreSQL database (`cli` points commands
/// on that dir at it).
static REGISTERED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// Remembers that the server on `data` keeps its store at `url`.
pub fn register(data: &Path, url: &str) {
    REGISTERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((data.to_path_buf(), url.to_string()));
}

/// The store URL registered for `data`, if any.
pub fn registered(data: &Path) -> Option<String> {
    REGISTERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(d, _)| d == data)
        .map(|(_, u)| u.clone())
}

/// Whether this run keeps the servers' stores in PostgreSQL.
pub fn on_postgres() -> bool {
    match std::env::var("SUPPORT_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("redb") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("SUPPORT_TEST_STORE={other:?}: say redb or postgres"),
    }
}

/// A fresh database for one server, when this run uses PostgreSQL.
pub fn store_for_test() -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let base = std::env::var("SUPPORT_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "SUPPORT_TEST_STORE=postgres needs SUPPORT_TEST_POSTGRES, a cluster's URL \
             (scripts/pg-scratch start DIR prints one)"
        )
    });
    Some(new_database(&base))
}

/// The store an in-process service uses: as [`store_for_test`] says.
pub fn open_store_for_test(dir: &Path) -> Arc<dyn Store> {
    match store_for_test() {
        Some(url) => Arc::new(PgStore::open(&url).expect("the PostgreSQL store opens")),
        None => Arc::new(RedbStore::open(&dir.join("store.redb")).expect("store opens")),
    }
}

/// Creates a database with a name no other test in any process uses, in
/// the cluster at `base`; returns its URL.
pub fn new_database(base: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "cp_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    psql(base, &format!("CREATE DATABASE {name}"));
    database_url(base, &name)
}

/// `base` with its database replaced by `name`.
fn database_url(base: &str, name: &str) -> String {
    let (head, query) = base.split_once('?').unwrap_or((base, ""));
    let slash = head.rfind('/').expect("a URL with a database path");
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{}/{name}{query}", &head[..slash])
}

/// Runs one statement with Debian's psql.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql runs (scripts/setup installs postgresql)");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway cluster of this test's own (scripts/pg-scratch), stopped
/// and removed on drop.
pub struct Cluster {
    dir: PathBuf,
    /// The cluster's URL (the `postgres` database).
    pub url: String,
}

fn scratch(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-scratch");
    let out = Command::new(&script)
        .args(args)
        .output()
        .expect("scripts/pg-scratch runs");
    assert!(
        out.status.success(),
        "pg-scratch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Cluster {
    /// Creates and starts one.
    pub fn start() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let url = scratch(&["start", dir.to_str().expect("utf-8")]);
        Cluster { dir, url }
    }

    /// Stops it at once, as a crash would, and starts it again.
    pub fn restart(&self) {
        scratch(&["restart", self.dir.to_str().expect("utf-8")]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-scratch"))
            .args(["stop", self.dir.to_str().unwrap_or_default()])
            .status();
    }
}
