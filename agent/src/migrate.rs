//! `support-agent migrate-from-original`: removes what the original (Python)
//! support tunnel, micro-nova/support_tunnel, left on a device.
//!
//! What the original's device code made (paths in that repository):
//!
//! * per tunnel, an interface `support-<10..99999>` (`device/cli.py`,
//!   `request`: `f"support-{random.randint(10,99999)}"`), its wg-quick
//!   config `/etc/wireguard/<iface>.conf` (`common/tunnel.py`,
//!   `write_wireguard_config`) and `systemctl enable --now wg-quick@<iface>`
//!   (`start_wireguard_tunnel`), which links the unit into
//!   `multi-user.target.wants`;
//! * per tunnel, a user `support` + 8 lowercase hex digits
//!   (`secrets.token_hex(nbytes=4)`), made by
//!   `useradd -g support -s $(which bash) -p '*' -m NAME` (`common/util.py`,
//!   `create_user`): home `/home/NAME`, bash, primary group `support`, no
//!   comment, no password (`!` before November 2024, when `-p '*'` came),
//!   the support engineer's key in `/home/NAME/.ssh/authorized_keys`
//!   (`add_authorized_key`). It wrote no sudo rule of its own: its users get
//!   root through their group (below);
//! * its SQLite database `/var/lib/support_tunnel/device.db`
//!   (`device/models.py`, `SQLITE_DB`).
//!
//! And what AmpliPi installed with it (micro-nova/AmpliPi,
//! `scripts/configure.py`, component `support_tunnel`), which the original
//! depended on to run and to give root:
//!
//! * `/etc/cron.d/support_tunnel` (`config/support_tunnel_crontab`): runs
//!   its `gc` and `connect-approved-tunnels` as root;
//! * `/etc/sudoers.d/099_support-nopasswd` (`config/support_group_sudoers`):
//!   `%support ALL=(ALL) NOPASSWD: ALL`. This agent's support users are in
//!   group `support` too (the default `group`), so that rule would give
//!   them sudo without our expiry, and even with `sudo = false`.
//!
//! Each of these is matched exactly (names, file contents, the users'
//! passwd, shadow and group entries, their homes, sudo rules naming them),
//! and anything that only looks like it is left alone and named, with why.
//! The group `support` stays (this agent uses it), and so do the program
//! in `/opt/support_tunnel` and its `/etc/support_tunnel` and
//! `/usr/local/bin/support_tunnel_post_*.sh`, which AmpliPi's updater
//! manages and which do nothing once the cron file is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::config::DEFAULT_SUPPORT_UIDS;

/// What to migrate, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The filesystem root to work on (`/` on a device; a fabricated tree in tests).
    pub root: PathBuf,
    /// List what would be removed, change nothing.
    pub dry_run: bool,
    /// Do not ask for confirmation.
    pub assume_yes: bool,
}

