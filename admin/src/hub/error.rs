//! What can go wrong with a hub provider, as types: [`HubError`] and what it
//! wraps ([`CredentialsError`], [`GcpSettingsError`], [`FirewallProblem`],
//! [`BodyError`]). Each prints as one sentence the engineer can act on (run
//! `tofu apply`, set a setting, log in to gcloud); tests match the variants.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::FileError;

use super::gcp::{RELAY_OBJECT, TAG};

/// Why a hub could not be checked for, launched, deleted or listed.
#[derive(Debug)]
pub enum HubError {
    /// No `support-relay` binary next to support-admin or on PATH.
    RelayNotFound,
    /// The configured relay binary cannot be looked at.
    RelayMissing {
        /// The binary.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The configured relay binary is not an executable file.
    RelayNotExecutable {
        /// The binary.
        path: PathBuf,
    },
    /// The relay's log (its directory or file) cannot be created.
    Log(FileError),
    /// The relay could not be started.
    Spawn {
        /// The relay binary.
        program: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The relay printed nothing within `within`.
    RelayDidNotStart {
        /// How long it had.
        within: Duration,
    },
    /// The relay's first line is not `relaying on ADDRESS`.
    RelaySaid {
        /// What it printed.
        line: String,
    },
    /// A local hub's handle is not a process id.
    NotAPid {
        /// The handle.
        handle: String,
    },
    /// Signalling a local relay to stop failed.
    Stop {
        /// Its process id.
        pid: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A local relay was told to stop and is still running.
    RelayDidNotStop {
        /// Its process id.
        pid: String,
    },
    /// A `[gcp]` setting cannot be used.
    Settings(GcpSettingsError),
    /// No usable Google credentials.
    Credentials(CredentialsError),
    /// The Compute Engine API did not answer (DNS, TCP, TLS, timeout).
    Unreachable {
        /// The call.
        call: ApiCall,
        /// ureq's error.
        source: ureq::Error,
    },
    /// The Compute Engine API's answer could not be read.
    Unreadable {
        /// The call.
        call: ApiCall,
        /// Why.
        source: BodyError,
    },
    /// The Compute Engine API answered with an error.
    Api {
        /// The call.
        call: ApiCall,
        /// The HTTP status.
        status: u16,
        /// Google's `error.message`, if the answer has one.
        message: Option<String>,
    },
    /// The Compute Engine API answered 200 without the JSON object the call returns.
    Malformed {
        /// The call.
        call: ApiCall,
    },
    /// The hub firewall rule `infra/` creates does not exist.
    FirewallRuleMissing {
        /// Its name.
        rule: String,
        /// The project.
        project: String,
        /// The relay's UDP port (`relay_port` in `infra/`).
        port: u16,
    },
    /// The hub firewall rule exists but does not admit the relay's traffic.
    FirewallRuleChanged {
        /// Its name.
        rule: String,
        /// What is wrong with it.
        problem: FirewallProblem,
    },
    /// The hub VM was not running with a public address within `within`.
    VmDidNotStart {
        /// How long it had.
        within: Duration,
        /// Whether deleting it then worked.
        deleted: Result<(), Box<HubError>>,
    },
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RelayNotFound => f.write_str(
                "support-relay is not next to support-admin nor on PATH; \
                 set local.relay_binary in admin.toml",
            ),
            Self::RelayMissing { path, source } => {
                write!(f, "the relay {}: {source}", path.display())
            }
            Self::RelayNotExecutable { path } => {
                write!(f, "{} is not an executable file", path.display())
            }
            Self::Log(e) => write!(f, "the relay's log: {e}"),
            Self::Spawn { program, source } => {
                write!(f, "cannot start {}: {source}", program.display())
            }
            Self::RelayDidNotStart { within } => write!(
                f,
                "support-relay did not start within {} s",
                within.as_secs()
            ),
            Self::RelaySaid { line } => write!(f, "support-relay said {line:?}"),
            Self::NotAPid { handle } => write!(f, "the local hub {handle:?} is not a process id"),
            Self::Stop { pid, source } => write!(f, "cannot stop relay {pid}: {source}"),
            Self::RelayDidNotStop { pid } => write!(f, "relay {pid} did not stop"),
            Self::Settings(e) => e.fmt(f),
            Self::Credentials(e) => e.fmt(f),
            Self::Unreachable { call, source } => {
                write!(f, "{call}: the Compute Engine API is unreachable: {source}")
            }
            Self::Unreadable { call, source } => {
                write!(f, "{call}: the Compute Engine API's answer {source}")
            }
            Self::Api {
                call,
                status,
                message,
            } => write!(
                f,
                "{call}: the Compute Engine API answered {status}: {}",
                message.as_deref().unwrap_or("no message")
            ),
            Self::Malformed { call } => write!(
                f,
                "{call}: the Compute Engine API's answer is not a JSON object"
            ),
            Self::FirewallRuleMissing {
                rule,
                project,
                port,
            } => write!(
                f,
                "the hub firewall rule {rule} does not exist in project {project}: it belongs to \
                 the deployment; run `tofu apply` in infra/ (network.tf creates it, with \
                 relay_port = {port})"
            ),
            Self::FirewallRuleChanged { rule, problem } => write!(
                f,
                "the firewall rule {rule} {problem}: it was changed outside infra/; run \
                 `tofu apply` there"
            ),
            Self::VmDidNotStart { within, deleted } => {
                write!(f, "the hub VM did not start within {} s", within.as_secs())?;
                match deleted {
                    Ok(()) => f.write_str("; it was deleted"),
                    Err(e) => write!(f, ", and deleting it failed: {e}"),
                }
            }
        }
    }
}

impl std::error::Error for HubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::RelayMissing { source, .. }
            | Self::Spawn { source, .. }
            | Self::Stop { source, .. } => Some(source),
            Self::Log(e) => Some(e),
            Self::Settings(e) => Some(e),
            Self::Credentials(e) => Some(e),
            Self::Unreachable { source, .. } => Some(source),
            Self::Unreadable { source, .. } => Some(source),
            Self::FirewallRuleChanged { problem, .. } => Some(problem),
            Self::VmDidNotStart {
                deleted: Err(e), ..
            } => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<CredentialsError> for HubError {
    fn from(e: CredentialsError) -> Self {
        HubError::Credentials(e)
    }
}

impl From<GcpSettingsError> for HubError {
    fn from(e: GcpSettingsError) -> Self {
        HubError::Settings(e)
    }
}

/// A call to the Compute Engine API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCall {
    /// `compute.firewalls.get` of the hub firewall rule.
    ReadFirewall {
        /// The rule's name.
        rule: String,
    },
    /// `compute.instances.insert`.
    CreateVm,
    /// `compute.instances.get`.
    ReadVm,
    /// `compute.instances.delete`.
    DeleteVm,
    /// `compute.instances.list`.
    ListVms,
}

