//! A local fake of the Compute Engine REST API, Google's token endpoint and
//! the metadata server (GCP cannot be reached here). It records every
//! request exactly, checks the token requests (a service account's RS256
//! signature, a user's refresh token, the metadata header), and, like a
//! real hub VM would, runs the relay the startup script describes (our
//! relay, on loopback). The hub firewall rule is there only when a test
//! adds it, as `tofu apply` would.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use support_testkit::http;
use support_testkit::relay::RelayThread;

/// The token for a service-account key.
pub const TOKEN: &str = "fake-access-token-7f3a";
/// The token for the `authorized_user` refresh token below.
pub const USER_TOKEN: &str = "fake-user-token-19c2";
/// The token the metadata server hands out.
pub const METADATA_TOKEN: &str = "fake-metadata-token-55d0";
/// The `authorized_user` file's secrets (`gcloud auth application-default login`).
pub const USER_CLIENT_ID: &str =
    "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com";
pub const USER_CLIENT_SECRET: &str = "d-FL95Q19q7MQmFpd7hHD0Ty";
pub const USER_REFRESH_TOKEN: &str = "1//0gRefresh+Token/with=chars";
const METADATA_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    firewalls: HashMap<String, Value>,
    instances: HashMap<String, Value>,
    relays: HashMap<String, RelayThread>,
    metadata_404: bool,
}

pub struct FakeGcp {
    pub url: String,
    state: Arc<Mutex<State>>,
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .expect("base64")
}

impl FakeGcp {
    /// `rsa_public_der`: the service account's public key (PKCS#1 DER), to
    /// check the JWT; `project`/`zone`: the only ones it serves.
    pub fn start(rsa_public_der: Vec<u8>, project: &str, zone: &str) -> FakeGcp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let (project, zone, token_url) = (
            project.to_string(),
            zone.to_string(),
            format!("{url}/token"),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                handle(stream, &st, &rsa_public_der, &project, &zone, &token_url);
            }
        });
        FakeGcp { url, state }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("lock").seen.clone()
    }

    pub fn instance_names(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("lock")
            .instances
            .keys()
            .cloned()
            .collect()
    }

    /// The hub firewall rule as `tofu apply` creates it (infra/network.tf)
    /// and the API returns it.
    pub fn add_firewall(&self, project: &str, port: u16) {
        let name = format!("support-hub-udp-{port}");
        self.state.lock().expect("lock").firewalls.insert(
            name.clone(),
            json!({
                "kind": "compute#firewall",
                "name": name,
                "network": format!("https://www.googleapis.com/compute/v1/projects/{project}/global/networks/support-tunnel"),
                "direction": "INGRESS",
                "priority": 1000,
                "targetTags": ["support-hub"],
                "allowed": [{"IPProtocol": "udp", "ports": [port.to_string()]}],
                "sourceRanges": ["0.0.0.0/0"],
                "disabled": false,
            }),
        );
    }

    /// From now on the metadata server answers as on a VM without a
    /// service account (404).
    pub fn metadata_without_account(&self) {
        self.state.lock().expect("lock").metadata_404 = true;
    }

    /// An instance that is not a hub (the control-plane VM): no hub label.
    pub fn add_other_instance(&self, name: &str) {
        self.state.lock().expect("lock").instances.insert(
            name.to_string(),
            json!({"name": name, "labels": {"role": "control-plane"}, "status": "RUNNING"}),
        );
    }

    /// An instance created behind support-admin's back (a lost record).
    pub fn add_instance(&self, name: &str, tunnel: &str) {
        self.state.lock().expect("lock").instances.insert(
            name.to_string(),
            json!({"name": name, "labels": {"support-tunnel": tunnel}, "status": "RUNNING"}),
        );
    }
}

fn reply(stream: &mut TcpStream, status: u16, body: &Value) {
    http::respond(stream, status, body.to_string().as_bytes());
}

fn form_value(form: &str, name: &str) -> Option<String> {
    let raw = form
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))?;
    let mut out = Vec::new();
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The refresh-token grant of an `authorized_user` file.
fn check_refresh(form: &str) -> Result<(), String> {
    let want = [
        ("grant_type", "refresh_token"),
        ("client_id", USER_CLIENT_ID),
        ("client_secret", USER_CLIENT_SECRET),
        ("refresh_token", USER_REFRESH_TOKEN),
    ];
    for (k, v) in want {
        if form_value(form, k).as_deref() != Some(v) {
            return Err(format!("{k} is not {v:?} in {form}"));
        }
    }
    Ok(())
}

fn check_jwt(form: &str, der: &[u8], token_url: &str) -> Result<(), String> {
    let assertion = form
        .split('&')
        .find_map(|kv| kv.strip_prefix("assertion="))
        .ok_or("no assertion")?;
    if !form.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return Err("wrong grant type".into());
    }
    let parts: Vec<&str> = assertion.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err("not a JWT".into());
    };
    let header: Value = serde_json::from_slice(&b64(h)).map_err(|e| e.to_string())?;
    let claims: Value = serde_json::from_slice(&b64(c)).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    if claims["aud"] != token_url
        || claims["scope"] != "https://www.googleapis.com/auth/compute"
        || claims["iss"] != "hubs@support-test.iam.gserviceaccount.com"
    {
        return Err(format!("claims {claims}"));
    }
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der)
        .verify(format!("{h}.{c}").as_bytes(), &b64(s))
        .map_err(|_| "bad signature".to_string())
}

