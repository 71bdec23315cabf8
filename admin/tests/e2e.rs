//! The assembled system (control plane, agent, relay, admin CLI, sshd)
//! under the events a real deployment meets: expiry, the owner's stop in the
//! middle of a session, a control-plane restart, a relay restart, and two
//! devices at once.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use support_protocol::control_channel::{Api, ClientCall};
use support_protocol::messages::device::StoppedNotice;
use support_protocol::messages::{DeviceCall, DeviceReply, DeviceRequest, StopReason};
use support_protocol::tunnel_keys::DeviceTunnelKeys;
use support_protocol::RequestId;

fn exec_ok(lab: &Lab, id: &str, cmd: &str) -> String {
    ok(&lab.eng.run(&["exec", id, "--", cmd]))
}

#[test]
fn expiry_ends_the_tunnel_on_the_device_the_control_plane_and_the_hub() {
    let lab = Lab::new(&DeviceSettings::default());
    // Long enough for the exec below on a loaded machine.
    let (id, _) = lab.approve(&[], &["--duration", "20s", "--wait", "30"]);
    assert_eq!(exec_ok(&lab, &id, "echo up").trim(), "up");
    let user = format!("support-{id}");
    // The hub was started to end on its own: the tunnel's time + the wait + 600 s.
    let cmd = (std::fs::read_dir("/proc").expect("proc").flatten())
        .map(|e| {
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ")
        })
        .find(|c| c.contains("support-relay") && c.contains(&id))
        .expect("relay");
    assert!(cmd.contains("--lifetime 650 "), "{cmd}");
    wait_for("the device's expiry", Duration::from_secs(40), || {
        !user_exists(&user)
    });
    assert_no_access_left(&user);
    wait_for(
        "the control plane to show it expired",
        Duration::from_secs(20),
        || ok(&lab.eng.run(&["show", &id, "--json"])).contains("\"expired\""),
    );
    let out = lab.eng.run(&["exec", &id, "--", "true"]);
    assert!(!out.status.success());
    ok(&lab.eng.run(&["gc"]));
    assert_eq!(relays_for(&id), 0);
}