impl ApiCall {
    /// The HTTP method the call is made with.
    pub fn http_method(&self) -> &'static str {
        match self {
            Self::CreateVm => "POST",
            Self::DeleteVm => "DELETE",
            Self::ReadFirewall { .. } | Self::ReadVm | Self::ListVms => "GET",
        }
    }
}

impl fmt::Display for ApiCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadFirewall { rule } => write!(f, "reading the firewall rule {rule}"),
            Self::CreateVm => f.write_str("creating the hub VM"),
            Self::ReadVm => f.write_str("reading the hub VM"),
            Self::DeleteVm => f.write_str("deleting the hub VM"),
            Self::ListVms => f.write_str("listing hub VMs"),
        }
    }
}

/// Why an HTTP answer's body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Reading it failed (the connection broke, a timeout).
    Read(std::io::Error),
    /// It is longer than we read.
    TooLarge {
        /// How many bytes we read at most.
        limit: u64,
    },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(e) => write!(f, "cannot be read: {e}"),
            Self::TooLarge { limit } => write!(f, "is larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read(e) => Some(e),
            Self::TooLarge { .. } => None,
        }
    }
}

/// What keeps the hub firewall rule from admitting devices and engineers
/// to the relay's UDP port on hubs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallProblem {
    /// It is an egress rule.
    NotIngress,
    /// It is disabled.
    Disabled,
    /// It does not target the hubs' network tag.
    NoHubTag,
    /// It does not admit UDP to the relay's port.
    PortNotAdmitted {
        /// The relay's port.
        port: u16,
    },
    /// It is on another network than the hubs'.
    OtherNetwork {
        /// The hubs' network.
        network: String,
    },
    /// It does not admit traffic from anywhere.
    NotFromAnywhere,
}

impl fmt::Display for FirewallProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotIngress => f.write_str("is not an ingress rule"),
            Self::Disabled => f.write_str("is disabled"),
            Self::NoHubTag => write!(f, "does not target the tag {TAG}"),
            Self::PortNotAdmitted { port } => write!(f, "does not admit udp/{port}"),
            Self::OtherNetwork { network } => write!(f, "is not on the hubs' network {network}"),
            Self::NotFromAnywhere => f.write_str(
                "does not admit 0.0.0.0/0 (devices and engineers connect from anywhere)",
            ),
        }
    }
}

impl std::error::Error for FirewallProblem {}

