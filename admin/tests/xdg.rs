//! The engineer's default layout, as on a laptop: no `--home`, keys and
//! config under `$HOME/.config/support-admin`, tunnels under
//! `$HOME/.local/share/support-admin`, and `ssh support-ID` through the
//! config `ssh-config --install` puts in `~/.ssh/config` (a scratch HOME
//! whose path has a space, to prove the quoting).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// support-admin as a laptop runs it: HOME only.
fn laptop(home: &Path, args: &[&str]) -> Output {
    Command::new(ADMIN)
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("SUPPORT_ADMIN_HOME")
        .env("SUPPORT_ADMIN_PASSPHRASE", "")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .stdin(Stdio::null())
        .output()
        .expect("support-admin runs")
}

#[test]
fn a_whole_flow_without_home_and_ssh_through_the_installed_config() {
    let lab = Lab::new(&DeviceSettings::default());
    let scratch = tempdir();
    let home = scratch.path().join("engineer laptop");
    std::fs::create_dir_all(&home).expect("home");

    let out = ok(&laptop(&home, &["init"]));
    let cp_key = key_after(&out, "admins add");
    let approver_key = key_after(&out, "ca sign");
    let config = home.join(".config/support-admin");
    assert!(
        config.read_dir().is_ok_and(|mut d| d.next().is_some()),
        "the keys are in the XDG config directory"
    );
    ok(&Command::new(sibling_bin("support-control-plane"))
        .args(["admins", "add", "--data"])
        .arg(lab.cp.dir.path())
        .args(["dana", &cp_key, "--role", "approver"])
        .env("SUPPORT_CP_LOG", "warn")
        .output()
        .expect("cli"));
    let cert = home.join("cert.txt");
    std::fs::write(&cert, lab.ca.sign("dana", &approver_key)).expect("cert");
    ok(&laptop(
        &home,
        &["init", "--certificate", cert.to_str().expect("utf-8")],
    ));
    std::fs::write(
        config.join("admin.toml"),
        format!(
            "control_plane = \"{}\"\ncontrol_plane_keys = [\"{}\"]\n\n[local]\nrelay_binary = \"{}\"\n",
            lab.cp.url,
            hex::encode(lab.cp.public),
            sibling_bin("support-relay").display()
        ),
    )
    .expect("admin.toml");

    let (id, code) = lab.device.request(&[]);
    let id = id.to_string();
    let out = laptop(&home, &["approve", &code, "--provider", "local", "--yes"]);
    assert_eq!(ok(&out).trim(), id);
    assert!(
        home.join(".local/share/support-admin/tunnels")
            .join(format!("{id}.json"))
            .exists(),
        "the record is in the XDG data directory"
    );

    // An existing ~/.ssh/config keeps what it had, gains one Include.
    let ssh_dir = home.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).expect(".ssh");
    std::fs::write(ssh_dir.join("config"), "Host elsewhere\n    User nobody\n").expect("config");
    ok(&laptop(&home, &["ssh-config", "--install"]));
    ok(&laptop(&home, &["ssh-config", "--install"]));
    let user_config = std::fs::read_to_string(ssh_dir.join("config")).expect("read");
    assert_eq!(user_config.matches("Include ").count(), 1, "{user_config}");
    assert!(user_config.ends_with("Host elsewhere\n    User nobody\n"));

    let user = id
        .parse::<support_protocol::TunnelId>()
        .expect("id")
        .support_user();
    let ssh = |cmd: &str| {
        Command::new("ssh")
            .arg("-F")
            .arg(ssh_dir.join("config"))
            .args(["-o", "BatchMode=yes", &format!("support-{id}"), cmd])
            .env("HOME", &home)
            .stdin(Stdio::null())
            .output()
            .expect("ssh")
    };
    let out = ssh("echo via-installed-config; id -un");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("via-installed-config\n{user}\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // stop takes the tunnel's block out of the generated file.
    ok(&laptop(&home, &["stop", &id]));
    let generated = std::fs::read_to_string(config.join("ssh_config")).expect("generated");
    assert!(!generated.contains(&id), "{generated}");
    assert_eq!(relays_for(&id), 0);
}
