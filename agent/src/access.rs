//! The support access on the device: an ephemeral Unix user in the support
//! group, the admin's key in a root-owned authorized_keys that OpenSSH
//! itself stops honouring at expiry, and an optional sudoers drop-in
//! (also time-limited, `NOTAFTER`) checked with `visudo -cf` first.
//!
//! The home directory is root-owned (0755) with one user-owned `work`
//! directory inside. A user-owned home would let the support user rename
//! `~/.ssh`, plant a symlink there for root to write through at the next
//! resume, or add a key of their own without `restrict` or `expiry-time`.
//!
//! Every user and drop-in carries this agent instance's tag (the GECOS field
//! and a comment line), so repair removes exactly what this agent made and
//! nothing else, even with no record left.

use std::fs;
use std::io;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support_protocol::TunnelId;

use crate::config::{valid_name, Config};
use crate::state::StateDir;
use crate::util::{ssh_expiry_time, write_atomic};

/// Where sudo reads drop-ins.
pub const SUDOERS_DIR: &str = "/etc/sudoers.d";
const SUDOERS_PREFIX: &str = "support-tunnel-";

/// Why the support access could not be made or removed.
#[derive(Debug)]
pub enum AccessError {
    /// A user-management tool could not be started.
    Spawn {
        /// The tool.
        program: &'static str,
        /// Why.
        error: io::Error,
    },
    /// A user-management tool failed.
    Tool {
        /// The command line.
        command: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it wrote to stderr.
        said: String,
    },
    /// `groupadd` succeeded but the group is not there.
    NoGroup(String),
    /// Every uid of the configured range is taken.
    NoFreeUid {
        /// The range's first uid.
        lo: u32,
        /// Its last.
        hi: u32,
    },
    /// The uid counter in the state directory cannot be saved.
    NextUid(io::Error),
    /// The name is not one of a support user.
    NotASupportUser(String),
    /// A user of that name exists that this agent did not make.
    NotOurs(String),
    /// A path the agent made is no longer the root-owned directory it made.
    Tampered(PathBuf),
    /// The user disappeared while its access was made.
    Vanished(String),
    /// A path the tools would get is not UTF-8.
    NotUtf8(PathBuf),
    /// A file or directory of the access could not be written or removed.
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// Asked to end root's processes.
    Root,
    /// Processes of the user survive SIGKILL; the account stays until they are gone.
    Survivors {
        /// The user's uid.
        uid: u32,
        /// The processes.
        pids: Vec<i32>,
    },
    /// The config requires recording, and sshd would not record this user.
    RecordingRequired(String),
    /// The removal went on past several problems.
    Several(Vec<AccessError>),
}

impl std::fmt::Display for AccessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawn { program, error } => write!(f, "cannot run {program}: {error}"),
            Self::Tool {
                command,
                status,
                said,
            } => write!(f, "{command} failed ({status}): {said}"),
            Self::NoGroup(group) => write!(f, "groupadd created no group '{group}'"),
            Self::NoFreeUid { lo, hi } => write!(f, "no free uid left in support_uids {lo}-{hi}"),
            Self::NextUid(e) => write!(f, "cannot save the next support uid: {e}"),
            Self::NotASupportUser(user) => write!(f, "'{user}' is not a support user name"),
            Self::NotOurs(user) => write!(
                f,
                "a user named {user} already exists and was not made by this agent; refusing to touch it"
            ),
            Self::Tampered(path) => write!(
                f,
                "{} was tampered with (not a root-owned directory); refusing to go through it",
                path.display()
            ),
            Self::Vanished(user) => write!(f, "user {user} vanished"),
            Self::NotUtf8(path) => write!(f, "{} is not UTF-8", path.display()),
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
            Self::Root => f.write_str("refusing to kill root's processes"),
            Self::Survivors { uid, pids } => write!(
                f,
                "processes of uid {uid} survive SIGKILL: {pids:?}; the account is kept until they are gone"
            ),
            Self::RecordingRequired(why) => write!(
                f,
                "this device requires recorded sessions (require_recording), and {why}"
            ),
            Self::Several(all) => {
                for (i, e) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for AccessError {}

/// The error of an I/O step on `path`.
fn at(path: &Path) -> impl FnOnce(io::Error) -> AccessError + '_ {
    move |error| AccessError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// A user or group entry from /etc/passwd or /etc/group.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Name.
    pub name: String,
    /// uid or gid.
    pub id: u32,
    /// Primary gid (users) or 0.
    pub gid: u32,
    /// GECOS (users) or the member list (groups).
    pub info: String,
}