/// A `[gcp]` setting that cannot be used (they end up in a shell script on the VM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcpSettingsError {
    /// `relay_url` is not an https:// URL of safe characters.
    RelayUrl,
    /// `relay_url` is in the artifacts bucket but not where a release puts the relay.
    RelayObject,
    /// `relay_sha256` is not 64 hex digits.
    RelaySha256,
    /// `project` or `zone` is not a valid name.
    Name {
        /// Which setting.
        setting: &'static str,
        /// Its value.
        value: String,
    },
}

impl fmt::Display for GcpSettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RelayUrl => {
                f.write_str("gcp.relay_url must be an https:// URL without quotes or spaces")
            }
            Self::RelayObject => write!(
                f,
                "gcp.relay_url: the object in the artifacts bucket should be {RELAY_OBJECT} \
                 (as scripts/release uploads it and `tofu output admin_toml` prints it)"
            ),
            Self::RelaySha256 => {
                f.write_str("gcp.relay_sha256 must be 64 hex digits (sha256sum of the relay)")
            }
            Self::Name { setting, value } => {
                write!(f, "gcp.{setting} '{value}' is not a valid name")
            }
        }
    }
}

impl std::error::Error for GcpSettingsError {}

/// Who was asked for an OAuth token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Google's token endpoint (or a credential file's `token_uri`).
    TokenEndpoint,
    /// The metadata server of a Google Cloud VM.
    MetadataServer,
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TokenEndpoint => "the token endpoint",
            Self::MetadataServer => "the metadata server",
        })
    }
}

/// Why no OAuth token for the Compute Engine API could be had.
#[derive(Debug)]
pub enum CredentialsError {
    /// No Application Default Credentials anywhere and no gcloud CLI.
    NoneFound,
    /// The credentials file cannot be read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The credentials file is of a type this CLI does not speak.
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// Its `type`.
        kind: String,
    },
    /// The credentials file is neither a service-account key nor an `authorized_user` file.
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where and why it does not parse.
        source: serde_json::Error,
    },
    /// The service account's private key is not PEM.
    KeyNotPem,
    /// The service account's private key is not an RSA key ring can use.
    KeyUnusable(ring::error::KeyRejected),
    /// Signing the token request failed.
    Signing,
    /// The token endpoint did not answer.
    Unreachable {
        /// Its URL.
        url: String,
        /// ureq's error.
        source: ureq::Error,
    },
    /// The token source's answer could not be read.
    Answer {
        /// Who answered.
        from: TokenSource,
        /// Why.
        source: BodyError,
    },
    /// The token source answered without a token.
    Refused {
        /// Who answered.
        from: TokenSource,
        /// The HTTP status.
        status: u16,
        /// Its `error_description` (else `error`), as JSON.
        reason: Option<String>,
    },
    /// `gcloud auth print-access-token` failed.
    Gcloud {
        /// What it printed on stderr.
        stderr: String,
    },
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoneFound => f.write_str(
                "no GCP credentials: run `gcloud auth application-default login`, or set \
                 GOOGLE_APPLICATION_CREDENTIALS to a service-account key",
            ),
            Self::Unreadable { path, source } => write!(f, "{}: {source}", path.display()),
            Self::UnsupportedType { path, kind } => write!(
                f,
                "{}: credentials of type {kind:?} are not supported; use a service-account key, \
                 `gcloud auth application-default login`, or the metadata server",
                path.display()
            ),
            Self::Malformed { path, source } => write!(
                f,
                "{} is neither a service-account key nor an authorized_user file: {source}",
                path.display()
            ),
            Self::KeyNotPem => f.write_str("the service account's private key is not PEM"),
            Self::KeyUnusable(e) => {
                write!(f, "the service account's private key is unusable: {e}")
            }
            Self::Signing => f.write_str("signing the token request failed"),
            Self::Unreachable { url, source } => {
                write!(f, "the token endpoint {url} is unreachable: {source}")
            }
            Self::Answer { from, source } => write!(f, "{from}'s answer {source}"),
            Self::Refused {
                from,
                status,
                reason,
            } => {
                write!(f, "{from} answered {status} without a token")?;
                match reason {
                    Some(why) => write!(f, " {why}"),
                    None => Ok(()),
                }
            }
            Self::Gcloud { stderr } => {
                write!(f, "gcloud auth print-access-token failed: {stderr}")
            }
        }
    }
}

impl std::error::Error for CredentialsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreadable { source, .. } => Some(source),
            Self::Malformed { source, .. } => Some(source),
            Self::Unreachable { source, .. } => Some(source),
            Self::Answer { source, .. } => Some(source),
            _ => None,
        }
    }
}
