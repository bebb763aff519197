//! `fleetgate completions SHELL` and `fleetgate man`: shell completion scripts
//! (`clap_complete`) and manual pages (`clap_mangen`), both generated from the
//! same command definition as `--help`, defaults included — so they cannot
//! drift from the binary that prints them.
//!
//! Packagers run the installed binary: `fleetgate completions bash >
//! $out/share/bash-completion/completions/fleetgate`, and `fleetgate man --dir
//! $out/share/man/man1` for `fleetgate.1` plus one page per command
//! (`fleetgate-deploy.1`, `fleetgate-channel-promote.1`, …), as nixpkgs'
//! `installShellCompletion` and `installManPage` expect.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::facts_cmd::CliError;

/// `fleetgate completions` arguments.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `fleetgate man` arguments.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `fleetgate.1` and one page per command (`fleetgate-deploy.1`, …)
    /// into this directory instead of printing `fleetgate.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script of `shell` on stdout.
pub fn completions(args: &CompletionsArgs, mut command: clap::Command) -> miette::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "fleetgate", &mut script);
    write_stdout(&script)
}

/// Prints `fleetgate.1`, or writes every page into `--dir`.
pub fn man(args: &ManArgs, command: clap::Command) -> miette::Result<ExitCode> {
    let command = command.disable_help_subcommand(true);
    let Some(dir) = &args.dir else {
        let page = top_page(command).map_err(|e| CliError::new("cannot render the manual page").caused_by(e))?;
        return write_stdout(&page);
    };
    let fail = |e: std::io::Error| {
        CliError::new(format!("cannot write the manual pages into {}", dir.display()))
            .caused_by(e)
            .with_help("give a directory you can write to, e.g. `--dir share/man/man1`")
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    clap_mangen::generate_to(command.clone(), dir).map_err(fail)?;
    let top = clap_mangen::Man::new(command.clone()).get_filename();
    std::fs::write(dir.join(top), top_page(command).map_err(fail)?).map_err(fail)?;
    Ok(ExitCode::SUCCESS)
}

/// `fleetgate.1`: clap_mangen's sections, then EXIT STATUS and FILES.
fn top_page(command: clap::Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(command);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    for (code, meaning) in crate::exit::meanings() {
        page.extend_from_slice(format!(".TP\n{code}\n{}\n", roff_text(meaning)).as_bytes());
    }
    let history = roff_text("$XDG_STATE_HOME/fleetgate/history.sqlite");
    page.extend_from_slice(
        format!(
            ".SH FILES\n.TP\nfleetgate.toml\nBeside the flake: hosts, tags, health checks, rollout settings \
             (docs/deploy.md).\n.TP\n{history}\nThe deploy history (default \\fI~/.local/state/fleetgate/history.sqlite\\fR): \
             see \\fBfleetgate history\\fR.\n"
        )
        .as_bytes(),
    );
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// Text for a roff paragraph: backslashes and hyphens escaped, no line starting with a control character.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) { format!("\\&{escaped}") } else { escaped }
}

fn write_stdout(bytes: &[u8]) -> miette::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new("cannot write to stdout").caused_by(e))?;
    Ok(ExitCode::SUCCESS)
}
