//! What describes the CLI itself: shell completions and man pages (the
//! `.deb` ships both; scripts/release writes them with these commands).

use std::path::Path;
use std::process::ExitCode;

use crate::error::{AdminError, FileError};
use crate::Cli;

/// `completions SHELL`: the script on stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "support-admin", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `man DIR`: writes support-admin.1 and support-admin-COMMAND.1 into `dir`.
pub(super) fn man_pages(dir: &Path) -> Result<ExitCode, AdminError> {
    std::fs::create_dir_all(dir).map_err(FileError::at(dir))?;
    let cmd = <Cli as clap::CommandFactory>::command();
    let write = |name: String, c: clap::Command| -> Result<(), FileError> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(c)
            .render(&mut out)
            .map_err(FileError::at(&path))?;
        std::fs::write(&path, out).map_err(FileError::at(&path))?;
        eprintln!("wrote {}", path.display());
        Ok(())
    };
    // Not the internal ones (`session`): --help does not list them either.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("support-admin-{}", sub.get_name());
        write(name.clone(), sub.clone().name(name))?;
    }
    write("support-admin".into(), cmd)?;
    Ok(ExitCode::SUCCESS)
}
