//! `support-agent migrate-from-original --root TREE` on a fabricated tree
//! holding what the original (micro-nova/support_tunnel) left (two users,
//! two tunnels, its database, the cron file and sudoers rule AmpliPi
//! installed with it) among look-alikes that must survive: users named like
//! its users but with another home, a sudo rule of their own, a group, a
//! password, or made by this agent; wg0.conf and other units.
//!
//! These tests need root (they chown homes to the users' uids, and userdel
//! edits the tree's passwd, shadow and group); they fail, not skip, without it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the migrate-from-original tests must run as root (they chown files to other uids \
         and run userdel --prefix); run them with sudo, as CI does"
    );
}

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin

junk line without colons
+::::::
bad:x:notanumber:1::/nowhere:/bin/sh
pi:x:1000:1000:,,,:/home/pi:/bin/bash
support0a1b2c3d:x:1001:1002::/home/support0a1b2c3d:/bin/bash
supportfeedface:x:1004:1002::/srv/supportfeedface:/bin/bash
support5e6f7a8b:x:1003:1002::/home/support5e6f7a8b:/usr/bin/bash
supportbadc0ffe:x:1005:1002::/home/supportbadc0ffe:/bin/bash
support12345678:x:2100000005:1002:support-tunnel dev 00112233aabbccdd:/home/support12345678:/bin/bash
support-00112233aabbccdd:x:2100000006:1002:support-tunnel dev 00112233aabbccdd:/home/support-00112233aabbccdd:/bin/bash
supportdeadbeef:x:1006:1002::/home/supportdeadbeef:/bin/bash
supportabcdef01:x:1007:1002::/home/supportabcdef01:/bin/bash
sshd:x:105:65534::/run/sshd:/usr/sbin/nologin
";

const SHADOW: &str = "\
root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
pi:$y$j9T$Zm9vYmFy$c2VjcmV0aGFzaHNlY3JldGhhc2hzZWNyZXRo:19000:0:99999:7:::
support0a1b2c3d:*:20100::::::
supportfeedface:*:20100::::::
support5e6f7a8b:!:19900:0:99999:7:::
supportbadc0ffe:*:20100::::::
support12345678:*:20500::::::
support-00112233aabbccdd:*:20500::::::
supportdeadbeef:*:20100::::::
supportabcdef01:$y$j9T$cXV4$bm90YXJlYWxoYXNoYnV0bG9va3NsaWtlb25l:20100::::::
sshd:*:19000:0:99999:7:::
";

const GROUP: &str = "\
root:x:0:
daemon:x:1:
sudo:x:27:pi,supportdeadbeef
pi:x:1000:
support:x:1002:pi
nogroup:x:65534:
";

const GSHADOW: &str = "\
root:*::
daemon:*::
sudo:*::pi,supportdeadbeef
pi:!::
support:!::pi
nogroup:*::
";

/// The original's leftovers, as the dry run names them (relative to the tree).
const ORIGINALS: [&str; 9] = [
    "file etc/cron.d/support_tunnel",
    "file etc/sudoers.d/099_support-nopasswd",
    "symlink etc/systemd/system/multi-user.target.wants/wg-quick@support-12345.service",
    "symlink etc/systemd/system/multi-user.target.wants/wg-quick@support-77.service",
    "file etc/wireguard/support-12345.conf",
    "file etc/wireguard/support-77.conf",
    "user support0a1b2c3d (uid 1001)",
    "user support5e6f7a8b (uid 1003)",
    "directory var/lib/support_tunnel",
];

/// The look-alikes the dry run names as left alone, and a word of why.
const LOOK_ALIKES: [(&str, &str); 6] = [
    ("user supportfeedface", "home is /srv/supportfeedface"),
    ("user supportbadc0ffe", "sudo rule naming it"),
    ("user support12345678", "made by this agent"),
    ("user supportdeadbeef", "member of group sudo"),
    ("user supportabcdef01", "has a password"),
    (
        "file etc/wireguard/support-vpn.conf",
        "not the original's naming",
    ),
];

/// What the original's users' lines are, in passwd and shadow.
const ORIGINAL_USERS: [&str; 2] = ["support0a1b2c3d", "support5e6f7a8b"];

