//! Google's Application Default Credentials, in the order Google's own
//! libraries try them (1 to 3):
//!
//! 1. `GOOGLE_APPLICATION_CREDENTIALS`: a service-account key (exchanged
//!    with an RS256-signed JWT, RFC 7523) or a user's `authorized_user`
//!    file (a refresh-token grant);
//! 2. the file `gcloud auth application-default login` writes
//!    (`$CLOUDSDK_CONFIG` or `~/.config/gcloud`, then
//!    `application_default_credentials.json`);
//! 3. the metadata server, when running on Google Cloud (`GCE_METADATA_HOST`
//!    overrides its address, as in Google's libraries);
//! 4. last, outside ADC proper: the gcloud CLI's own login
//!    (`gcloud auth print-access-token`).
//!
//! Written here rather than taken from a crate: the maintained ones
//! (`gcp_auth`, `google-cloud-auth`) are async and bring hyper and a second
//! TLS stack into a CLI that makes three blocking HTTPS calls with ureq.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// The scope asked for with a service-account key.
const SCOPE: &str = "https://www.googleapis.com/auth/compute";
const TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const METADATA_HOST: &str = "metadata.google.internal";
const METADATA_TOKEN: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// An OAuth access token from the first place that has credentials.
pub fn access_token(agent: &ureq::Agent) -> Result<String, String> {
    if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        return from_file(agent, Path::new(&path));
    }
    if let Some(path) = well_known_file().filter(|p| p.is_file()) {
        return from_file(agent, &path);
    }
    if let Some(token) = from_metadata_server()? {
        return Ok(token);
    }
    from_gcloud()
}

fn well_known_file() -> Option<PathBuf> {
    let dir = match std::env::var_os("CLOUDSDK_CONFIG") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config/gcloud"),
    };
    Some(dir.join("application_default_credentials.json"))
}

/// The credential files Google's tools write.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CredentialFile {
    ServiceAccount {
        client_email: String,
        private_key: String,
        token_uri: Option<String>,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: Option<String>,
    },
}

fn from_file(agent: &ureq::Agent, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let kind = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(String::from));
    let file: CredentialFile = serde_json::from_str(&text).map_err(|e| match kind {
        Some(k) if k != "service_account" && k != "authorized_user" => format!(
            "{}: credentials of type {k:?} are not supported; use a service-account key, \
             `gcloud auth application-default login`, or the metadata server",
            path.display()
        ),
        _ => format!(
            "{} is neither a service-account key nor an authorized_user file: {e}",
            path.display()
        ),
    })?;
    match file {
        CredentialFile::ServiceAccount {
            client_email,
            private_key,
            token_uri,
        } => service_account_token(
            agent,
            &client_email,
            &private_key,
            token_uri.as_deref().unwrap_or(TOKEN_URL),
        ),
        CredentialFile::AuthorizedUser {
            client_id,
            client_secret,
            refresh_token,
            token_uri,
        } => {
            let form = format!(
                "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
                form_encode(&client_id),
                form_encode(&client_secret),
                form_encode(&refresh_token)
            );
            token_request(agent, token_uri.as_deref().unwrap_or(TOKEN_URL), &form)
        }
    }
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The JWT-bearer grant (RFC 7523) with the service account's RSA key.
fn service_account_token(
    agent: &ureq::Agent,
    client_email: &str,
    private_key: &str,
    token_uri: &str,
) -> Result<String, String> {
    use base64::Engine as _;
    let pem: String = private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(pem)
        .map_err(|_| "the service account's private key is not PEM".to_string())?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| format!("the service account's private key is unusable: {e}"))?;
    let now = crate::ca::now();
    let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = b64url(
        json!({"iss": client_email, "scope": SCOPE, "aud": token_uri, "iat": now, "exp": now + 3600})
            .to_string()
            .as_bytes(),
    );
    let signing_input = format!("{header}.{claims}");
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "signing the token request failed".to_string())?;
    let jwt = format!("{signing_input}.{}", b64url(&sig));
    let form =
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}");
    token_request(agent, token_uri, &form)
}

fn token_request(agent: &ureq::Agent, url: &str, form: &str) -> Result<String, String> {
    let mut resp = agent
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .send(form.as_bytes())
        .map_err(|e| format!("the token endpoint {url} is unreachable: {e}"))?;
    let status = resp.status().as_u16();
    token_from(status, &mut resp, "the token endpoint")
}

fn token_from(
    status: u16,
    resp: &mut ureq::http::Response<ureq::Body>,
    who: &str,
) -> Result<String, String> {
    let v = super::json_body(resp, 1 << 20)?;
    match v.get("access_token").and_then(Value::as_str) {
        Some(t) if status == 200 => Ok(t.to_string()),
        _ => {
            let why = v
                .get("error_description")
                .or_else(|| v.get("error"))
                .map(|e| e.to_string())
                .unwrap_or_default();
            Err(format!("{who} answered {status} without a token {why}")
                .trim_end()
                .to_string())
        }
    }
}

/// `Ok(None)` when no metadata server answers (not on Google Cloud).
fn from_metadata_server() -> Result<Option<String>, String> {
    let host = std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| METADATA_HOST.into());
    // Off Google Cloud the name does not resolve or nothing answers: ask
    // briefly, so a laptop falls through to gcloud at once.
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .timeout_connect(Some(Duration::from_millis(500)))
        .timeout_resolve(Some(Duration::from_millis(500)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let Ok(mut resp) = agent
        .get(&format!("http://{host}{METADATA_TOKEN}"))
        .header("Metadata-Flavor", "Google")
        .call()
    else {
        return Ok(None);
    };
    let status = resp.status().as_u16();
    if status == 404 {
        // A VM without a service account: no credentials here.
        return Ok(None);
    }
    token_from(status, &mut resp, "the metadata server").map(Some)
}

fn from_gcloud() -> Result<String, String> {
    let out = std::process::Command::new("gcloud")
        .args(["auth", "print-access-token"])
        .output()
        .map_err(|_| {
            "no GCP credentials: run `gcloud auth application-default login`, or set \
             GOOGLE_APPLICATION_CREDENTIALS to a service-account key"
                .to_string()
        })?;
    if !out.status.success() {
        return Err(format!(
            "gcloud auth print-access-token failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_values_are_percent_encoded() {
        assert_eq!(super::form_encode("1//0g-a_b.c~"), "1%2F%2F0g-a_b.c~");
        assert_eq!(super::form_encode("a b+c&d="), "a%20b%2Bc%26d%3D");
    }
}
