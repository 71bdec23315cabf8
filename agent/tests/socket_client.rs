//! The socket contract (SOCKET.md) as the device's web UI uses it: the
//! reference Python client drives request → approve → status → watch → log
//! → stop against the real daemon, control plane and sshd; curl speaks
//! HTTP to the same socket; `request --follow` exits by how the tunnel ended.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn client() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dist/support_agent_client.py")
}

/// Runs the reference client with `args`; its stdout parsed as JSON.
fn py(w: &World, args: &[&str]) -> Result<Value, Value> {
    let out = Command::new("python3")
        .arg(client())
        .arg("--socket")
        .arg(w.device.socket())
        .args(args)
        .output()
        .expect("python3 runs");
    let parse = |b: &[u8]| -> Value {
        serde_json::from_slice(b).unwrap_or_else(|e| {
            panic!(
                "client {args:?} printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    match out.status.success() {
        true => Ok(parse(&out.stdout)),
        false => Err(parse(&out.stderr)),
    }
}

/// The status fields SOCKET.md documents, from its table.
fn documented_status_fields() -> Vec<String> {
    let doc = include_str!("../SOCKET.md");
    let (_, table) = doc
        .split_once("<!-- status-fields: begin -->")
        .expect("begin marker");
    let (table, _) = table
        .split_once("<!-- status-fields: end -->")
        .expect("end marker");
    let mut fields: Vec<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(f, _)| f.to_string()))
        .collect();
    fields.sort();
    fields
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn the_reference_client_drives_a_whole_tunnel_through_the_socket() {
    let w = World::new(&DeviceSettings::default(), None);
    let req = py(
        &w,
        &["request", "--duration-secs", "1800", "--note", "no sound"],
    )
    .expect("request");
    let id = req["id"].as_str().expect("id").to_string();
    let code = req["code"].as_str().expect("code").to_string();
    assert!(req["stale_at"].as_u64().expect("stale_at") > now());

    // The UI follows the tunnel while support approves.
    let mut watch = Command::new("python3")
        .arg(client())
        .arg("--socket")
        .arg(w.device.socket())
        .args(["watch", &id])
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let first: Value =
        serde_json::from_str(&lines.next().expect("a line").expect("read")).expect("json");
    assert_eq!(first["phase"], "pending");

    let s = approve(&w.cp, &w.eng, &code, &Terms::default());
    w.wait_connected(&s);
    wait_for("status to show connected", Duration::from_secs(10), || {
        let st = py(&w, &["status"]).expect("status");
        st.as_array()
            .expect("array")
            .iter()
            .any(|t| t["id"] == id.as_str() && t["phase"] == "connected")
    });
    let st = py(&w, &["status"]).expect("status");
    let t = st
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["id"] == id.as_str())
        .expect("our tunnel")
        .clone();
    assert_eq!(
        keys(&t),
        documented_status_fields(),
        "the documented schema"
    );
    assert_eq!(t["approver"], "alice");
    assert!(t["user"].as_str().expect("user").starts_with("support-"));
    let expires = t["expires_at"].as_u64().expect("expires_at");
    assert!(expires > now() + 500 && expires <= now() + 601, "{expires}");

    let log = py(&w, &["log", &id]).expect("log");
    let events: Vec<&str> = log
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["event"].as_str().expect("event"))
        .collect();
    assert!(
        events.starts_with(&["requested", "approved", "recording", "up"]),
        "{events:?}"
    );
    // This sshd has no recording drop-in: the owner is told, with why.
    assert_eq!(log[2]["recorded"], false);
    assert!(
        log[2]["why"]
            .as_str()
            .expect("why")
            .contains("ForceCommand"),
        "{log}"
    );
    assert_eq!(log[1]["approver"], "alice");

    let done = py(&w, &["stop", &id]).expect("stop");
    assert_eq!(done, serde_json::json!([id]));
    let user = t["user"].as_str().expect("user");
    assert_no_access_left(user);

    // The watch saw the phases in order and closed by itself at the end.
    let mut phases = vec![first["phase"].as_str().expect("phase").to_string()];
    let mut last = first;
    for line in lines {
        let v: Value = serde_json::from_str(&line.expect("read")).expect("json");
        let phase = v["phase"].as_str().expect("phase").to_string();
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        last = v;
    }
    assert!(watch.wait().expect("watch ends").success());
    let order = ["pending", "connecting", "connected", "ending", "ended"];
    let rank = |p: &String| order.iter().position(|o| o == p).expect("known phase");
    assert!(
        phases.windows(2).all(|w| rank(&w[0]) < rank(&w[1])),
        "{phases:?}"
    );
    assert!(phases.contains(&"connected".to_string()), "{phases:?}");
    assert_eq!(last["phase"], "ended");
    assert_eq!(last["end_reason"], "owner");

    // Errors come with their code.
    let e = py(&w, &["stop", "ffffffffffffffff"]).expect_err("no such tunnel");
    assert_eq!(e["error_code"], "not_found", "{e}");
    let e = py(&w, &["request", "--ports", "8080"]).expect_err("not allowed");
    assert_eq!(e["error_code"], "bad_request", "{e}");
}

