//! Reaching the device over the tunnel's session: `connect`, `exec`,
//! `forward`, `proxy`, `up`, and `session` (the session process itself).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::Env;
use crate::error::AdminError;
use crate::{session, ssh};

/// `connect ID`: an interactive shell; exits with its status.
pub(super) fn connect(env: &Env, id: &str) -> Result<ExitCode, AdminError> {
    let rec = env.records().load(id)?;
    let code = env.block_on(async {
        let stream = env.launcher()?.open(&env.records(), &rec, 22).await?;
        let h = ssh::session(&rec, stream).await?;
        Ok(ssh::shell(&h).await?)
    })?;
    Ok(exit(code))
}

/// `exec ID -- CMD...`: exits with the command's status.
pub(super) fn exec(env: &Env, id: &str, command: &[String]) -> Result<ExitCode, AdminError> {
    let rec = env.records().load(id)?;
    let line = shell_join(command);
    let code = env.block_on(async {
        let stream = env.launcher()?.open(&env.records(), &rec, 22).await?;
        let h = ssh::session(&rec, stream).await?;
        Ok(ssh::exec(&h, &line).await?)
    })?;
    Ok(exit(code))
}

/// `up ID`: starts the session now.
pub(super) fn up(env: &Env, id: &str, idle: Duration) -> Result<ExitCode, AdminError> {
    let records = env.records();
    let rec = records.load(id)?;
    let launcher = session::Launcher {
        idle,
        ..env.launcher()?
    };
    let started = launcher.ensure(&records, &rec)?;
    eprintln!(
        "{} {}: connect, exec, forward and ssh share it; it ends {} s after the last one detaches, at stop, or at expiry",
        if started { "session started for" } else { "a session already runs for" },
        rec.id,
        idle.as_secs()
    );
    Ok(ExitCode::SUCCESS)
}

/// `session ID` (hidden): the session process.
pub(super) fn serve(env: &Env, id: &str, idle: Duration) -> Result<ExitCode, AdminError> {
    let records = env.records();
    let rec = records.load(id)?;
    session::serve(&records, &rec, idle)?;
    Ok(ExitCode::SUCCESS)
}

/// `forward ID SPEC...`: local ports to device ports, until Ctrl-C.
pub(super) fn forward(env: &Env, id: &str, specs: &[String]) -> Result<ExitCode, AdminError> {
    let pairs = specs
        .iter()
        .map(|s| forward_spec(s))
        .collect::<Result<Vec<_>, _>>()?;
    let records = env.records();
    let rec = records.load(id)?;
    let launcher = Arc::new(env.launcher()?);
    launcher.ensure(&records, &rec)?;
    env.block_on(async {
        let mut listeners = Vec::new();
        for (local, remote) in pairs {
            let listen = |source| AdminError::Listen {
                port: local,
                source,
            };
            let l = tokio::net::TcpListener::bind(("127.0.0.1", local))
                .await
                .map_err(listen)?;
            let addr = l.local_addr().map_err(listen)?;
            // The address alone on stdout, for scripts; the explanation on stderr.
            println!("{addr}");
            eprintln!(
                "forwarding {addr} -> device {} port {remote} over the tunnel's session",
                rec.id
            );
            listeners.push((l, remote));
        }
        eprintln!("Ctrl-C stops");
        let records = Arc::new(env.records());
        let rec = Arc::new(rec.clone());
        for (l, remote) in listeners {
            let (launcher, records, rec) = (launcher.clone(), records.clone(), rec.clone());
            tokio::spawn(async move {
                while let Ok((mut tcp, _)) = l.accept().await {
                    let (launcher, records, rec) = (launcher.clone(), records.clone(), rec.clone());
                    tokio::spawn(async move {
                        match launcher.open(&records, &rec, remote).await {
                            Ok(mut s) => {
                                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut s).await;
                            }
                            Err(e) => eprintln!("support-admin: forward to port {remote}: {e}"),
                        }
                    });
                }
            });
        }
        let _ = tokio::signal::ctrl_c().await;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `LOCAL:DEVICE`, or `DEVICE` alone (any local port).
fn forward_spec(spec: &str) -> Result<(u16, u16), AdminError> {
    let (local, remote) = match spec.split_once(':') {
        Some((l, r)) => (l.parse::<u16>(), r.parse::<u16>()),
        None => (Ok(0), spec.parse::<u16>()),
    };
    match (local, remote) {
        (Ok(local), Ok(remote)) => Ok((local, remote)),
        _ => Err(AdminError::Usage(format!(
            "'{spec}' is not [LOCAL_PORT:]DEVICE_PORT, e.g. 8080:80"
        ))),
    }
}

/// `proxy ID PORT`: stdin and stdout to a device port (ssh's ProxyCommand).
pub(super) fn proxy(env: &Env, id: &str, port: u16) -> Result<ExitCode, AdminError> {
    let records = env.records();
    let rec = records.load(id)?;
    env.block_on(async {
        let mut stream = env.launcher()?.open(&records, &rec, port).await?;
        let mut stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut stdio).await;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn exit(code: u32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

/// Quotes each argument for the remote POSIX shell, so `exec ID -- ls "a b"` means what it says.
fn shell_join(args: &[String]) -> String {
    if args.len() == 1 {
        // One argument is a command line of its own (`exec ID -- 'hostname; id'`).
        return args[0].clone();
    }
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_the_remote_shell() {
        let a = |v: &[&str]| shell_join(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(a(&["hostname; id"]), "hostname; id");
        assert_eq!(a(&["ls", "-l", "a b"]), "ls -l 'a b'");
        assert_eq!(a(&["echo", "it's"]), "echo 'it'\\''s'");
    }

    #[test]
    fn forward_specs_are_parsed_or_refused_as_usage() {
        assert_eq!(forward_spec("8080:80").expect("spec"), (8080, 80));
        assert_eq!(forward_spec("22").expect("spec"), (0, 22));
        for bad in ["", "x", "8080:", ":80", "70000:80", "1:2:3"] {
            match forward_spec(bad) {
                Err(AdminError::Usage(m)) => {
                    assert_eq!(
                        m,
                        format!("'{bad}' is not [LOCAL_PORT:]DEVICE_PORT, e.g. 8080:80")
                    )
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
