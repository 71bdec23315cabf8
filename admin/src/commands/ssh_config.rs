//! `ssh-config`: an OpenSSH config block for one tunnel, or `--install`
//! of one generated file for all of them that `~/.ssh/config` includes.

use std::process::ExitCode;

use super::Env;
use crate::error::AdminError;
use crate::ssh_config;

/// `ssh-config ID [--port P]`, or `ssh-config --install`.
pub(super) fn ssh_config(
    env: &Env,
    id: Option<&str>,
    port: Option<u16>,
    install: bool,
) -> Result<ExitCode, AdminError> {
    let records = env.records();
    let exe = std::env::current_exe().map_err(AdminError::Exe)?;
    let route = match port {
        Some(p) => ssh_config::Route::Port(p),
        None => ssh_config::Route::Proxy {
            exe: &exe,
            home: env.home.as_deref(),
        },
    };
    if install {
        if id.is_some() || port.is_some() {
            return Err(AdminError::Usage(
                "--install covers every tunnel through ProxyCommand: give no ID or --port".into(),
            ));
        }
        let n = ssh_config::write_generated(&env.dirs, &records, &route)?;
        let generated = ssh_config::generated_path(&env.dirs);
        let user_config = ssh_config::user_ssh_config()?;
        let added = ssh_config::include_once(&user_config, &generated)?;
        eprintln!(
            "{} {} ({n} tunnel{} now; approve, stop and gc keep it current){}",
            if added { "installed" } else { "updated" },
            generated.display(),
            if n == 1 { "" } else { "s" },
            if added {
                format!("; {} includes it", user_config.display())
            } else {
                String::new()
            }
        );
        eprintln!("then: ssh support-ID");
        return Ok(ExitCode::SUCCESS);
    }
    let id = id.ok_or_else(|| {
        AdminError::Usage("say which tunnel (ssh-config ID), or --install for all of them".into())
    })?;
    let rec = records.load(id)?;
    print!("{}", ssh_config::block(&records, &rec, &route)?);
    println!();
    if let Some(p) = port {
        eprintln!("(run `support-admin forward {} {p}:22` alongside)", rec.id);
    }
    Ok(ExitCode::SUCCESS)
}