fn write(root: &Path, rel: &str, text: &str, mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(&path, text).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn home(root: &Path, rel: &str, uid: u32, gid: u32, key: bool) {
    let dir = root.join(rel);
    fs::create_dir_all(&dir).expect("mkdir home");
    write(root, &format!("{rel}/.bashrc"), "# bash\n", 0o644);
    chown(dir.join(".bashrc"), Some(uid), Some(gid)).expect("chown");
    if key {
        write(
            root,
            &format!("{rel}/.ssh/authorized_keys"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyOfTheSupportEngineerXXXXXXXXXXXXXX\n",
            0o600,
        );
        chown(dir.join(".ssh/authorized_keys"), Some(uid), Some(gid)).expect("chown");
        chown(dir.join(".ssh"), Some(0), Some(0)).expect("chown");
    }
    chown(&dir, Some(uid), Some(gid)).expect("chown");
}

/// Fabricates the device's tree.
fn fabricate(root: &Path) {
    write(root, "etc/passwd", PASSWD, 0o644);
    write(root, "etc/shadow", SHADOW, 0o640);
    write(root, "etc/group", GROUP, 0o644);
    write(root, "etc/gshadow", GSHADOW, 0o640);
    write(
        root,
        "etc/login.defs",
        "UID_MIN\t\t\t 1000\nUID_MAX\t\t\t60000\nUSERGROUPS_ENAB yes\n",
        0o644,
    );

    // Users: the original's two (keys in place), and the look-alikes.
    home(root, "home/pi", 1000, 1000, false);
    home(root, "home/support0a1b2c3d", 1001, 1002, true);
    home(root, "home/support5e6f7a8b", 1003, 1002, true);
    home(root, "srv/supportfeedface", 1004, 1002, true);
    home(root, "home/supportbadc0ffe", 1005, 1002, true);
    home(root, "home/support12345678", 0, 0, false);
    home(root, "home/support-00112233aabbccdd", 0, 0, false);
    home(root, "home/supportdeadbeef", 1006, 1002, true);
    home(root, "home/supportabcdef01", 1007, 1002, true);

    // sudo: AmpliPi's group rule (the original's), and others' rules.
    write(
        root,
        "etc/sudoers",
        "root ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n",
        0o440,
    );
    write(
        root,
        "etc/sudoers.d/README",
        "# files in this directory are read by sudo\n",
        0o440,
    );
    write(
        root,
        "etc/sudoers.d/099_support-nopasswd",
        "%support ALL=(ALL) NOPASSWD: ALL\n",
        0o440,
    );
    write(
        root,
        "etc/sudoers.d/010_pi-nopasswd",
        "pi ALL=(ALL) NOPASSWD: ALL\n",
        0o440,
    );
    write(
        root,
        "etc/sudoers.d/supportbadc0ffe",
        "supportbadc0ffe ALL=(ALL) ALL\n",
        0o440,
    );
    write(
        root,
        "etc/sudoers.d/support-tunnel-support-00112233aabbccdd",
        "# support-tunnel dev 00112233aabbccdd: removed when the tunnel ends\n\
         support-00112233aabbccdd ALL=(ALL:ALL) NOTAFTER=20991231000000Z NOPASSWD: ALL\n",
        0o440,
    );

    // cron: the file AmpliPi installed with the original, and another.
    write(
        root,
        "etc/cron.d/support_tunnel",
        "# Recurring support_tunnel tasks handled by cron\n\
         # Installed by AmpliPi\n\
         0   *   *   *   *   root    /opt/support_tunnel/venv/bin/python3 -m invoke -r /opt/support_tunnel gc\n\
         */5 *   *   *   *   root    /opt/support_tunnel/venv/bin/python3 -m invoke -r /opt/support_tunnel connect-approved-tunnels\n",
        0o644,
    );
    write(root, "etc/cron.d/e2scrub_all", "30 3 * * 0 root test -e /run/systemd/system || SERVICE_MODE=1 /usr/lib/x86_64-linux-gnu/e2fsprogs/e2scrub_all_cron\n", 0o644);

    // Tunnels: the original's two, wg0 and a support-named config that is not its naming.
    let conf = "[Interface]\nPrivateKey = aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=\nAddress = 10.1.2.1/28\nListenPort = 40000\n";
    write(root, "etc/wireguard/support-12345.conf", conf, 0o500);
    write(root, "etc/wireguard/support-77.conf", conf, 0o500);
    write(root, "etc/wireguard/wg0.conf", conf, 0o600);
    write(root, "etc/wireguard/support-vpn.conf", conf, 0o600);
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants).expect("mkdir wants");
    for unit in [
        "wg-quick@support-12345",
        "wg-quick@support-77",
        "wg-quick@wg0",
    ] {
        symlink(
            "/lib/systemd/system/wg-quick@.service",
            wants.join(format!("{unit}.service")),
        )
        .expect("symlink");
    }
    symlink("/lib/systemd/system/ssh.service", wants.join("ssh.service")).expect("symlink");
    symlink(
        "/lib/systemd/system/support-agent.service",
        wants.join("support-agent.service"),
    )
    .expect("symlink");
    let timers = root.join("etc/systemd/system/timers.target.wants");
    fs::create_dir_all(&timers).expect("mkdir timers");
    symlink(
        "/lib/systemd/system/e2scrub_all.timer",
        timers.join("e2scrub_all.timer"),
    )
    .expect("symlink");

    // The original's database directory (0777 as AmpliPi made it), with a
    // symlink out of it that must not be followed.
    write(
        root,
        "var/lib/support_tunnel/device.db",
        "SQLite format 3\0fake",
        0o660,
    );
    write(root, "var/lib/support_tunnel/device.db-journal", "", 0o660);
    fs::set_permissions(
        root.join("var/lib/support_tunnel"),
        fs::Permissions::from_mode(0o777),
    )
    .expect("chmod");
    symlink(
        "../../../etc/wireguard",
        root.join("var/lib/support_tunnel/escape"),
    )
    .expect("symlink");
    write(root, "var/lib/support-agent/state.json", "{}\n", 0o600);
    write(
        root,
        "opt/support_tunnel/tasks.py",
        "from device.cli import *\n",
        0o644,
    );
}

/// Everything in the tree: kind, mode, owner, and content or link target.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let path = e.expect("entry").path();
            let m = fs::symlink_metadata(&path).expect("lstat");
            let rel = path.strip_prefix(root).expect("in tree").to_path_buf();
            let owner = format!("{:o} {}:{}", m.mode(), m.uid(), m.gid());
            if m.file_type().is_symlink() {
                let target = fs::read_link(&path).expect("readlink");
                out.insert(rel, format!("link {owner} -> {}", target.display()));
            } else if m.is_dir() {
                out.insert(rel, format!("dir {owner}"));
                walk(root, &path, out);
            } else {
                let bytes = fs::read(&path).expect("read");
                out.insert(rel, format!("file {owner} {bytes:?}"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn migrate(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_support-agent"))
        .arg("migrate-from-original")
        .args(args)
        .arg("--root")
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .expect("run support-agent")
}

fn text(o: &Output) -> (String, String) {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!err.contains("panicked"), "it panicked: {err}");
    (out, err)
}

/// The lines of a section of the listing ("Left by…" or "Left alone…"),
/// up to the ": " before the reason, with the tree's path made relative.
fn section(out: &str, header: &str, root: &Path) -> Vec<String> {
    let prefix = format!("{}/", root.display());
    out.lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim_start().replace(&prefix, ""))
        .collect()
}

fn items(out: &str, root: &Path) -> BTreeSet<String> {
    section(out, "Left by the original", root)
        .iter()
        .map(|l| l.split(": ").next().unwrap_or_default().to_string())
        .collect()
}

fn lines_without(text: &str, users: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|l| !users.iter().any(|u| l.starts_with(&format!("{u}:"))))
        .map(String::from)
        .collect()
}

#[test]
fn migration_removes_exactly_the_originals_leftovers() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    fabricate(&root);
    let before = snapshot(&root);

    // 1. Dry run: lists exactly the leftovers, names the look-alikes, changes nothing.
    let o = migrate(&root, &["--dry-run"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "dry run failed: {out}\n{err}");
    let want: BTreeSet<String> = ORIGINALS.iter().map(|s| s.to_string()).collect();
    assert_eq!(items(&out, &root), want, "dry run listing:\n{out}");
    let alone = section(&out, "Left alone", &root);
    for (what, why) in LOOK_ALIKES {
        assert!(
            alone
                .iter()
                .any(|l| l.starts_with(&format!("{what}: ")) && l.contains(why)),
            "{what} should be left alone because '{why}':\n{out}"
        );
    }
    assert_eq!(
        alone.len(),
        LOOK_ALIKES.len(),
        "only the look-alikes are named:\n{out}"
    );
    assert!(out.contains("Dry run: nothing was changed."), "{out}");
    assert_eq!(snapshot(&root), before, "the dry run changed the tree");

    // 2. No --yes and stdin is not a terminal: refused, nothing changed.
    let o = migrate(&root, &[]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "ran without confirmation: {out}");
    assert!(
        err.contains("not a terminal") && err.contains("--yes"),
        "{err}"
    );
    assert_eq!(items(&out, &root), want, "the refusal still lists:\n{out}");
    assert_eq!(snapshot(&root), before, "the refused run changed the tree");

    // 3. --yes: exactly the leftovers go.
    let o = migrate(&root, &["--yes"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "migration failed: {out}\n{err}");
    assert!(out.contains("removed user support0a1b2c3d"), "{out}");
    assert!(out.contains("removed user support5e6f7a8b"), "{out}");
    let after = snapshot(&root);
    let gone = |p: &Path| {
        [
            "etc/cron.d/support_tunnel",
            "etc/sudoers.d/099_support-nopasswd",
            "etc/systemd/system/multi-user.target.wants/wg-quick@support-12345.service",
            "etc/systemd/system/multi-user.target.wants/wg-quick@support-77.service",
            "etc/wireguard/support-12345.conf",
            "etc/wireguard/support-77.conf",
            "home/support0a1b2c3d",
            "home/support5e6f7a8b",
            "var/lib/support_tunnel",
        ]
        .iter()
        .any(|g| p.starts_with(g))
    };
    let edited = ["etc/passwd", "etc/shadow", "etc/group", "etc/gshadow"];
    for (path, was) in &before {
        if gone(path) {
            assert!(
                !after.contains_key(path),
                "{} should be gone",
                path.display()
            );
        } else if !edited.iter().any(|e| path == Path::new(e)) {
            assert_eq!(after.get(path), Some(was), "{} changed", path.display());
        }
    }
    // userdel's backups are the only new files.
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        let name = path.to_string_lossy();
        assert!(
            ["etc/passwd-", "etc/shadow-", "etc/group-", "etc/gshadow-"].contains(&name.as_ref()),
            "unexpected new file {name}"
        );
    }
    // The escape symlink's target, and everything else of the look-alikes, is there.
    assert!(root.join("etc/wireguard/wg0.conf").is_file());
    assert!(root
        .join("srv/supportfeedface/.ssh/authorized_keys")
        .is_file());
    let read = |rel: &str| fs::read_to_string(root.join(rel)).expect("read");
    assert_eq!(
        read("etc/passwd").lines().collect::<Vec<_>>(),
        lines_without(PASSWD, &ORIGINAL_USERS)
    );
    assert_eq!(
        read("etc/shadow").lines().collect::<Vec<_>>(),
        lines_without(SHADOW, &ORIGINAL_USERS)
    );
    assert_eq!(
        read("etc/group"),
        GROUP,
        "group support stays, with its members"
    );
    assert_eq!(read("etc/gshadow"), GSHADOW);

    // 4. Again: nothing found, nothing changed.
    let o = migrate(&root, &["--yes"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "second run failed: {out}\n{err}");
    assert!(
        out.contains("Nothing of the original support tunnel was found."),
        "{out}"
    );
    assert!(items(&out, &root).is_empty(), "{out}");
    assert_eq!(snapshot(&root), after, "the second run changed the tree");
    let o = migrate(&root, &["--dry-run"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(
        out.contains("Nothing of the original support tunnel was found."),
        "{out}"
    );
}

#[test]
fn a_database_path_that_is_a_symlink_is_not_followed() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    write(
        &root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n",
        0o644,
    );
    write(&root, "precious/data", "keep me\n", 0o644);
    fs::create_dir_all(root.join("var/lib")).expect("mkdir");
    symlink("../../precious", root.join("var/lib/support_tunnel")).expect("symlink");
    let before = snapshot(&root);
    let o = migrate(&root, &["--yes"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("Nothing of the original support tunnel was found."),
        "{out}"
    );
    let alone = section(&out, "Left alone", &root);
    assert!(
        alone
            .iter()
            .any(|l| l.starts_with("symlink var/lib/support_tunnel: ")),
        "{out}"
    );
    assert_eq!(snapshot(&root), before);
}

#[test]
fn odd_input_gives_clear_errors_not_panics() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    // Non-UTF-8 bytes and broken lines in passwd, a sudoers.d that is a file.
    let mut passwd = b"root:x:0:0:root:/root:/bin/bash\n\xff\xfe:x:1:1\n::::::\n".to_vec();
    passwd.extend_from_slice(b"support0a1b2c3d:x:1001:1002::/home/support0a1b2c3d:/bin/bash\n");
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    fs::write(root.join("etc/passwd"), passwd).expect("write");
    write(&root, "etc/group", "support:x:1002:\n", 0o644);
    write(&root, "etc/shadow", "support0a1b2c3d:*:1::::::\n", 0o640);
    write(&root, "etc/sudoers.d", "not a directory\n", 0o644);
    let before = snapshot(&root);
    let o = migrate(&root, &["--dry-run"]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        err.contains("etc/sudoers.d") && err.contains("Not a directory"),
        "{err}"
    );
    assert_eq!(snapshot(&root), before);

    let o = migrate(&root.join("no/such/dir"), &["--dry-run"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("--root") && err.contains("no/such/dir"),
        "{err}"
    );
}