/// Why the migration stopped, or why one item could not be removed.
#[derive(Debug)]
pub enum MigrateError {
    /// `--root` cannot be resolved.
    Root {
        /// As given.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// `--root` is not a directory (resolved).
    RootNotADirectory(PathBuf),
    /// Working on `/` takes root.
    NotRoot,
    /// Nobody can confirm (stdin is no terminal) and `--yes` was not given.
    NoTerminal,
    /// Asking for confirmation failed.
    Terminal {
        /// "stdin" or "stdout".
        stream: &'static str,
        /// What the OS said.
        error: io::Error,
    },
    /// The answer was not yes.
    NotConfirmed,
    /// A file or directory cannot be read.
    Read {
        /// Which.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// A path cannot be examined.
    Stat {
        /// Which.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// Removing a file or directory failed.
    Remove {
        /// Which.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// What the scan found is no longer of its kind, so it is left alone.
    Changed {
        /// Which.
        path: PathBuf,
        /// What it was ("regular file", "symlink", "directory").
        kind: &'static str,
    },
    /// A tool (`ip`, `userdel`) cannot be started.
    Spawn {
        /// The tool.
        program: &'static str,
        /// What the OS said.
        error: io::Error,
    },
    /// A tool exited unsuccessfully.
    Tool {
        /// The tool.
        program: &'static str,
        /// Its arguments, as shown.
        args: String,
        /// How it exited.
        status: ExitStatus,
        /// What it said, on one line.
        stderr: String,
    },
    /// A user could not be deleted.
    User {
        /// The user.
        name: String,
        /// Why.
        error: Box<MigrateError>,
    },
    /// `userdel` succeeded, but the user is still in `etc/passwd`.
    UserRemains(String),
    /// The user is gone but removing its home failed.
    HomeNotRemoved {
        /// The user.
        user: String,
        /// The home.
        home: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// The user is gone but its home is left: `userdel` failed to remove it
    /// (its error), or it is no longer what the scan found (`None`).
    HomeLeft {
        /// The user.
        user: String,
        /// The home.
        home: PathBuf,
        /// `userdel`'s failure.
        userdel: Option<Box<MigrateError>>,
    },
    /// Some items were not removed (each was reported as it failed).
    Incomplete {
        /// How many failed.
        failed: usize,
        /// How many there were.
        total: usize,
    },
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root { path, error } => write!(f, "--root {}: {error}", path.display()),
            Self::RootNotADirectory(path) => {
                write!(f, "--root {}: not a directory", path.display())
            }
            Self::NotRoot => f.write_str(
                "migrate-from-original reads /etc/shadow and removes users and services \
                 of this system: run it as root",
            ),
            Self::NoTerminal => f.write_str(
                "stdin is not a terminal, so nobody can confirm: run again with --yes to \
                 remove the items listed above (or --dry-run to only list them). \
                 Nothing was changed.",
            ),
            Self::Terminal { stream, error } => write!(f, "{stream}: {error}"),
            Self::NotConfirmed => f.write_str("not confirmed; nothing was changed"),
            Self::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            Self::Stat { path, error } => write!(f, "cannot stat {}: {error}", path.display()),
            Self::Remove { path, error } => write!(f, "{}: {error}", path.display()),
            Self::Changed { path, kind } => {
                write!(f, "{} is no longer a {kind}; left alone", path.display())
            }
            Self::Spawn { program, error } => write!(f, "cannot run {program}: {error}"),
            Self::Tool {
                program,
                args,
                status,
                stderr,
            } => {
                write!(f, "{program} {args} failed ({status}): {stderr}")?;
                if stderr.contains("currently used by process") {
                    f.write_str(
                        " (the user is still logged in or running something: end that, \
                         or reboot, and run again)",
                    )?;
                }
                Ok(())
            }
            Self::User { name, error } => write!(f, "user {name}: {error}"),
            Self::UserRemains(name) => {
                write!(
                    f,
                    "user {name}: userdel succeeded but the user is still there"
                )
            }
            Self::HomeNotRemoved { user, home, error } => write!(
                f,
                "removed user {user}, but not its home {}: {error}",
                home.display()
            ),
            Self::HomeLeft {
                user,
                home,
                userdel,
            } => {
                write!(
                    f,
                    "removed user {user}, but not its home {}: ",
                    home.display()
                )?;
                match userdel {
                    Some(e) => e.fmt(f),
                    None => f.write_str("it changed since the scan"),
                }
            }
            Self::Incomplete { failed, total } => write!(
                f,
                "{failed} of {total} items could not be removed (see above); \
                 run again once that is fixed"
            ),
        }
    }
}

impl std::error::Error for MigrateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Root { error, .. }
            | Self::Terminal { error, .. }
            | Self::Read { error, .. }
            | Self::Stat { error, .. }
            | Self::Remove { error, .. }
            | Self::Spawn { error, .. }
            | Self::HomeNotRemoved { error, .. } => Some(error),
            Self::User { error, .. } => Some(error.as_ref()),
            Self::HomeLeft {
                userdel: Some(e), ..
            } => Some(e.as_ref()),
            Self::RootNotADirectory(_)
            | Self::NotRoot
            | Self::NoTerminal
            | Self::NotConfirmed
            | Self::Changed { .. }
            | Self::Tool { .. }
            | Self::UserRemains(_)
            | Self::HomeLeft { userdel: None, .. }
            | Self::Incomplete { .. } => None,
        }
    }
}

/// The cron file AmpliPi installed with the original, and its two entries
/// (whitespace collapsed).
const CRON_FILE: &str = "etc/cron.d/support_tunnel";
const CRON_LINES: [&str; 2] = [
    "0 * * * * root /opt/support_tunnel/venv/bin/python3 -m invoke -r /opt/support_tunnel gc",
    "*/5 * * * * root /opt/support_tunnel/venv/bin/python3 -m invoke -r /opt/support_tunnel connect-approved-tunnels",
];
/// The sudoers drop-in AmpliPi installed with the original, and its one rule.
const SUDO_RULE_FILE: &str = "etc/sudoers.d/099_support-nopasswd";
const SUDO_RULE: &str = "%support ALL=(ALL) NOPASSWD: ALL";
/// The original's database directory.
const STATE_DIR: &str = "var/lib/support_tunnel";
/// `$(which bash)` on Debian, before and after the merged /usr.
const SHELLS: [&str; 2] = ["/bin/bash", "/usr/bin/bash"];
/// The primary group of the original's users.
const GROUP: &str = "support";
/// useradd's uid range when login.defs does not say (Debian's defaults).
const DEFAULT_UID_RANGE: (u32, u32) = (1000, 60000);

/// One thing of the original's, removed in the order found.
#[derive(Debug)]
enum Item {
    /// A regular file (the cron file, the sudoers rule, a wg-quick config).
    File(PathBuf),
    /// An enablement symlink of a `wg-quick@support-N` unit.
    WantsLink(PathBuf),
    /// `systemctl disable --now wg-quick@IFACE.service` (only on `/`).
    Service(String),
    /// A live WireGuard interface to delete (only on `/`).
    Link(String),
    /// A support user, with its home as it is on disk under the root.
    User {
        name: String,
        uid: u32,
        home: PathBuf,
    },
    /// The database directory.
    StateDir(PathBuf),
}

impl Item {
    fn describe(&self) -> String {
        match self {
            Item::File(p) => format!("file {}", p.display()),
            Item::WantsLink(p) => format!("symlink {}", p.display()),
            Item::Service(i) => format!("service wg-quick@{i}.service"),
            Item::Link(i) => format!("network interface {i}"),
            Item::User { name, uid, .. } => format!("user {name} (uid {uid})"),
            Item::StateDir(p) => format!("directory {}", p.display()),
        }
    }
}

struct Found {
    item: Item,
    why: String,
}

#[derive(Default)]
struct Scan {
    found: Vec<Found>,
    /// Look-alikes left alone: (what, why).
    skipped: Vec<(String, String)>,
}

