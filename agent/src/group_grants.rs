//! Finds sudoers rules that grant the support group as a whole. Every
//! support user is in that group, so such a rule gives each of them what it
//! grants (root, on AmpliPi: the original's `099_support-nopasswd`) whatever
//! the config's `sudo` says and with no expiry. The agent refuses to make
//! support users while one exists.

use std::path::Path;

/// Where sudo reads its rules.
const SUDOERS: &str = "/etc/sudoers";

/// The rules in `/etc/sudoers` and `/etc/sudoers.d` that name `group` (or
/// its `gid`) as who they apply to, each as `FILE: LINE`.
pub fn group_grants(group: &str, gid: Option<u32>) -> Vec<String> {
    group_grants_in(
        Path::new(SUDOERS),
        Path::new(crate::access::SUDOERS_DIR),
        group,
        gid,
    )
}

/// [`group_grants`] on the given files (tests).
pub fn group_grants_in(main: &Path, dir: &Path, group: &str, gid: Option<u32>) -> Vec<String> {
    let mut files = vec![main.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut names: Vec<_> = rd
            .flatten()
            .map(|e| e.path())
            // sudo's includedir skips names with a dot or ending in '~'.
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.contains('.') && !n.ends_with('~'))
            })
            .collect();
        names.sort();
        files.extend(names);
    }
    let wanted: Vec<String> = [Some(format!("%{group}")), Some(format!("%:{group}"))]
        .into_iter()
        .chain([gid.map(|g| format!("%#{g}"))])
        .flatten()
        .collect();
    let mut found = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with('@') {
                continue;
            }
            let Some(who) = line.split_whitespace().next() else {
                continue;
            };
            if who.split(',').any(|w| wanted.iter().any(|x| w.trim() == x)) {
                found.push(format!("{}: {line}", f.display()));
            }
        }
    }
    found
}

/// The refusal to make support users while `grants` exist (empty: none).
pub fn refusal(group: &str, grants: &[String]) -> Option<String> {
    (!grants.is_empty()).then(|| {
        format!(
            "a sudoers rule grants the whole '{group}' group, so every support user would get it \
             without expiry, whatever this device allows: {}. Remove it (support-agent \
             migrate-from-original removes the original support tunnel's), or set another \
             `group` in the agent's config",
            grants.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rules_for_the_group_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("sudoers");
        let d = dir.path().join("sudoers.d");
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(
            &main,
            "root ALL=(ALL:ALL) ALL\n%sudo ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n",
        )
        .expect("write");
        assert!(group_grants_in(&main, &d, "support", Some(999)).is_empty());
        std::fs::write(
            d.join("099_support-nopasswd"),
            "%support ALL=(ALL) NOPASSWD: ALL\n",
        )
        .expect("write");
        std::fs::write(d.join("skipped.conf"), "%support ALL=(ALL) ALL\n").expect("write");
        std::fs::write(
            d.join("other"),
            "# %support ALL=(ALL) ALL\n%supporters ALL=(ALL) ALL\n",
        )
        .expect("write");
        std::fs::write(d.join("byid"), "alice,%#999 ALL=(ALL) ALL\n").expect("write");
        let found = group_grants_in(&main, &d, "support", Some(999));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].ends_with("099_support-nopasswd: %support ALL=(ALL) NOPASSWD: ALL"));
        assert!(found[1].contains("byid: alice,%#999"));
        let why = refusal("support", &found).expect("a refusal");
        assert!(why.contains("migrate-from-original"), "{why}");
    }
}
