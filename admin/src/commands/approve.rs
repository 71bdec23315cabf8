//! `approve` (the owner's code in, a launched hub and a posted approval
//! out) and `wait` (for the device to connect under it); the checks and
//! their order are in [`crate::approve`].

use std::process::ExitCode;
use std::time::Duration;

use super::Env;
use crate::error::{AdminError, ApproveError};
use crate::identity;
use crate::records::ProviderKind;

/// `approve [CODE]`.
pub(super) fn approve(
    env: &Env,
    code: Option<String>,
    provider: Option<ProviderKind>,
    duration_secs: Option<u32>,
    ports: Option<Vec<u16>>,
    wait: Duration,
    yes: bool,
) -> Result<ExitCode, AdminError> {
    let code = match code {
        Some(c) => c,
        None => read_code()?,
    };
    let cp = env.control_plane()?;
    let me = identity::load(&env.dirs)?;
    let kind = match provider {
        Some(k) => k,
        None => env.default_provider()?,
    };
    let provider = env.provider(kind)?;
    let rec = crate::approve::approve(
        &cp,
        &me,
        &env.records(),
        &code,
        &crate::approve::Options {
            provider: provider.as_ref(),
            duration_secs,
            ports,
            wait,
            yes,
        },
    )?;
    env.refresh_ssh_config();
    println!("{}", rec.id);
    eprintln!(
        "next: support-admin connect {id}   (or exec {id} -- CMD, forward {id} 8080:80, ssh support-{id} after ssh-config --install)",
        id = rec.id
    );
    Ok(ExitCode::SUCCESS)
}

/// `wait ID`.
pub(super) fn wait(env: &Env, id: &str, wait: Duration) -> Result<ExitCode, AdminError> {
    let records = env.records();
    let mut rec = records.load(id)?;
    crate::approve::wait(&env.control_plane()?, &records, &mut rec, wait)?;
    println!("{}", rec.id);
    Ok(ExitCode::SUCCESS)
}

/// The one-time code, asked on a terminal or read as a line from stdin.
fn read_code() -> Result<String, AdminError> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("the owner's one-time code: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|source| AdminError::Input {
            what: "the code",
            source,
        })?;
    let code = line.trim().to_string();
    if code.is_empty() {
        return Err(ApproveError::NoCode.into());
    }
    Ok(code)
}
