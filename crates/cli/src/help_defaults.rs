//! The defaults `--help` shows for options whose value, when the command line
//! does not give it, comes from `fleetgate.toml` and then from the library's
//! own defaults (`fleetgate_deploy::DeployOptions::default()`). clap's
//! `default_value` cannot say that: it would make the flag always present and
//! hide `fleetgate.toml`. So the help text of those options gets
//! `[default: …; fleetgate.toml: …]`, read from the same `Default` the run
//! starts from — never restated by hand.

use clap::Command;
use fleetgate_deploy::DeployOptions;

/// One option whose default comes from the library.
struct Shown {
    /// The argument's id (the field name in the clap struct).
    id: &'static str,
    /// The default, as the user would write it.
    value: String,
    /// Where `fleetgate.toml` sets it.
    config_key: &'static str,
}

fn deploy_defaults() -> Vec<Shown> {
    let d = DeployOptions::default();
    let secs = |t: std::time::Duration| t.as_secs().to_string();
    vec![
        Shown { id: "strategy", value: d.strategy.as_str().to_owned(), config_key: "deploy.strategy" },
        Shown { id: "max_parallel", value: d.max_parallel.to_string(), config_key: "deploy.max_parallel" },
        Shown {
            id: "max_failures",
            value: d.max_failures.map_or_else(|| "no limit".to_owned(), |n| n.to_string()),
            config_key: "deploy.max_failures",
        },
        Shown { id: "wave_size", value: d.wave_size.to_string(), config_key: "deploy.wave_size" },
        Shown { id: "confirm_timeout", value: secs(d.timeouts.confirm), config_key: "deploy.confirm_timeout_secs" },
        Shown { id: "reboot_timeout", value: secs(d.timeouts.reboot), config_key: "deploy.reboot_timeout_secs" },
    ]
}

/// `cli` with the defaults of its `deploy` options in their help.
///
/// # Panics
/// When an option named here is gone from `deploy` (a unit test runs this).
#[must_use]
pub fn show(cli: Command) -> Command {
    cli.mut_subcommand("deploy", |mut deploy| {
        for shown in deploy_defaults() {
            deploy = deploy.mut_arg(shown.id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                let suffix = format!("[default: {}; fleetgate.toml: {}]", shown.value, shown.config_key);
                let long = arg.get_long_help().map(ToString::to_string);
                let arg = arg.help(format!("{help} {suffix}"));
                match long {
                    Some(long) => arg.long_help(format!("{long}\n\n{suffix}")),
                    None => arg,
                }
            });
        }
        deploy
    })
}
