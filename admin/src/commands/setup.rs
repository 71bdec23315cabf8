//! Setting up: the support CA's commands (`ca init`, `ca public-key`,
//! `ca sign`) and the engineer's own keys and certificate (`init`).

use std::io::Read;
use std::process::ExitCode;

use support_protocol::certificate::Role;

use super::Env;
use crate::error::{AdminError, FileError};
use crate::identity::IdentityError;
use crate::{ca, identity, secret_file};
use crate::{CaCommand, RoleArg};

/// `ca init|public-key|sign`.
pub(super) fn ca(env: &Env, c: CaCommand) -> Result<ExitCode, AdminError> {
    match c {
        CaCommand::Init => {
            let pass = secret_file::new_passphrase("CA passphrase (empty for none): ")?;
            let public = ca::init(&env.dirs, &pass)?;
            eprintln!(
                "support CA created in {} (0600). Devices pin this public key (support_ca_keys in agent.toml):",
                env.dirs.ca().display()
            );
            println!("{}", hex::encode(public));
        }
        CaCommand::PublicKey => println!("{}", hex::encode(ca::public(&env.dirs)?)),
        CaCommand::Sign {
            name,
            pubkey,
            days,
            role,
        } => {
            let role = match role {
                RoleArg::Approver => Role::Approver,
                RoleArg::Viewer => Role::Viewer,
            };
            let cert = ca::sign(&env.dirs, &name, &pubkey, role, days)?;
            eprintln!(
                "certified {name} ({role:?}, serial {}) for {days} days; give them this line for `support-admin init --certificate`:",
                cert.body.serial
            );
            println!("{}", identity::encode_certificate(&cert));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `init`: new keys, or `--certificate` to install the CA's certificate.
pub(super) fn init(env: &Env, certificate: Option<&str>) -> Result<ExitCode, AdminError> {
    if let Some(src) = certificate {
        return install_certificate(env, src);
    }
    let pass = secret_file::new_passphrase("Passphrase for your keys (empty for none): ")?;
    let me = identity::create(&env.dirs, &pass)?;
    println!(
        "Your keys are in {} (0600{}).\n\n\
         1. The control-plane operator enrolls you:\n   support-control-plane admins add YOUR_NAME {}\n\n\
         2. The support CA certifies your approver key:\n   support-admin ca sign YOUR_NAME {}\n\n\
         3. Install the certificate it returns:\n   support-admin init --certificate FILE",
        env.dirs.config.join("identity.key").display(),
        if pass.is_empty() {
            ", no passphrase"
        } else {
            ", sealed with your passphrase"
        },
        hex::encode(me.control_plane.public),
        hex::encode(me.approver.public()),
    );
    Ok(ExitCode::SUCCESS)
}

/// `init --certificate FILE` (or `-` for stdin).
fn install_certificate(env: &Env, src: &str) -> Result<ExitCode, AdminError> {
    let text = if src == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| AdminError::Input {
                what: "the certificate",
                source,
            })?;
        s
    } else {
        std::fs::read_to_string(src).map_err(FileError::at(src))?
    };
    let cert = identity::decode_certificate(&text).map_err(IdentityError::Certificate)?;
    let me = identity::load(&env.dirs)?;
    if cert.body.key.0 != me.approver.public() {
        return Err(IdentityError::NotMyCertificate.into());
    }
    secret_file::write(
        &env.dirs.config.join("certificate"),
        identity::encode_certificate(&cert).as_bytes(),
        0o644,
    )?;
    eprintln!(
        "installed: {} certified as {:?} by CA {}, serial {}",
        cert.body.name.as_str(),
        cert.body.role,
        hex::encode(cert.body.issuer.0),
        cert.body.serial
    );
    eprintln!("(run `support-admin handoffs` once the control plane is set up, so that others can hand tunnels to you)");
    Ok(ExitCode::SUCCESS)
}