fn read_db(path: &str) -> Vec<Entry> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            match path {
                "/etc/group" if f.len() >= 4 => Some(Entry {
                    name: f[0].into(),
                    id: f[2].parse().ok()?,
                    gid: 0,
                    info: f[3].into(),
                }),
                "/etc/passwd" if f.len() >= 7 => Some(Entry {
                    name: f[0].into(),
                    id: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    info: f[4].into(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// All users.
pub fn users() -> Vec<Entry> {
    read_db("/etc/passwd")
}

/// The gid of `group`, if it exists.
pub fn group_id(group: &str) -> Option<u32> {
    read_db("/etc/group")
        .into_iter()
        .find(|g| g.name == group)
        .map(|g| g.id)
}

/// The supplementary members of `group`.
pub fn group_members(group: &str) -> Vec<String> {
    read_db("/etc/group")
        .into_iter()
        .find(|g| g.name == group)
        .map(|g| {
            g.info
                .split(',')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Creates the support group if it is missing; returns its gid.
pub fn ensure_group(group: &str) -> Result<u32, AccessError> {
    if let Some(g) = group_id(group) {
        return Ok(g);
    }
    // Another agent (or a test's) may add it between the look and here;
    // groupadd then fails, and the group is there all the same.
    let added = run("groupadd", &["--system", group]);
    match (group_id(group), added) {
        (Some(g), _) => Ok(g),
        (None, Err(e)) => Err(e),
        (None, Ok(())) => Err(AccessError::NoGroup(group.into())),
    }
}

fn run(program: &'static str, args: &[&str]) -> Result<(), AccessError> {
    // The tool's messages go to a file, not a pipe: if the agent dies while
    // userdel runs, a warning written to a pipe nobody reads any more
    // (SIGPIPE) would kill userdel after it removed the home but before it
    // wrote /etc/passwd, leaving an account without a home.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        ".support-agent-{}-{}.err",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let spawn = |error| AccessError::Spawn { program, error };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(spawn)?;
    let _ = fs::remove_file(&path);
    let err = file.try_clone().map_err(spawn)?;
    let status = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .status()
        .map_err(spawn)?;
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    let mut file = file;
    let _ = std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0));
    let _ = (&mut file).take(4096).read_to_string(&mut said);
    Err(AccessError::Tool {
        command: format!("{program} {}", args.join(" ")),
        status,
        said: said.trim().to_string(),
    })
}

/// What identifies this agent's users: `support-tunnel <instance> <tunnel id>`.
fn gecos(instance: &str, id: TunnelId) -> String {
    format!("support-tunnel {instance} {id}")
}

/// The support users this agent instance created, with their tunnel ids.
pub fn our_users(instance: &str) -> Vec<(String, String)> {
    let prefix = format!("support-tunnel {instance} ");
    users()
        .into_iter()
        .filter_map(|u| {
            let id = u.info.strip_prefix(&prefix)?.to_string();
            Some((u.name, id))
        })
        .collect()
}

/// A file in the sudoers directory that this agent instance wrote.
pub struct OurSudoers {
    /// The file.
    pub path: PathBuf,
    /// The tunnel it is for (the user name without `support-`).
    pub tunnel: String,
    /// The validation copy `write_sudoers` checks before it becomes the
    /// drop-in (`.support-tunnel-USER.check`), not the drop-in itself.
    pub check_copy: bool,
}

/// The sudoers drop-ins, and their validation copies, that this agent
/// instance wrote (they start with its tag). Another agent on the machine
/// may be validating a copy of its own right now: those are not listed.
pub fn our_sudoers(instance: &str) -> Vec<OurSudoers> {
    let tag = format!("# support-tunnel {instance} ");
    fs::read_dir(SUDOERS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let (drop_in, check_copy) = match name.strip_prefix('.') {
                Some(copy) => (copy.strip_suffix(".check")?, true),
                None => (name.as_str(), false),
            };
            let user = drop_in.strip_prefix(SUDOERS_PREFIX)?;
            let tunnel = user
                .strip_prefix("support-")
                .unwrap_or_default()
                .to_string();
            let text = fs::read_to_string(e.path()).ok()?;
            text.starts_with(&tag).then(|| OurSudoers {
                path: e.path(),
                tunnel,
                check_copy,
            })
        })
        .collect()
}

/// What the access grants.
pub struct Grant<'a> {
    /// The tunnel.
    pub tunnel: TunnelId,
    /// This agent's instance tag.
    pub instance: &'a str,
    /// The admin's ed25519 SSH key.
    pub admin_ssh_key: [u8; 32],
    /// Wall-clock time at which OpenSSH stops accepting the key.
    pub expiry_wall: u64,
}

/// The next uid for a support user: taken in turn from the configured
/// range (the counter lives in the state directory), skipping any uid that
/// an account has or that any process still runs as. A uid is handed out
/// again only after the whole range went round, so a process that outlived
/// an old session can never act as a new support user.
fn next_uid(config: &Config, state: &StateDir) -> Result<u32, AccessError> {
    let (lo, hi) = config.support_uids;
    let taken: std::collections::HashSet<u32> = users().iter().map(|u| u.id).collect();
    let mut uid = state.next_support_uid().clamp(lo, hi);
    for _ in 0..=(hi - lo) {
        let candidate = uid;
        uid = if uid >= hi { lo } else { uid + 1 };
        if !taken.contains(&candidate) && processes_of(candidate).is_empty() {
            state
                .set_next_support_uid(uid)
                .map_err(AccessError::NextUid)?;
            return Ok(candidate);
        }
    }
    Err(AccessError::NoFreeUid { lo, hi })
}

/// The support user with `uid`, if it is one of the agent's.
pub fn user_of_uid(uid: u32) -> Option<String> {
    users()
        .into_iter()
        .find(|u| u.id == uid && u.info.starts_with("support-tunnel "))
        .map(|u| u.name)
}

/// The user name of a tunnel's support access.
pub fn user_name(id: TunnelId) -> String {
    id.support_user()
}

/// Whether sshd sends the support user's sessions through the recorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sessions {
    /// The drop-in applies: sessions are recorded, the key is in the
    /// root-owned keys directory, the home is an ordinary writable one.
    Recorded,
    /// It does not (why): today's access, key in a root-owned `~/.ssh`.
    Unrecorded(String),
}

/// Creates (or, after a restart, re-asserts) the support access.
pub fn create(config: &Config, state: &StateDir, g: &Grant<'_>) -> Result<Sessions, AccessError> {
    let user = user_name(g.tunnel);
    if !valid_name(&user) {
        return Err(AccessError::NotASupportUser(user));
    }
    let home = config.home_base.join(&user);
    let existing = users().into_iter().find(|u| u.name == user);
    match existing {
        Some(u) if u.info != gecos(g.instance, g.tunnel) => return Err(AccessError::NotOurs(user)),
        Some(_) => {}
        None => {
            let shell = if Path::new("/bin/bash").exists() {
                "/bin/bash"
            } else {
                "/bin/sh"
            };
            // Another account may take the uid between the check and useradd
            // (another agent on the machine): then the next one is tried.
            let mut attempt = 0;
            loop {
                let uid = next_uid(config, state)?;
                let made = add_user(
                    config,
                    &home,
                    shell,
                    uid,
                    &gecos(g.instance, g.tunnel),
                    &user,
                );
                match made {
                    Err(_)
                        if attempt < 5 && users().iter().any(|u| u.id == uid && u.name != user) =>
                    {
                        attempt += 1;
                    }
                    other => break other?,
                }
            }
        }
    }
    // sshd is asked about this very user: `Match Group` needs the account.
    let sessions = match crate::sshd::check_recorded(config, &user) {
        Ok(()) => Sessions::Recorded,
        Err(e) if config.recording.require => {
            return Err(AccessError::RecordingRequired(e.to_string()))
        }
        Err(e) => Sessions::Unrecorded(e.to_string()),
    };
    match sessions {
        Sessions::Recorded => {
            ordinary_home(&home, &user)?;
            crate::sshd::ensure_keys_dir(config)
                .map_err(|e| AccessError::RecordingRequired(e.to_string()))?;
            let keys = keys_file(config, &user);
            write_atomic(&keys, key_line(config, g).as_bytes(), 0o644).map_err(at(&keys))?;
        }
        Sessions::Unrecorded(_) => {
            // A key left in the keys directory would let sshd in unrecorded
            // if the drop-in came back; there is one place for the key.
            let _ = fs::remove_file(keys_file(config, &user));
            secure_home(&home, &user)?;
            write_authorized_keys(config, &home, g)?;
        }
    }
    if config.sudo {
        write_sudoers(&user, g)?;
    }
    Ok(sessions)
}

/// The user's key file in the root-owned keys directory (recorded sessions).
fn keys_file(config: &Config, user: &str) -> PathBuf {
    config.recording.authorized_keys_dir.join(user)
}

/// An ordinary home (user-owned, 0700, with a `work` directory) for a
/// recorded user: sshd reads its key elsewhere and runs no `~/.ssh/rc`, so
/// nothing in the home can widen the access.
fn ordinary_home(home: &Path, user: &str) -> Result<(), AccessError> {
    let meta = fs::symlink_metadata(home).map_err(at(home))?;
    if !meta.is_dir() {
        return Err(AccessError::Tampered(home.to_path_buf()));
    }
    let (uid, gid) = users()
        .into_iter()
        .find(|u| u.name == user)
        .map(|u| (u.id, u.gid))
        .ok_or_else(|| AccessError::Vanished(user.into()))?;
    let work = home.join("work");
    if fs::symlink_metadata(&work).is_err() {
        fs::create_dir(&work).map_err(at(&work))?;
        // lchown: the user owns the home, and may have swapped `work` for a link.
        std::os::unix::fs::lchown(&work, Some(uid), Some(gid)).map_err(at(&work))?;
    }
    // lchown: the home itself was just checked to be a directory, not a link.
    std::os::unix::fs::lchown(home, Some(uid), Some(gid)).map_err(at(home))?;
    fs::set_permissions(home, fs::Permissions::from_mode(0o700)).map_err(at(home))
}

fn add_user(
    config: &Config,
    home: &Path,
    shell: &str,
    uid: u32,
    gecos: &str,
    user: &str,
) -> Result<(), AccessError> {
    let uid = uid.to_string();
    run(
        "useradd",
        &[
            "--uid",
            &uid,
            "--create-home",
            // No lastlog/faillog entries: they sit at the uid's offset in
            // those files, which for this range would only grow sparse files.
            "--no-log-init",
            "--home-dir",
            path_str(home)?,
            "--gid",
            &config.group,
            "--no-user-group",
            "--shell",
            shell,
            // Not a locked account (sshd refuses those), but no password works.
            "--password",
            "*",
            "--comment",
            gecos,
            user,
        ],
    )
}

/// Makes the home root-owned, with a user-owned `work` directory, and
/// refuses to go on if anything in it is a symlink or not ours.
fn secure_home(home: &Path, user: &str) -> Result<(), AccessError> {
    let meta = fs::symlink_metadata(home).map_err(at(home))?;
    if !meta.is_dir() {
        return Err(AccessError::Tampered(home.to_path_buf()));
    }
    std::os::unix::fs::chown(home, Some(0), Some(0)).map_err(at(home))?;
    fs::set_permissions(home, fs::Permissions::from_mode(0o755)).map_err(at(home))?;
    let ssh = home.join(".ssh");
    match fs::symlink_metadata(&ssh) {
        Ok(m) if !m.is_dir() || m.uid() != 0 => return Err(AccessError::Tampered(ssh)),
        _ => {}
    }
    let work = home.join("work");
    if fs::symlink_metadata(&work).is_err() {
        fs::create_dir(&work).map_err(at(&work))?;
        let uid = users()
            .into_iter()
            .find(|u| u.name == user)
            .map(|u| (u.id, u.gid))
            .ok_or_else(|| AccessError::Vanished(user.into()))?;
        std::os::unix::fs::chown(&work, Some(uid.0), Some(uid.1)).map_err(at(&work))?;
    }
    Ok(())
}

fn path_str(p: &Path) -> Result<&str, AccessError> {
    p.to_str()
        .ok_or_else(|| AccessError::NotUtf8(p.to_path_buf()))
}

/// Only loopback targets for SSH: then the key is only good from the tunnel.
fn from_option(config: &Config) -> &'static str {
    match config.ports.get(&22) {
        Some(t) if t.ip().is_loopback() => "from=\"127.0.0.1,::1\",",
        _ => "",
    }
}

fn write_authorized_keys(config: &Config, home: &Path, g: &Grant<'_>) -> Result<(), AccessError> {
    // Root owns .ssh and the key file: the support user can read but not
    // add keys that would outlive the agent's control.
    let dir = home.join(".ssh");
    fs::create_dir_all(&dir).map_err(at(&dir))?;
    std::os::unix::fs::chown(&dir, Some(0), Some(0)).map_err(at(&dir))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(at(&dir))?;
    let keys = dir.join("authorized_keys");
    write_atomic(&keys, key_line(config, g).as_bytes(), 0o644).map_err(at(&keys))
}

/// The admin's key, restricted, good until the tunnel's end (OpenSSH itself
/// stops honouring it then, even if the agent is dead).
fn key_line(config: &Config, g: &Grant<'_>) -> String {
    format!(
        "restrict,pty,{}expiry-time=\"{}\" {}\n",
        from_option(config),
        ssh_expiry_time(g.expiry_wall),
        crate::approval::ssh_public_key_line(
            &g.admin_ssh_key,
            &format!("support-tunnel-{}", g.tunnel)
        ),
    )
}

fn sudoers_path(user: &str) -> PathBuf {
    Path::new(SUDOERS_DIR).join(format!("{SUDOERS_PREFIX}{user}"))
}

fn write_sudoers(user: &str, g: &Grant<'_>) -> Result<(), AccessError> {
    // NOTAFTER: sudo itself stops honouring it at expiry, even if the agent is dead.
    let text = format!(
        "# support-tunnel {} {}: removed when the tunnel ends\n{user} ALL=(ALL:ALL) NOTAFTER={} NOPASSWD: ALL\n",
        g.instance,
        g.tunnel,
        ssh_expiry_time(g.expiry_wall)
    );
    fs::create_dir_all(SUDOERS_DIR).map_err(at(Path::new(SUDOERS_DIR)))?;
    // Validate a copy outside sudoers.d first: a broken drop-in would break sudo for everyone.
    let check = Path::new(SUDOERS_DIR).join(format!(".{SUDOERS_PREFIX}{user}.check"));
    write_atomic(&check, text.as_bytes(), 0o440).map_err(at(&check))?;
    let checked = run("visudo", &["-cqf", path_str(&check)?]);
    let path = sudoers_path(user);
    let result = checked.and_then(|()| fs::rename(&check, &path).map_err(at(&path)));
    let _ = fs::remove_file(&check);
    result
}

/// Removes the support access of `user`: its processes, the user, its
/// home, its key and its sudoers entry. Idempotent.
pub fn remove(config: &Config, user: &str) -> Result<(), AccessError> {
    if !valid_name(user) || !user.starts_with("support-") {
        return Err(AccessError::NotASupportUser(user.into()));
    }
    let mut problems = Vec::new();
    // First the key and sudo: nothing new may start while we clean up.
    let _ = fs::remove_file(sudoers_path(user));
    let _ = fs::remove_file(keys_file(config, user));
    let home = config.home_base.join(user);
    // Only through a root-owned .ssh: never follow what the user may have planted.
    let ssh = home.join(".ssh");
    if fs::symlink_metadata(&ssh)
        .map(|m| m.is_dir() && m.uid() == 0)
        .unwrap_or(false)
    {
        let _ = fs::remove_file(ssh.join("authorized_keys"));
    }
    if let Some(u) = users().into_iter().find(|u| u.name == user) {
        // The account stays while anything of it runs: deleting it would
        // leave nameless processes behind, with a uid a later account could get.
        end_processes(u.id)?;
        if let Err(e) = run("userdel", &["--force", "--remove", user]) {
            // userdel returns 12 when it cannot remove the home or mail spool; check the user is gone.
            if users().iter().any(|x| x.name == user) {
                problems.push(e);
            }
        }
    }
    if home.starts_with(&config.home_base) && home.exists() {
        if let Err(e) = fs::remove_dir_all(&home) {
            problems.push(at(&home)(e));
        }
    }
    match problems.len() {
        0 => Ok(()),
        1 => Err(problems.remove(0)),
        _ => Err(AccessError::Several(problems)),
    }
}

/// What /proc says about one process.
struct ProcInfo {
    pid: i32,
    /// Real, effective, saved and filesystem uid.
    uids: [u32; 4],
    /// The audit login uid (set by pam_loginuid for an SSH session, inherited through sudo).
    login_uid: Option<u32>,
    pgid: i32,
    /// Dead, waiting to be reaped: it runs nothing, but still names its group.
    zombie: bool,
}

fn proc_info(pid: i32) -> Option<ProcInfo> {
    let dir = Path::new("/proc").join(pid.to_string());
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let zombie = status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains("Z (zombie)"));
    let mut uids = [u32::MAX; 4];
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    for (slot, v) in uids.iter_mut().zip(line.split_whitespace()) {
        *slot = v.parse().ok()?;
    }
    let login_uid = fs::read_to_string(dir.join("loginuid"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|u| *u != u32::MAX);
    // stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces and parens.
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let pgid = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()?;
    Some(ProcInfo {
        pid,
        uids,
        login_uid,
        pgid,
        zombie,
    })
}

fn all_processes() -> Vec<ProcInfo> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(proc_info)
        .collect()
}