#[test]
fn the_owners_stop_ends_a_running_admin_session_within_two_seconds() {
    let lab = Lab::new(&DeviceSettings::default());
    let (id, _) = lab.approve(&[], &[]);
    let user = format!("support-{id}");
    let mut session = Command::new(ADMIN)
        .arg("--home")
        .arg(lab.eng.home.path())
        .args(["exec", &id, "--", "echo started; sleep 120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("exec");
    wait_for("the session's sleep", Duration::from_secs(20), || {
        Command::new("pgrep")
            .args(["-u", &user, "sleep"])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    let pressed = Instant::now();
    ok(&lab.device.run(&["stop", &id]));
    while session.try_wait().expect("wait").is_none() {
        assert!(
            pressed.elapsed() < Duration::from_secs(2),
            "the engineer's session outlived the owner's stop by 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_no_access_left(&user);
}

/// `control_plane = "URL"` in `file` becomes `["DEAD", "URL"]`.
fn put_a_dead_replica_first(file: &std::path::Path, dead: &str) {
    let text = std::fs::read_to_string(file).expect("config");
    let line = text
        .lines()
        .find(|l| l.starts_with("control_plane = \""))
        .expect("a control_plane line");
    let url = line.trim_start_matches("control_plane = ");
    let listed = format!("control_plane = [\"{dead}\", {url}]");
    std::fs::write(file, text.replace(line, &listed)).expect("config");
}

#[test]
fn a_device_and_an_engineer_naming_a_dead_replica_first_go_on_with_the_next() {
    // A replica that is down: nothing listens on its port.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let lab = Lab::with(
        |_| DeviceSettings::default(),
        |_, device| put_a_dead_replica_first(&device.config, &dead),
    );
    put_a_dead_replica_first(&lab.eng.home.path().join("admin.toml"), &dead);
    // Request (device), approve and exec (engineer), stop through the control
    // plane (engineer to device): each call skips the dead one.
    let (id, _) = lab.approve(&[], &[]);
    assert_eq!(exec_ok(&lab, &id, "echo through").trim(), "through");
    ok(&lab.eng.run(&["stop", &id]));
    wait_for("the stop", Duration::from_secs(30), || {
        !user_exists(&format!("support-{id}"))
    });
    let status = lab.device.run(&["status"]);
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("unreachable"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
}

#[test]
fn a_control_plane_restart_mid_tunnel_does_not_drop_it() {
    let mut lab = Lab::new(&DeviceSettings::default());
    let (id, _) = lab.approve(&[], &[]);
    lab.cp.kill();
    // The tunnel does not need the control plane at all.
    assert_eq!(exec_ok(&lab, &id, "echo while-down").trim(), "while-down");
    lab.cp.launch();
    // Back once it answers a call with its pinned key, and it still knows the tunnel.
    wait_for(
        "the restarted control plane to answer",
        Duration::from_secs(10),
        || lab.eng.run(&["show", &id, "--json"]).status.success(),
    );
    assert_eq!(exec_ok(&lab, &id, "echo after").trim(), "after");
    assert!(ok(&lab.eng.run(&["show", &id, "--json"])).contains("\"connected\""));
    // And the control plane's stop still reaches the device afterwards.
    ok(&lab.eng.run(&["stop", &id]));
    wait_for("the stop", Duration::from_secs(30), || {
        !user_exists(&format!("support-{id}"))
    });
}

#[test]
fn a_relay_restart_is_recovered_from() {
    let lab = Lab::new(&DeviceSettings::default());
    let (id, _) = lab.approve(&[], &[]);
    assert_eq!(exec_ok(&lab, &id, "echo before").trim(), "before");
    // Kill the hub and start it again on the same address (a VM reboot).
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lab.eng.records_dir().join(format!("{id}.json"))).expect("record"),
    )
    .expect("json");
    let endpoint = record["hub"]["endpoint"]
        .as_str()
        .expect("endpoint")
        .to_string();
    let pid = record["hub"]["handle"].as_str().expect("pid").to_string();
    let args: Vec<String> =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline"))
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    assert!(Command::new("kill")
        .arg(&pid)
        .status()
        .expect("kill")
        .success());
    wait_for("the old relay to exit", Duration::from_secs(5), || {
        relays_for(&id) == 0
    });
    let mut args = args;
    let i = args.iter().position(|a| a == "--listen").expect("--listen");
    args[i + 1] = endpoint;
    let _relay = KillOnDrop(
        Command::new(&args[0])
            .args(&args[1..])
            .env("SUPPORT_HUB_OWNER", lab.eng.hub_owner())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("relay"),
    );
    // The new relay knows neither endpoint: it learns the device's from its
    // next keepalive (every 25 s) and the admin's from its handshake, then
    // WireGuard re-keys. An engineer retries a command that timed out.
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(90) {
        let out = lab.eng.run(&["exec", &id, "--", "echo after-restart"]);
        if String::from_utf8_lossy(&out.stdout).trim() == "after-restart" {
            eprintln!("recovered {:?} after the relay restart", started.elapsed());
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).to_string();
    }
    panic!("no recovery within 90 s of the relay restart: {last}");
}

/// A child process killed when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_devices_two_tunnels_are_isolated() {
    let lab = Lab::new(&DeviceSettings::default());
    let ca_key: [u8; 32] = hex::decode(&lab.ca.public)
        .expect("hex")
        .try_into()
        .expect("32");
    let mut device_b = Device::new(
        &lab.cp.url,
        &lab.cp.public,
        &ca_key,
        &lab.sshd,
        &DeviceSettings::default(),
    );
    device_b.start_daemon(None);
    let (a, _) = lab.approve(&[], &[]);
    let (b_id, b_code) = device_b.request(&[]);
    let b = b_id.to_string();
    let out = lab.eng.run(&["approve", &b_code, "--provider", "local"]);
    ok(&out);
    assert_eq!(exec_ok(&lab, &a, "id -un").trim(), format!("support-{a}"));
    assert_eq!(exec_ok(&lab, &b, "id -un").trim(), format!("support-{b}"));

    // A's admin peer pointed at B's hub: B's device has another peer key and
    // another PSK, so nothing gets through.
    let records = lab.eng.records_dir();
    let rec_a: serde_json::Value =
        serde_json::from_slice(&std::fs::read(records.join(format!("{a}.json"))).expect("a"))
            .expect("json");
    let rec_b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(records.join(format!("{b}.json"))).expect("b"))
            .expect("json");
    let mut crossed = rec_a.clone();
    crossed["hub"] = rec_b["hub"].clone();
    crossed["host_keys"] = rec_b["host_keys"].clone();
    let fake_id = "0000000000000001";
    crossed["id"] = serde_json::json!(fake_id);
    std::fs::write(
        records.join(format!("{fake_id}.json")),
        serde_json::to_vec(&crossed).expect("json"),
    )
    .expect("write");
    // B's relay drops the handshakes of a peer key it does not know, so
    // SSH never gets an answer and the tool gives up (within its 30 s).
    let started = Instant::now();
    let mut probe = KillOnDrop(
        Command::new(ADMIN)
            .arg("--home")
            .arg(lab.eng.home.path())
            .args(["exec", fake_id, "--", "touch /tmp/crossed"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("exec"),
    );
    let mut status = None;
    wait_for(
        "the crossed peer to give up",
        Duration::from_secs(90),
        || {
            status = probe.0.try_wait().expect("wait");
            status.is_some()
        },
    );
    let mut said = String::new();
    std::io::Read::read_to_string(&mut probe.0.stderr.take().expect("stderr"), &mut said)
        .expect("stderr");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(255),
        "A's peer must not reach device B: {said}"
    );
    assert!(
        said.contains("the device did not answer over the tunnel")
            || said.contains("SSH to the device failed"),
        "{said}"
    );
    eprintln!(
        "the crossed peer gave up after {:?}: {}",
        started.elapsed(),
        said.trim()
    );
    assert!(!std::path::Path::new("/tmp/crossed").exists());
    std::fs::remove_file(records.join(format!("{fake_id}.json"))).expect("rm");

    // A's device credential cannot end B's tunnel at the control plane.
    let seed_hex = std::fs::read_to_string(lab.device.state_dir().join(format!("tunnels/{a}.key")))
        .expect("A's seed");
    let seed: [u8; 32] = hex::decode(seed_hex.trim())
        .expect("hex")
        .try_into()
        .expect("32");
    let cred_a = DeviceTunnelKeys::from_seed(seed).credential();
    let call = DeviceCall {
        request_id: RequestId(7),
        request: DeviceRequest::Stopped(StoppedNotice {
            tunnel_id: b_id,
            reason: StopReason::Owner,
        }),
    };
    let bytes = support_protocol::encode(&call).expect("encodes");
    let (cc, body) =
        ClientCall::start(Api::Device, &cred_a, &lab.cp.public, random32(), &bytes).expect("call");
    let r = minreq::post(format!("{}/v1/device", lab.cp.url))
        .with_body(body)
        .with_timeout(10)
        .send()
        .expect("HTTP");
    let reply: DeviceReply =
        support_protocol::decode(&cc.finish(r.as_bytes()).expect("channel")).expect("reply");
    let err = reply.result.expect_err("refused");
    assert!(err.to_string().contains("another tunnel"), "{err}");
    assert_eq!(exec_ok(&lab, &b, "echo b-still-up").trim(), "b-still-up");

    ok(&device_b.run(&["stop", "--all"]));
    ok(&lab.device.run(&["stop", "--all"]));
}