/// The relay invocation in a startup script: (device key, admin key, port).
fn relay_args(script: &str) -> Option<([u8; 32], [u8; 32], u16)> {
    let line = script.lines().find(|l| l.starts_with("ExecStart="))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let arg = |name: &str| -> Option<&str> {
        let i = words.iter().position(|w| *w == name)?;
        words.get(i + 1).copied()
    };
    let key = |name: &str| -> Option<[u8; 32]> { b64(arg(name)?).try_into().ok() };
    let port = arg("--listen")?.rsplit(':').next()?.parse().ok()?;
    Some((key("--device-key")?, key("--admin-key")?, port))
}

fn handle(
    mut stream: TcpStream,
    state: &Mutex<State>,
    der: &[u8],
    project: &str,
    zone: &str,
    token_url: &str,
) {
    let Some(request) = http::read_request(&mut stream) else {
        return;
    };
    let (method, path, auth) = (request.method, request.path, request.authorization);
    let body = String::from_utf8_lossy(&request.body).to_string();
    let mut st = state.lock().expect("lock");
    st.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization: auth.clone(),
        headers: request.headers.clone(),
        body: body.clone(),
    });
    let token = |t: &str| json!({"access_token": t, "expires_in": 3600, "token_type": "Bearer"});
    if path == "/token" {
        let issued = if form_value(&body, "grant_type").as_deref() == Some("refresh_token") {
            check_refresh(&body).map(|()| USER_TOKEN)
        } else {
            check_jwt(&body, der, token_url).map(|()| TOKEN)
        };
        return match issued {
            Ok(t) => reply(&mut stream, 200, &token(t)),
            Err(e) => reply(&mut stream, 400, &json!({"error": e})),
        };
    }
    if path == METADATA_PATH {
        let flavor = request
            .headers
            .iter()
            .any(|(k, v)| k == "metadata-flavor" && v == "Google");
        return match (method.as_str(), flavor) {
            ("GET", true) if st.metadata_404 => reply(&mut stream, 404, &json!({})),
            ("GET", true) => reply(&mut stream, 200, &token(METADATA_TOKEN)),
            _ => reply(
                &mut stream,
                403,
                &json!({"error": "Metadata-Flavor: Google is required"}),
            ),
        };
    }
    let known = [TOKEN, USER_TOKEN, METADATA_TOKEN].map(|t| format!("Bearer {t}"));
    if !auth.as_ref().is_some_and(|a| known.contains(a)) {
        return reply(&mut stream, 401, &json!({"error": {"message": "no token"}}));
    }
    let fw = format!("/compute/v1/projects/{project}/global/firewalls");
    let zone_base = format!("/compute/v1/projects/{project}/zones/{zone}/instances");
    let not_found = json!({"error": {"message": "not found"}});
    match (method.as_str(), path.as_str()) {
        ("GET", p) if p.starts_with(&format!("{fw}/")) => {
            let name = &p[fw.len() + 1..];
            match st.firewalls.get(name) {
                Some(v) => reply(&mut stream, 200, v),
                None => reply(&mut stream, 404, &not_found),
            }
        }
        ("POST", p) if p == zone_base => {
            let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let name = v["name"].as_str().unwrap_or_default().to_string();
            let script = v["metadata"]["items"][0]["value"]
                .as_str()
                .unwrap_or_default();
            if let Some((dk, ak, port)) = relay_args(script) {
                let relay = RelayThread::start_on(([127, 0, 0, 1], port).into(), dk, ak);
                st.relays.insert(name.clone(), relay);
            }
            v["status"] = json!("RUNNING");
            v["networkInterfaces"][0]["accessConfigs"][0]["natIP"] = json!("127.0.0.1");
            st.instances.insert(name, v);
            reply(&mut stream, 200, &json!({"kind": "compute#operation"}));
        }
        ("GET", p) if p.starts_with(&format!("{zone_base}?")) => {
            // The one filter Compute Engine is asked for: "has the label".
            let query = &p[zone_base.len() + 1..];
            let filter = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("filter="))
                .and_then(|f| form_value(&format!("f={f}"), "f"));
            let Some(label) = filter
                .as_deref()
                .and_then(|f| f.strip_prefix("labels."))
                .and_then(|f| f.strip_suffix(":*"))
            else {
                let e = json!({"error": {"message": format!("unsupported filter {filter:?}")}});
                return reply(&mut stream, 400, &e);
            };
            let items: Vec<Value> = st
                .instances
                .values()
                .filter(|v| v["labels"].get(label).is_some())
                .cloned()
                .collect();
            reply(&mut stream, 200, &json!({"items": items}));
        }
        ("GET", p) if p.starts_with(&format!("{zone_base}/")) => {
            match st.instances.get(&p[zone_base.len() + 1..]) {
                Some(v) => reply(&mut stream, 200, v),
                None => reply(&mut stream, 404, &not_found),
            }
        }
        ("DELETE", p) if p.starts_with(&format!("{zone_base}/")) => {
            let name = p[zone_base.len() + 1..].to_string();
            st.relays.remove(&name);
            match st.instances.remove(&name) {
                Some(_) => reply(&mut stream, 200, &json!({"kind": "compute#operation"})),
                None => reply(&mut stream, 404, &not_found),
            }
        }
        _ => reply(&mut stream, 404, &not_found),
    }
}