/// Live processes running as `uid` (by any of their uids), from /proc.
pub fn processes_of(uid: u32) -> Vec<i32> {
    all_processes()
        .into_iter()
        .filter(|p| !p.zombie && p.uids.contains(&uid))
        .map(|p| p.pid)
        .collect()
}

/// How many scans in a row must find nothing before the processes of a
/// session count as gone (a process that forks and exits in a loop can
/// fall between one scan's listing and its reads).
const CLEAN_SCANS: u32 = 3;

/// Ends every process of `uid`, and every process its SSH sessions started
/// as root through sudo (they carry its login uid), until none is left.
///
/// The user's own processes die all at once: a thread of this agent drops
/// to `uid` (Linux keeps credentials per thread) and sends `kill(-1,
/// SIGKILL)`, which the kernel delivers to every process that uid may
/// signal in one pass, so a process forking as fast as it can has no gap
/// to slip through. Root processes of its sessions are killed with their
/// whole process group (also one pass), found through any member, even a
/// dead one not yet reaped.
pub fn end_processes(uid: u32) -> Result<(), AccessError> {
    if uid == 0 {
        return Err(AccessError::Root);
    }
    let me = std::process::id() as i32;
    let my_group = rustix::process::getpgrp().as_raw_nonzero().get();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut clean = 0;
    loop {
        // Always one pass as the uid: it cannot miss a hopping process.
        kill_everything_of(uid);
        let found: Vec<ProcInfo> = all_processes()
            .into_iter()
            .filter(|p| p.pid != me && (p.uids.contains(&uid) || p.login_uid == Some(uid)))
            .collect();
        let mut groups: Vec<i32> = found
            .iter()
            .map(|p| p.pgid)
            .filter(|g| *g > 1 && *g != my_group)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        for g in groups {
            if let Some(g) = rustix::process::Pid::from_raw(g) {
                let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
            }
        }
        let live: Vec<i32> = found.iter().filter(|p| !p.zombie).map(|p| p.pid).collect();
        for pid in &live {
            if let Some(pid) = rustix::process::Pid::from_raw(*pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        clean = if live.is_empty() { clean + 1 } else { 0 };
        if clean >= CLEAN_SCANS {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(AccessError::Survivors { uid, pids: live });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `kill(-1, SIGKILL)` as `uid`, from a thread that gives up root for good
/// (all its uids become `uid`, which also clears its capabilities).
fn kill_everything_of(uid: u32) {
    let worker = std::thread::spawn(move || {
        let u = rustix::process::Uid::from_raw(uid);
        if rustix::thread::set_thread_res_uid(u, u, u).is_err() {
            return;
        }
        // kill(-1): every process this thread may signal, except its own
        // process. (rustix spells kill(-pgid); the group "1" is -1.)
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::INIT,
            rustix::process::Signal::KILL,
        );
    });
    let _ = worker.join();
}

/// Reads the sshd public host keys named in the config (missing ones are skipped).
pub fn host_keys(config: &Config) -> Vec<String> {
    config
        .host_keys
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .flat_map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_support_users_are_removed_and_never_roots_processes_ended() {
        let config = Config::parse(&format!(
            "control_plane = \"http://x\"\ncontrol_plane_keys = [\"{k}\"]\nsupport_ca_keys = [\"{k}\"]\n",
            k = "ab".repeat(32)
        ))
        .expect("config");
        for name in ["root", "support", "support-../etc", "Support-x"] {
            assert!(
                matches!(remove(&config, name), Err(AccessError::NotASupportUser(n)) if n == name),
                "{name}"
            );
        }
        assert!(matches!(end_processes(0), Err(AccessError::Root)));
        let several = AccessError::Several(vec![
            AccessError::Vanished("support-1".into()),
            AccessError::NoGroup("support".into()),
        ]);
        assert_eq!(
            several.to_string(),
            "user support-1 vanished; groupadd created no group 'support'"
        );
    }
}
