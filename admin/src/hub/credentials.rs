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

use super::{CredentialsError, TokenSource};

/// The scope asked for with a service-account key.
const SCOPE: &str = "https://www.googleapis.com/auth/compute";
const TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const METADATA_HOST: &str = "metadata.google.internal";
const METADATA_TOKEN: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// An OAuth access token from the first place that has credentials.
pub fn access_token(agent: &ureq::Agent) -> Result<String, CredentialsError> {
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

fn from_file(agent: &ureq::Agent, path: &Path) -> Result<String, CredentialsError> {
    match read_file(path)? {
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

/// The credentials file at `path`, or why it cannot be used.
fn read_file(path: &Path) -> Result<CredentialFile, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let kind = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(String::from));
    serde_json::from_str(&text).map_err(|source| match kind {
        Some(kind) if kind != "service_account" && kind != "authorized_user" => {
            CredentialsError::UnsupportedType {
                path: path.to_path_buf(),
                kind,
            }
        }
        _ => CredentialsError::Malformed {
            path: path.to_path_buf(),
            source,
        },
    })
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
) -> Result<String, CredentialsError> {
    use base64::Engine as _;
    let pem: String = private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(pem)
        .map_err(|_| CredentialsError::KeyNotPem)?;
    let key =
        ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(CredentialsError::KeyUnusable)?;
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
    .map_err(|_| CredentialsError::Signing)?;
    let jwt = format!("{signing_input}.{}", b64url(&sig));
    let form =
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}");
    token_request(agent, token_uri, &form)
}

fn token_request(agent: &ureq::Agent, url: &str, form: &str) -> Result<String, CredentialsError> {
    let mut resp = agent
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .send(form.as_bytes())
        .map_err(|source| CredentialsError::Unreachable {
            url: url.to_string(),
            source,
        })?;
    token_from(&mut resp, TokenSource::TokenEndpoint)
}

/// The token in `from`'s answer `resp`, or why there is none.
fn token_from(
    resp: &mut ureq::http::Response<ureq::Body>,
    from: TokenSource,
) -> Result<String, CredentialsError> {
    let status = resp.status().as_u16();
    let v = super::json_body(resp, 1 << 20)
        .map_err(|source| CredentialsError::Answer { from, source })?;
    match v.get("access_token").and_then(Value::as_str) {
        Some(t) if status == 200 => Ok(t.to_string()),
        _ => Err(CredentialsError::Refused {
            from,
            status,
            reason: v
                .get("error_description")
                .or_else(|| v.get("error"))
                .map(|e| e.to_string()),
        }),
    }
}

/// `Ok(None)` when no metadata server answers (not on Google Cloud).
fn from_metadata_server() -> Result<Option<String>, CredentialsError> {
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
    if resp.status().as_u16() == 404 {
        // A VM without a service account: no credentials here.
        return Ok(None);
    }
    token_from(&mut resp, TokenSource::MetadataServer).map(Some)
}