impl Scan {
    fn found(&mut self, item: Item, why: impl Into<String>) {
        self.found.push(Found {
            item,
            why: why.into(),
        });
    }

    fn skip(&mut self, what: String, why: impl Into<String>) {
        self.skipped.push((what, why.into()));
    }
}

/// Runs the migration.
pub fn run(opts: &Options) -> Result<(), MigrateError> {
    let root = fs::canonicalize(&opts.root).map_err(|error| MigrateError::Root {
        path: opts.root.clone(),
        error,
    })?;
    if !root.is_dir() {
        return Err(MigrateError::RootNotADirectory(root));
    }
    let system = root == Path::new("/");
    if system && !rustix::process::geteuid().is_root() {
        return Err(MigrateError::NotRoot);
    }
    let scan = scan(&root, system)?;
    print_scan(&scan);
    if scan.found.is_empty() {
        println!("Nothing of the original support tunnel was found.");
        return Ok(());
    }
    if opts.dry_run {
        println!("Dry run: nothing was changed.");
        return Ok(());
    }
    if !opts.assume_yes {
        confirm()?;
    }
    let mut failed = 0;
    for f in &scan.found {
        match remove(&root, system, &f.item) {
            Ok(done) => println!("{done}"),
            Err(e) => {
                failed += 1;
                eprintln!("FAILED: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(MigrateError::Incomplete {
            failed,
            total: scan.found.len(),
        });
    }
    println!(
        "Done: the original support tunnel's {} items are removed.",
        scan.found.len()
    );
    Ok(())
}

fn print_scan(scan: &Scan) {
    if !scan.found.is_empty() {
        println!("Left by the original support tunnel (micro-nova/support_tunnel):");
        for f in &scan.found {
            println!("  {}: {}", f.item.describe(), f.why);
        }
    }
    if !scan.skipped.is_empty() {
        println!("Left alone (they look like the original's, but are not):");
        for (what, why) in &scan.skipped {
            println!("  {what}: {why}");
        }
    }
}

fn confirm() -> Result<(), MigrateError> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return Err(MigrateError::NoTerminal);
    }
    print!("Remove these? [y/N] ");
    io::stdout()
        .flush()
        .map_err(|error| MigrateError::Terminal {
            stream: "stdout",
            error,
        })?;
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|error| MigrateError::Terminal {
            stream: "stdin",
            error,
        })?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(MigrateError::NotConfirmed),
    }
}

// ---------------------------------------------------------------- finding

fn scan(root: &Path, system: bool) -> Result<Scan, MigrateError> {
    let mut scan = Scan::default();
    scan_cron(root, &mut scan)?;
    scan_sudo_rule(root, &mut scan)?;
    scan_tunnels(root, system, &mut scan)?;
    scan_users(root, &mut scan)?;
    scan_state_dir(root, &mut scan)?;
    Ok(scan)
}