fn curl(w: &World, args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(w.device.socket())
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (body.to_string(), status.to_string())
}

#[test]
fn curl_speaks_http_to_the_same_socket() {
    let w = World::new(&DeviceSettings::default(), None);
    let (body, status) = curl(&w, &["http://agent/v1/status"]);
    assert_eq!(status, "200", "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["v"], 1);
    assert_eq!(v["tunnels"], serde_json::json!([]));

    let (body, status) = curl(
        &w,
        &[
            "http://agent/v1",
            "-d",
            r#"{"v":1,"op":"request","duration_secs":600}"#,
        ],
    );
    assert_eq!(status, "200", "{body}");
    let id = serde_json::from_str::<Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();

    let (body, status) = curl(&w, &[&format!("http://agent/v1/log/{}", &id[..6])]);
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("\"event\":\"requested\""), "{body}");

    for (args, want, code) in [
        (vec!["http://agent/v2/status"], "404", "not_found"),
        (vec!["http://agent/v1/log/ffffffff"], "404", "not_found"),
        (
            vec!["http://agent/v1", "-d", r#"{"v":9,"op":"status"}"#],
            "400",
            "unsupported_version",
        ),
        (
            vec![
                "http://agent/v1",
                "-d",
                r#"{"op":"request","duration_secs":999999}"#,
            ],
            "400",
            "bad_request",
        ),
    ] {
        let (body, status) = curl(&w, &args);
        assert_eq!(status, want, "{args:?}: {body}");
        assert!(
            body.contains(&format!("\"error_code\":\"{code}\"")),
            "{body}"
        );
    }

    // The stop over HTTP returns once the access is gone.
    let (body, status) = curl(
        &w,
        &[
            "http://agent/v1",
            "-d",
            &format!(r#"{{"op":"stop","id":"{id}"}}"#),
        ],
    );
    assert_eq!(status, "200", "{body}");
    assert!(body.contains(&id), "{body}");
}

#[test]
fn request_follow_exits_by_how_the_tunnel_ended() {
    let w = World::new(&DeviceSettings::default(), None);
    // Refused: the approval grants a port the owner did not ask for.
    let mut follow = w
        .device
        .command(None)
        .args(["request", "--follow", "--json", "--duration", "30m"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("request --follow");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let reg: Value =
        serde_json::from_str(&lines.next().expect("line").expect("read")).expect("json");
    let code = reg["code"].as_str().expect("code").to_string();
    let terms = Terms {
        ports: vec![22, 443],
        ..Terms::default()
    };
    let _s = approve(&w.cp, &w.eng, &code, &terms);
    let statuses: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.expect("read")).expect("json"))
        .collect();
    let status = follow.wait().expect("exits");
    assert_eq!(status.code(), Some(3), "{statuses:?}");
    let last = statuses.last().expect("statuses");
    assert_eq!(last["phase"], "ended");
    assert_eq!(last["end_reason"], "refused");

    // Stopped by the owner while connected: 0, with a line per phase.
    let mut follow = w
        .device
        .command(None)
        .args(["request", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("request --follow");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let code = lines
        .by_ref()
        .map(|l| l.expect("read"))
        .find(|l| support_protocol::one_time_code::OneTimeCode::parse(l).is_ok())
        .expect("the code line");
    let s = approve(&w.cp, &w.eng, &code, &Terms::default());
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("read");
        let connected = line.starts_with("connected: support (alice)");
        seen.push(line);
        if connected {
            break;
        }
    }
    let out = w.device.run(&["stop", &s.id.to_string()]);
    assert!(out.status.success());
    seen.extend(lines.map(|l| l.expect("read")));
    let status = follow.wait().expect("exits");
    assert_eq!(status.code(), Some(0), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.starts_with("waiting for support")),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("ended: stopped by the owner"),
        "{seen:?}"
    );
}

#[test]
fn a_flood_of_requests_is_capped_and_the_kill_switch_still_works() {
    let w = World::new(&DeviceSettings::default(), None);
    for _ in 0..4 {
        py(&w, &["request"]).expect("request");
    }
    let e = py(&w, &["request"]).expect_err("a fifth at once");
    assert_eq!(e["error_code"], "busy", "{e}");
    assert!(
        e["error"]
            .as_str()
            .expect("text")
            .contains("stop one first"),
        "{e}"
    );
    let out = w.device.run(&["stop", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped = String::from_utf8_lossy(&out.stdout)
        .matches("stopped ")
        .count();
    assert_eq!(stopped, 4);
    py(&w, &["request"]).expect("room again once they ended");
}
