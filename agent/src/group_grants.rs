//! Finds sudoers rules that grant the support group as a whole. Every
//! support user is in that group, so such a rule gives each of them what it
//! grants (root, on AmpliPi: the original's `099_support-nopasswd`) whatever
//! the config's `sudo` says and with no expiry. The agent refuses to make
//! support users while one exists.

use std::path::Path;

/// Where sudo reads its rules.
const SUDOERS: &str = "/etc/sudoers";

/// The rules in `/etc/sudoers` and what it includes that apply to `group`
/// (or its `gid`) as a whole, or to every user (`ALL`), each as `FILE: LINE`.
pub fn group_grants(group: &str, gid: Option<u32>) -> Vec<String> {
    group_grants_in(
        Path::new(SUDOERS),
        Path::new(crate::access::SUDOERS_DIR),
        group,
        gid,
    )
}

/// [`group_grants`] on the given files (tests). `dir` is read as the main
/// file's `@includedir` would be, whether or not the file names it (Debian's does).
pub fn group_grants_in(main: &Path, dir: &Path, group: &str, gid: Option<u32>) -> Vec<String> {
    let mut lines = Vec::new();
    collect(main, 0, &mut lines);
    for f in included_dir(dir) {
        collect(&f, 0, &mut lines);
    }
    let mut names: Vec<String> = vec![format!("%{group}"), format!("%:{group}"), "ALL".into()];
    names.extend(gid.map(|g| format!("%#{g}")));
    // User_Alias NAME = list: an alias that holds the group is the group.
    for (_, line) in &lines {
        if let Some(def) = line.strip_prefix("User_Alias") {
            for one in def.split(':') {
                if let Some((alias, list)) = one.split_once('=') {
                    if words(list).any(|w| names.iter().any(|n| n == w)) {
                        names.push(alias.trim().to_string());
                    }
                }
            }
        }
    }
    lines
        .iter()
        .filter(|(_, line)| {
            const NOT_RULES: [&str; 5] = [
                "Defaults",
                "User_Alias",
                "Runas_Alias",
                "Host_Alias",
                "Cmnd_Alias",
            ];
            !NOT_RULES.iter().any(|k| line.starts_with(k)) && !line.starts_with("Cmd_Alias")
        })
        .filter(|(_, line)| {
            // The users are the words before the first host list, which
            // ends at the first '='.
            let who = line.split('=').next().unwrap_or("");
            let mut w: Vec<&str> = words(who).collect();
            w.pop(); // the last word is the host list (ALL, a host, an alias)
            w.iter().any(|u| names.iter().any(|n| n == u))
        })
        .map(|(f, line)| format!("{f}: {line}"))
        .collect()
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
}

/// The files of an `@includedir`, as sudo reads them: sorted, skipping
/// names with a dot or ending in '~'.
fn included_dir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.contains('.') && !n.ends_with('~'))
        })
        .collect();
    names.sort();
    names
}

/// The logical lines of `file` (continuations joined, comments dropped),
/// following `@include`/`#include` of other files (a few levels deep).
fn collect(file: &Path, depth: u32, out: &mut Vec<(String, String)>) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    let mut logical = String::new();
    for raw in text.lines() {
        if let Some(cont) = raw.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical).trim().to_string();
        let include = line
            .strip_prefix("@include ")
            .or_else(|| line.strip_prefix("#include "));
        if let Some(target) = include {
            if depth < 4 {
                let target = Path::new(target.trim());
                let target = match target.is_absolute() {
                    true => target.to_path_buf(),
                    false => file.parent().unwrap_or(Path::new("/")).join(target),
                };
                collect(&target, depth + 1, out);
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        out.push((file.display().to_string(), line));
    }
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
        std::fs::write(
            d.join("spaced"),
            "Defaults:%support !lecture\npi, %support ALL=(ALL) ALL\n",
        )
        .expect("write");
        std::fs::write(
            d.join("alias"),
            "User_Alias HELPERS = bob, %support\nHELPERS ALL = \\\n  (ALL) ALL\n",
        )
        .expect("write");
        let extra = dir.path().join("extra.rules");
        std::fs::write(&extra, "ALL ALL=(ALL) NOPASSWD: ALL\n").expect("write");
        std::fs::write(d.join("inc"), format!("@include {}\n", extra.display())).expect("write");
        let found = group_grants_in(&main, &d, "support", Some(999));
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found[0].ends_with("099_support-nopasswd: %support ALL=(ALL) NOPASSWD: ALL"));
        assert!(
            found[1].ends_with("alias: HELPERS ALL =    (ALL) ALL"),
            "{found:#?}"
        );
        assert!(found[2].contains("byid: alice,%#999"));
        assert!(found[3].ends_with("extra.rules: ALL ALL=(ALL) NOPASSWD: ALL"));
        assert!(found[4].ends_with("spaced: pi, %support ALL=(ALL) ALL"));
        let why = refusal("support", &found).expect("a refusal");
        assert!(why.contains("migrate-from-original"), "{why}");
    }
}