/// The file's contents (lossy UTF-8), `None` if it does not exist.
fn read_opt(path: &Path) -> Result<Option<String>, MigrateError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(MigrateError::Read {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// The directory's entries as (name, path), sorted; empty if it does not exist.
fn read_dir_opt(dir: &Path) -> Result<Vec<(String, PathBuf)>, MigrateError> {
    let unreadable = |error| MigrateError::Read {
        path: dir.to_path_buf(),
        error,
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unreadable(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(unreadable)?;
        // Names that are not UTF-8 are nothing the original made.
        if let Some(name) = e.file_name().to_str() {
            out.push((name.to_string(), e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn symlink_meta(path: &Path) -> Result<Option<fs::Metadata>, MigrateError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(MigrateError::Stat {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// Non-empty, non-comment lines, whitespace collapsed. sudo's `#include`
/// and `#includedir` are directives, not comments: they count as content.
fn effective_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty() && (!l.starts_with('#') || l.starts_with("#include")))
        .collect()
}

/// A regular file whose effective lines are all among `expected`.
fn scan_known_file(
    root: &Path,
    rel: &str,
    expected: &[&str],
    why: &str,
    scan: &mut Scan,
) -> Result<(), MigrateError> {
    let path = root.join(rel);
    let Some(meta) = symlink_meta(&path)? else {
        return Ok(());
    };
    let what = format!("file {}", path.display());
    if !meta.is_file() {
        scan.skip(
            what,
            "not a regular file, so not the one installed with the original",
        );
        return Ok(());
    }
    let text = read_opt(&path)?.unwrap_or_default();
    let lines = effective_lines(&text);
    if lines.is_empty() || lines.iter().any(|l| !expected.contains(&l.as_str())) {
        scan.skip(
            what,
            "its contents differ from what was installed with the original",
        );
    } else {
        scan.found(Item::File(path), why);
    }
    Ok(())
}

fn scan_cron(root: &Path, scan: &mut Scan) -> Result<(), MigrateError> {
    scan_known_file(
        root,
        CRON_FILE,
        &CRON_LINES,
        "runs the original's gc and connect-approved-tunnels as root \
         (installed with it by AmpliPi, config/support_tunnel_crontab)",
        scan,
    )
}

fn scan_sudo_rule(root: &Path, scan: &mut Scan) -> Result<(), MigrateError> {
    scan_known_file(
        root,
        SUDO_RULE_FILE,
        &[SUDO_RULE],
        "'%support ALL=(ALL) NOPASSWD: ALL', how the original's users got root \
         (installed with it by AmpliPi, config/support_group_sudoers); it would give \
         this agent's support users, also in group support, sudo with no expiry",
        scan,
    )
}

/// `support-<n>` with n in 10..=99999 written as Python prints it.
fn original_iface(name: &str) -> bool {
    let Some(digits) = name.strip_prefix("support-") else {
        return false;
    };
    (2..=5).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

const IFACE_NAMING: &str = "not the original's naming (support-<10..99999>)";

fn scan_tunnels(root: &Path, system: bool, scan: &mut Scan) -> Result<(), MigrateError> {
    let mut confs = Vec::new();
    let mut wants = Vec::new();
    let mut names = BTreeSet::new();

    for (name, path) in read_dir_opt(&root.join("etc/wireguard"))? {
        let Some(iface) = name.strip_suffix(".conf") else {
            continue;
        };
        let what = format!("file {}", path.display());
        if original_iface(iface) {
            match symlink_meta(&path)? {
                Some(m) if m.is_file() => {
                    names.insert(iface.to_string());
                    confs.push(path);
                }
                Some(_) => scan.skip(what, "not a regular file; the original wrote one"),
                None => {}
            }
        } else if iface.starts_with("support") {
            scan.skip(what, IFACE_NAMING);
        }
    }

    for (dir_name, dir) in read_dir_opt(&root.join("etc/systemd/system"))? {
        let is_dir = symlink_meta(&dir)?.map(|m| m.is_dir()).unwrap_or(false);
        if !dir_name.ends_with(".wants") || !is_dir {
            continue;
        }
        for (name, path) in read_dir_opt(&dir)? {
            let Some(iface) = name
                .strip_prefix("wg-quick@")
                .and_then(|s| s.strip_suffix(".service"))
            else {
                continue;
            };
            let what = format!("symlink {}", path.display());
            if original_iface(iface) {
                match symlink_meta(&path)? {
                    Some(m) if m.file_type().is_symlink() => {
                        names.insert(iface.to_string());
                        wants.push(path);
                    }
                    Some(_) => scan.skip(
                        format!("file {}", path.display()),
                        "not a symlink; systemctl enable makes symlinks",
                    ),
                    None => {}
                }
            } else if iface.starts_with("support") {
                scan.skip(what, IFACE_NAMING);
            }
        }
    }

    let mut links = Vec::new();
    if system {
        for (name, path) in read_dir_opt(Path::new("/sys/class/net"))? {
            let wireguard = fs::read_to_string(path.join("uevent"))
                .map(|u| u.lines().any(|l| l == "DEVTYPE=wireguard"))
                .unwrap_or(false);
            if original_iface(&name) && wireguard {
                names.insert(name.clone());
                links.push(name);
            }
        }
        for name in &names {
            scan.found(
                Item::Service(name.clone()),
                "the original's tunnel (common/tunnel.py, start_wireguard_tunnel): \
                 to be stopped and disabled",
            );
        }
        for name in links {
            scan.found(
                Item::Link(name),
                "the original's WireGuard interface is up: to be deleted if stopping \
                 the service leaves it",
            );
        }
    }
    for path in wants {
        scan.found(
            Item::WantsLink(path),
            "starts the original's tunnel at boot (systemctl enable wg-quick@support-<n>)",
        );
    }
    for path in confs {
        scan.found(
            Item::File(path),
            "the original's wg-quick config, with the tunnel's private key \
             (common/tunnel.py, write_wireguard_config)",
        );
    }
    Ok(())
}

/// `support` + 8 lowercase hex digits (`secrets.token_hex(nbytes=4)`).
fn original_user_name(name: &str) -> bool {
    name.strip_prefix("support").is_some_and(|h| {
        h.len() == 8
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

struct PwEntry {
    name: String,
    uid: u32,
    gid: u32,
    gecos: String,
    home: String,
    shell: String,
}

/// The well-formed lines of a passwd file; others (comments, NIS `+`
/// lines, junk) are ignored here and left in place by userdel.
fn parse_passwd(text: &str) -> Vec<PwEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 7 {
                return None;
            }
            Some(PwEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                gecos: f[4].to_string(),
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

struct Groups {
    /// gid -> name (the first line with that gid).
    names: BTreeMap<u32, String>,
    /// (group, members).
    members: Vec<(String, Vec<String>)>,
}

fn parse_group(text: &str) -> Groups {
    let mut g = Groups {
        names: BTreeMap::new(),
        members: Vec::new(),
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 4 {
            continue;
        }
        if let Ok(gid) = f[2].parse::<u32>() {
            g.names.entry(gid).or_insert_with(|| f[0].to_string());
        }
        let members = f[3]
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(String::from)
            .collect();
        g.members.push((f[0].to_string(), members));
    }
    g
}

/// UID_MIN and UID_MAX from login.defs, or Debian's defaults.
fn uid_range(root: &Path) -> Result<(u32, u32), MigrateError> {
    let (mut lo, mut hi) = DEFAULT_UID_RANGE;
    for line in read_opt(&root.join("etc/login.defs"))?
        .unwrap_or_default()
        .lines()
    {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        match (key, value.parse::<u32>()) {
            ("UID_MIN", Ok(v)) => lo = v,
            ("UID_MAX", Ok(v)) => hi = v,
            _ => {}
        }
    }
    Ok((lo, hi))
}

/// Every line of /etc/sudoers and the files in /etc/sudoers.d, as
/// (file, line number, text).
fn sudoers_lines(root: &Path) -> Result<Vec<(PathBuf, usize, String)>, MigrateError> {
    let mut files = vec![root.join("etc/sudoers")];
    for (_, path) in read_dir_opt(&root.join("etc/sudoers.d"))? {
        if fs::metadata(&path).map(|m| m.is_file()).unwrap_or(false) {
            files.push(path);
        }
    }
    let mut out = Vec::new();
    for file in files {
        let Some(text) = read_opt(&file)? else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            out.push((file.clone(), i + 1, line.to_string()));
        }
    }
    Ok(out)
}

/// Whether a sudoers line names the user (by name or `#uid`); comments do not count.
fn sudoers_names(line: &str, name: &str, uid: u32) -> bool {
    let line = line.trim_start();
    let comment = line.starts_with('#')
        && !line.starts_with("#include")
        && !line[1..].starts_with(|c: char| c.is_ascii_digit());
    if comment {
        return false;
    }
    let by_uid = format!("#{uid}");
    line.split(|c: char| !(c.is_ascii_alphanumeric() || "_.-#$".contains(c)))
        .any(|t| t == name || t == by_uid)
}

fn scan_users(root: &Path, scan: &mut Scan) -> Result<(), MigrateError> {
    let passwd = read_opt(&root.join("etc/passwd"))?.unwrap_or_default();
    let users = parse_passwd(&passwd);
    if !users.iter().any(|u| original_user_name(&u.name)) {
        return Ok(());
    }
    let shadow_text = read_opt(&root.join("etc/shadow"))?.unwrap_or_default();
    let mut shadow: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in shadow_text.lines() {
        let mut f = line.split(':');
        if let (Some(name), Some(pw)) = (f.next(), f.next()) {
            shadow.entry(name).or_default().push(pw);
        }
    }
    let groups = parse_group(&read_opt(&root.join("etc/group"))?.unwrap_or_default());
    let uids = uid_range(root)?;
    let sudoers = sudoers_lines(root)?;
    for u in users.iter().filter(|u| original_user_name(&u.name)) {
        let ctx = UserContext {
            root,
            count: users.iter().filter(|x| x.name == u.name).count(),
            shadow: shadow
                .get(u.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            groups: &groups,
            uids,
            sudoers: &sudoers,
        };
        let what = format!("user {}", u.name);
        match check_user(u, &ctx) {
            Ok(home) => scan.found(
                Item::User {
                    name: u.name.clone(),
                    uid: u.uid,
                    home,
                },
                "the original's support user: named support+8 hex digits, home /home/<name>, \
                 bash, group support, no comment, no password, no group or sudo rule of its own \
                 (common/util.py, create_user)",
            ),
            Err(why) => scan.skip(what, why.to_string()),
        }
    }
    Ok(())
}

struct UserContext<'a> {
    root: &'a Path,
    /// How many passwd lines carry the name.
    count: usize,
    /// The password fields of the name's shadow lines.
    shadow: &'a [&'a str],
    groups: &'a Groups,
    uids: (u32, u32),
    sudoers: &'a [(PathBuf, usize, String)],
}

/// Why a user named like the original's is not one of them (so it is left
/// alone).
#[derive(Debug)]
enum NotOriginal {
    /// GECOS `support-tunnel …`, or a uid in this agent's range.
    ThisAgents,
    /// The name is on more than one passwd line (how many).
    Repeated(usize),
    /// Another home than `/home/NAME`.
    Home {
        /// Its home.
        home: String,
        /// The original's.
        expected: String,
    },
    /// Another shell (it).
    Shell(String),
    /// Another primary group (its name).
    Group(String),
    /// A primary gid with no group (it).
    NoGroup(u32),
    /// A comment (it).
    Gecos(String),
    /// A uid outside useradd's range.
    Uid {
        /// The uid.
        uid: u32,
        /// UID_MIN and UID_MAX.
        range: (u32, u32),
    },
    /// No shadow line.
    NoShadow,
    /// A password set.
    Password,
    /// More than one shadow line.
    ShadowRepeated,
    /// Member of these groups.
    Member(Vec<String>),
    /// A sudo rule names it (file, line).
    SudoRule(PathBuf, usize),
    /// Its home is not a directory.
    HomeNotADirectory(PathBuf),
    /// Its home is someone else's (the home, its owner).
    HomeOwner(PathBuf, u32),
    /// Its home cannot be examined.
    HomeUnreadable(MigrateError),
}

impl fmt::Display for NotOriginal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ThisAgents => {
                f.write_str("made by this agent (GECOS 'support-tunnel …' or a uid in its range)")
            }
            Self::Repeated(n) => write!(f, "appears {n} times in etc/passwd"),
            Self::Home { home, expected } => {
                write!(
                    f,
                    "home is {home}, but the original's users have {expected}"
                )
            }
            Self::Shell(shell) => write!(f, "shell is {shell}, but the original gave bash"),
            Self::Group(g) => write!(
                f,
                "primary group is {g}, but the original's users have {GROUP}"
            ),
            Self::NoGroup(gid) => write!(
                f,
                "primary gid {gid} is no group, but the original's users have {GROUP}"
            ),
            Self::Gecos(gecos) => write!(
                f,
                "has the comment (GECOS) '{gecos}'; the original set none"
            ),
            Self::Uid {
                uid,
                range: (lo, hi),
            } => write!(f, "uid {uid} is outside useradd's range {lo}-{hi}"),
            Self::NoShadow => f.write_str("has no entry in etc/shadow; useradd writes one"),
            Self::Password => f.write_str(
                "has a password (or a changed password field) in etc/shadow; \
                 the original set '*' (or left useradd's '!')",
            ),
            Self::ShadowRepeated => f.write_str("appears more than once in etc/shadow"),
            Self::Member(groups) => write!(
                f,
                "is a member of group {}; the original added its users to no group",
                groups.join(", ")
            ),
            Self::SudoRule(file, line) => write!(
                f,
                "{} line {line} is a sudo rule naming it; the original wrote no per-user sudo rule",
                file.display()
            ),
            Self::HomeNotADirectory(home) => write!(
                f,
                "{} is not a directory (the original's useradd -m made one)",
                home.display()
            ),
            Self::HomeOwner(home, uid) => write!(
                f,
                "{} is owned by uid {uid}, not by the user as useradd -m made it",
                home.display()
            ),
            Self::HomeUnreadable(e) => e.fmt(f),
        }
    }
}

/// `Ok(home on disk)` if the user is exactly what the original's
/// `create_user` made, else why not.
fn check_user(u: &PwEntry, ctx: &UserContext<'_>) -> Result<PathBuf, NotOriginal> {
    let (lo, hi) = DEFAULT_SUPPORT_UIDS;
    if u.gecos.starts_with("support-tunnel ") || (lo..=hi).contains(&u.uid) {
        return Err(NotOriginal::ThisAgents);
    }
    if ctx.count != 1 {
        return Err(NotOriginal::Repeated(ctx.count));
    }
    let expected = format!("/home/{}", u.name);
    if u.home != expected {
        return Err(NotOriginal::Home {
            home: u.home.clone(),
            expected,
        });
    }
    if !SHELLS.contains(&u.shell.as_str()) {
        return Err(NotOriginal::Shell(u.shell.clone()));
    }
    match ctx.groups.names.get(&u.gid) {
        Some(g) if g == GROUP => {}
        Some(g) => return Err(NotOriginal::Group(g.clone())),
        None => return Err(NotOriginal::NoGroup(u.gid)),
    }
    if !u.gecos.is_empty() {
        return Err(NotOriginal::Gecos(u.gecos.clone()));
    }
    let (uid_min, uid_max) = ctx.uids;
    if !(uid_min..=uid_max).contains(&u.uid) {
        return Err(NotOriginal::Uid {
            uid: u.uid,
            range: ctx.uids,
        });
    }
    match ctx.shadow {
        [pw] if *pw == "*" || *pw == "!" => {}
        [] => return Err(NotOriginal::NoShadow),
        [_] => return Err(NotOriginal::Password),
        _ => return Err(NotOriginal::ShadowRepeated),
    }
    let member_of: Vec<String> = ctx
        .groups
        .members
        .iter()
        .filter(|(_, m)| m.contains(&u.name))
        .map(|(g, _)| g.clone())
        .collect();
    if !member_of.is_empty() {
        return Err(NotOriginal::Member(member_of));
    }
    if let Some((file, line, _)) = ctx
        .sudoers
        .iter()
        .find(|(_, _, text)| sudoers_names(text, &u.name, u.uid))
    {
        return Err(NotOriginal::SudoRule(file.clone(), *line));
    }
    let home = ctx.root.join("home").join(&u.name);
    if let Some(meta) = symlink_meta(&home).map_err(NotOriginal::HomeUnreadable)? {
        if !meta.is_dir() {
            return Err(NotOriginal::HomeNotADirectory(home));
        }
        if meta.uid() != u.uid {
            return Err(NotOriginal::HomeOwner(home, meta.uid()));
        }
    }
    Ok(home)
}

fn scan_state_dir(root: &Path, scan: &mut Scan) -> Result<(), MigrateError> {
    let path = root.join(STATE_DIR);
    match symlink_meta(&path)? {
        None => {}
        Some(m) if m.is_dir() => scan.found(
            Item::StateDir(path),
            "the original's database device.db (device/models.py, SQLITE_DB)",
        ),
        Some(m) if m.file_type().is_symlink() => scan.skip(
            format!("symlink {}", path.display()),
            "a symlink, not the directory the original used; not followed",
        ),
        Some(_) => scan.skip(
            format!("file {}", path.display()),
            "not a directory, so not the original's",
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------- removing

fn remove(root: &Path, system: bool, item: &Item) -> Result<String, MigrateError> {
    match item {
        Item::File(path) => remove_file(path, "regular file", |m| m.is_file()),
        Item::WantsLink(path) => remove_file(path, "symlink", |m| m.file_type().is_symlink()),
        Item::Service(iface) => Ok(disable_service(iface)),
        Item::Link(iface) => delete_link(iface),
        Item::User { name, uid, home } => remove_user(root, system, name, *uid, home),
        Item::StateDir(path) => match symlink_meta(path)? {
            None => Ok(format!("{} was already gone", path.display())),
            Some(m) if m.is_dir() => fs::remove_dir_all(path)
                .map(|()| format!("removed directory {}", path.display()))
                .map_err(|error| MigrateError::Remove {
                    path: path.clone(),
                    error,
                }),
            Some(_) => Err(MigrateError::Changed {
                path: path.clone(),
                kind: "directory",
            }),
        },
    }
}

fn remove_file(
    path: &Path,
    kind: &'static str,
    ok: fn(&fs::Metadata) -> bool,
) -> Result<String, MigrateError> {
    match symlink_meta(path)? {
        None => Ok(format!("{} was already gone", path.display())),
        Some(m) if ok(&m) => fs::remove_file(path)
            .map(|()| format!("removed {}", path.display()))
            .map_err(|error| MigrateError::Remove {
                path: path.to_path_buf(),
                error,
            }),
        Some(_) => Err(MigrateError::Changed {
            path: path.to_path_buf(),
            kind,
        }),
    }
}

/// Stops and disables the unit; failures are reported, not fatal (the
/// files go anyway, and the interface is deleted next).
fn disable_service(iface: &str) -> String {
    let unit = format!("wg-quick@{iface}.service");
    match Command::new("systemctl")
        .args(["disable", "--now", &unit])
        .output()
    {
        Ok(o) if o.status.success() => format!("stopped and disabled {unit}"),
        Ok(o) => format!(
            "warning: systemctl disable --now {unit} failed ({}): {}; going on",
            o.status,
            one_line(&o.stderr)
        ),
        Err(e) => format!("warning: cannot run systemctl ({e}); {unit} not stopped; going on"),
    }
}

fn delete_link(iface: &str) -> Result<String, MigrateError> {
    if symlink_meta(&Path::new("/sys/class/net").join(iface))?.is_none() {
        return Ok(format!("network interface {iface} is gone"));
    }
    run_tool("ip", &["link", "delete", iface])
        .map(|()| format!("deleted network interface {iface}"))
}

fn run_tool(program: &'static str, args: &[&str]) -> Result<(), MigrateError> {
    run_command(Command::new(program).args(args), program, args.join(" "))
}

fn run_command(
    cmd: &mut Command,
    program: &'static str,
    shown: String,
) -> Result<(), MigrateError> {
    let out = cmd
        .output()
        .map_err(|error| MigrateError::Spawn { program, error })?;
    if out.status.success() {
        return Ok(());
    }
    Err(MigrateError::Tool {
        program,
        args: shown,
        status: out.status,
        stderr: one_line(&out.stderr),
    })
}

/// A tool's message on one line.
fn one_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn user_exists(root: &Path, name: &str) -> Result<bool, MigrateError> {
    let passwd = read_opt(&root.join("etc/passwd"))?.unwrap_or_default();
    Ok(parse_passwd(&passwd).iter().any(|u| u.name == name))
}

/// On `/`: `userdel --remove` (account, home, mail spool). Under another
/// root: `userdel --prefix ROOT`, and the home is removed here, because
/// shadow 4.13's userdel builds the mail spool path one character short
/// with --prefix (for `support0a1b2c3d` it goes for `var/mail/support0a1b2c3`,
/// another user's name), so --remove is not used there.
fn remove_user(
    root: &Path,
    system: bool,
    name: &str,
    uid: u32,
    home: &Path,
) -> Result<String, MigrateError> {
    if !user_exists(root, name)? {
        return Ok(format!("user {name} was already gone"));
    }
    let deleted = if system {
        run_tool("userdel", &["--remove", name])
    } else {
        run_command(
            Command::new("userdel").arg("--prefix").arg(root).arg(name),
            "userdel",
            format!("--prefix {} {name}", root.display()),
        )
    };
    if user_exists(root, name)? {
        return Err(match deleted {
            Err(e) => MigrateError::User {
                name: name.into(),
                error: Box::new(e),
            },
            Ok(()) => MigrateError::UserRemains(name.into()),
        });
    }
    match symlink_meta(home)? {
        None => {}
        Some(m) if !system && m.is_dir() && m.uid() == uid => {
            fs::remove_dir_all(home).map_err(|error| MigrateError::HomeNotRemoved {
                user: name.into(),
                home: home.to_path_buf(),
                error,
            })?;
        }
        Some(_) => {
            return Err(MigrateError::HomeLeft {
                user: name.into(),
                home: home.to_path_buf(),
                userdel: deleted.err().map(Box::new),
            });
        }
    }
    Ok(format!(
        "removed user {name} (uid {uid}) and its home {}",
        home.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(original_user_name("support0a1b2c3d"));
        assert!(!original_user_name("support0A1B2C3D"));
        assert!(!original_user_name("support0a1b2c3"));
        assert!(!original_user_name("support-0a1b2c3d"));
        assert!(!original_user_name("support0a1b2c3d0"));
        assert!(original_iface("support-10"));
        assert!(original_iface("support-99999"));
        assert!(!original_iface("support-9"));
        assert!(!original_iface("support-100000"));
        assert!(!original_iface("support-0123"));
        assert!(!original_iface("support-vpn"));
        assert!(!original_iface("support-1a"));
    }

    #[test]
    fn include_directives_are_content_not_comments() {
        let lines =
            effective_lines("# a comment\n%support  ALL=(ALL) NOPASSWD: ALL\n#include /etc/x\n");
        assert_eq!(
            lines,
            ["%support ALL=(ALL) NOPASSWD: ALL", "#include /etc/x"]
        );
    }

    #[test]
    fn sudoers_mentions() {
        let n = "support0a1b2c3d";
        assert!(sudoers_names("support0a1b2c3d ALL=(ALL) ALL", n, 1001));
        assert!(sudoers_names(
            "Defaults:support0a1b2c3d !requiretty",
            n,
            1001
        ));
        assert!(sudoers_names("User_Alias X = pi, support0a1b2c3d", n, 1001));
        assert!(sudoers_names("#1001 ALL=(ALL) ALL", n, 1001));
        assert!(!sudoers_names("# support0a1b2c3d ALL=(ALL) ALL", n, 1001));
        assert!(!sudoers_names("%support ALL=(ALL) NOPASSWD: ALL", n, 1001));
        assert!(!sudoers_names("support0a1b2c3d-x ALL=(ALL) ALL", n, 1001));
        assert!(!sudoers_names("#10010 ALL=(ALL) ALL", n, 1001));
        assert!(!sudoers_names("", n, 1001));
        assert!(!sudoers_names("#", n, 1001));
    }

    #[test]
    fn failures_name_what_failed() {
        let d = tempfile::tempdir().expect("tempdir");
        let opts = |root: &Path| Options {
            root: root.to_path_buf(),
            dry_run: true,
            assume_yes: false,
        };
        let missing = d.path().join("no/such/dir");
        let e = run(&opts(&missing)).expect_err("no root");
        assert!(
            matches!(&e, MigrateError::Root { path, error } if *path == missing
                && error.kind() == io::ErrorKind::NotFound),
            "{e:?}"
        );
        let file = d.path().join("f");
        fs::write(&file, "").expect("write");
        let e = run(&opts(&file)).expect_err("a file");
        assert!(
            matches!(&e, MigrateError::RootNotADirectory(p) if *p == file),
            "{e:?}"
        );

        let e = remove_file(d.path(), "regular file", |m| m.is_file()).expect_err("a directory");
        assert!(
            matches!(&e, MigrateError::Changed { kind: "regular file", path } if path == d.path()),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .ends_with(" is no longer a regular file; left alone"),
            "{e}"
        );

        let e = run_tool("false", &["x"]).expect_err("false fails");
        assert!(
            matches!(&e, MigrateError::Tool { program: "false", args, status, .. }
                if args == "x" && status.code() == Some(1)),
            "{e:?}"
        );
        let e = run_tool("/nonexistent/tool", &[]).expect_err("no such tool");
        assert!(
            matches!(&e, MigrateError::Spawn { program: "/nonexistent/tool", error }
                if error.kind() == io::ErrorKind::NotFound),
            "{e:?}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn a_busy_user_is_explained() {
        use std::os::unix::process::ExitStatusExt;
        let busy = MigrateError::Tool {
            program: "userdel",
            args: "--remove support0a1b2c3d".into(),
            status: ExitStatus::from_raw(8 << 8),
            stderr: "userdel: user support0a1b2c3d is currently used by process 42".into(),
        };
        let e = MigrateError::User {
            name: "support0a1b2c3d".into(),
            error: Box::new(busy),
        };
        assert_eq!(
            e.to_string(),
            "user support0a1b2c3d: userdel --remove support0a1b2c3d failed (exit status: 8): \
             userdel: user support0a1b2c3d is currently used by process 42 (the user is still \
             logged in or running something: end that, or reboot, and run again)"
        );
        let left = MigrateError::HomeLeft {
            user: "support0a1b2c3d".into(),
            home: "/home/support0a1b2c3d".into(),
            userdel: None,
        };
        assert_eq!(
            left.to_string(),
            "removed user support0a1b2c3d, but not its home /home/support0a1b2c3d: \
             it changed since the scan"
        );
        assert_eq!(
            MigrateError::Incomplete {
                failed: 1,
                total: 3
            }
            .to_string(),
            "1 of 3 items could not be removed (see above); run again once that is fixed"
        );
    }

    #[test]
    fn a_look_alike_user_says_what_differs() {
        let d = tempfile::tempdir().expect("tempdir");
        let groups = parse_group("support:x:1002:\n");
        let user = |shell: &str, uid: u32| PwEntry {
            name: "support0a1b2c3d".into(),
            uid,
            gid: 1002,
            gecos: String::new(),
            home: "/home/support0a1b2c3d".into(),
            shell: shell.into(),
        };
        let ctx = UserContext {
            root: d.path(),
            count: 1,
            shadow: &["*"],
            groups: &groups,
            uids: DEFAULT_UID_RANGE,
            sudoers: &[],
        };
        let home = check_user(&user("/bin/bash", 1001), &ctx).expect("the original's");
        assert_eq!(home, d.path().join("home/support0a1b2c3d"));
        let e = check_user(&user("/bin/sh", 1001), &ctx).expect_err("another shell");
        assert!(
            matches!(&e, NotOriginal::Shell(s) if s == "/bin/sh"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "shell is /bin/sh, but the original gave bash"
        );
        let e = check_user(&user("/bin/bash", 70000), &ctx).expect_err("outside");
        assert!(
            matches!(
                e,
                NotOriginal::Uid {
                    uid: 70000,
                    range: (1000, 60000)
                }
            ),
            "{e:?}"
        );
        let e = check_user(&user("/bin/bash", 2_100_000_000), &ctx).expect_err("ours");
        assert!(matches!(e, NotOriginal::ThisAgents), "{e:?}");
    }

    #[test]
    fn odd_passwd_and_group_lines_do_not_panic() {
        let p =
            parse_passwd("\n#x\n+::::::\na:b\nx:x:y:1::/h:/s\nok:x:1:2::/h:/s\n\u{fffd}:::::::\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "ok");
        let g = parse_group("\n::\nsupport:x:1002: pi , ,x\nbad:x:nan:\n");
        assert_eq!(g.names.get(&1002).map(String::as_str), Some("support"));
        assert_eq!(g.members[0].1, vec!["pi".to_string(), "x".to_string()]);
        assert_eq!(
            effective_lines(" # c\n\n  a   b \n"),
            vec!["a b".to_string()]
        );
    }
}