fn from_gcloud() -> Result<String, CredentialsError> {
    let out = std::process::Command::new("gcloud")
        .args(["auth", "print-access-token"])
        .output()
        .map_err(|_| CredentialsError::NoneFound)?;
    if !out.status.success() {
        return Err(CredentialsError::Gcloud {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_percent_encoded() {
        assert_eq!(form_encode("1//0g-a_b.c~"), "1%2F%2F0g-a_b.c~");
        assert_eq!(form_encode("a b+c&d="), "a%20b%2Bc%26d%3D");
    }

    fn file(dir: &tempfile::TempDir, json: &str) -> PathBuf {
        let path = dir.path().join("credentials.json");
        std::fs::write(&path, json).expect("write");
        path
    }

    #[test]
    fn a_credentials_file_is_read_or_said_what_is_wrong_with_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let missing = d.path().join("none.json");
        match read_file(&missing) {
            Err(CredentialsError::Unreadable { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{:?}", other.err()),
        }
        let path = file(&d, r#"{"type": "external_account", "audience": "x"}"#);
        match read_file(&path) {
            Err(e @ CredentialsError::UnsupportedType { .. }) => {
                assert!(
                    matches!(&e, CredentialsError::UnsupportedType { kind, .. } if kind == "external_account")
                );
                assert!(
                    e.to_string()
                        .contains("\"external_account\" are not supported"),
                    "{e}"
                );
            }
            other => panic!("{:?}", other.err()),
        }
        for bad in [
            "not json",
            r#"{"client_email": "x"}"#,
            r#"{"type": "service_account", "client_email": "x"}"#,
            r#"{"type": "authorized_user", "client_id": "x"}"#,
        ] {
            let path = file(&d, bad);
            assert!(
                matches!(read_file(&path), Err(CredentialsError::Malformed { path: p, .. }) if p == path),
                "{bad}"
            );
        }
        let path = file(
            &d,
            r#"{"type": "authorized_user", "client_id": "i", "client_secret": "s", "refresh_token": "r"}"#,
        );
        assert!(matches!(
            read_file(&path),
            Ok(CredentialFile::AuthorizedUser {
                token_uri: None,
                ..
            })
        ));
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
    }

    #[test]
    fn a_service_account_key_that_is_not_an_rsa_key_is_refused_before_any_request() {
        // The token URI is never asked: nothing listens there.
        let url = "http://127.0.0.1:9/token";
        assert!(matches!(
            service_account_token(
                &agent(),
                "a@b",
                "-----BEGIN PRIVATE KEY-----\n!!\n-----END",
                url
            ),
            Err(CredentialsError::KeyNotPem)
        ));
        assert!(matches!(
            service_account_token(
                &agent(),
                "a@b",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                url
            ),
            Err(CredentialsError::KeyUnusable(_))
        ));
    }

    #[test]
    fn a_token_endpoint_that_does_not_answer_is_named() {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        let url = "http://127.0.0.1:9/token";
        match token_request(&agent(), url, "grant_type=x") {
            Err(e @ CredentialsError::Unreachable { .. }) => {
                assert!(
                    e.to_string()
                        .starts_with(&format!("the token endpoint {url} is unreachable: ")),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    fn answer(status: u16, body: &str) -> ureq::http::Response<ureq::Body> {
        ureq::http::Response::builder()
            .status(status)
            .body(ureq::Body::builder().data(body.as_bytes().to_vec()))
            .expect("a response")
    }

    #[test]
    fn a_token_answer_is_the_token_or_the_refusal_with_its_reason() {
        let from = TokenSource::TokenEndpoint;
        let ok = token_from(&mut answer(200, r#"{"access_token": "t0k"}"#), from);
        assert_eq!(ok.expect("a token"), "t0k");
        let refused = token_from(
            &mut answer(
                400,
                r#"{"error": "invalid_grant", "error_description": "Bad Request"}"#,
            ),
            from,
        );
        match refused {
            Err(e @ CredentialsError::Refused { .. }) => {
                assert!(matches!(
                    &e,
                    CredentialsError::Refused { from: TokenSource::TokenEndpoint, status: 400, reason: Some(r) }
                        if r == "\"Bad Request\""
                ));
                assert_eq!(
                    e.to_string(),
                    "the token endpoint answered 400 without a token \"Bad Request\""
                );
            }
            other => panic!("{other:?}"),
        }
        // A token with an error status is no token; no reason, nothing after "token".
        let e = token_from(
            &mut answer(500, r#"{"access_token": "t0k"}"#),
            TokenSource::MetadataServer,
        )
        .expect_err("not 200");
        assert!(matches!(
            e,
            CredentialsError::Refused {
                from: TokenSource::MetadataServer,
                status: 500,
                reason: None
            }
        ));
        assert_eq!(
            e.to_string(),
            "the metadata server answered 500 without a token"
        );
        let e = token_from(&mut answer(200, "<html>"), from).expect_err("no token");
        assert!(matches!(
            e,
            CredentialsError::Refused {
                status: 200,
                reason: None,
                ..
            }
        ));
        let huge = format!(r#"{{"access_token": "{}"}}"#, "a".repeat(1 << 20));
        let e = token_from(&mut answer(200, &huge), from).expect_err("too large");
        assert!(matches!(
            e,
            CredentialsError::Answer {
                from: TokenSource::TokenEndpoint,
                source: crate::hub::BodyError::TooLarge { limit: 1048576 }
            }
        ));
        assert_eq!(
            e.to_string(),
            "the token endpoint's answer is larger than 1048576 bytes"
        );
    }
}
