//! `fleetgate channel …`: argument parsing and error reporting (miette) for the channel
//! front ends. Every decision lives in the library modules.
//!
//! Exit codes: 0 success (including "already at" / "already contains" and skipped Hydra events), 1 a
//! promotion was attempted and failed or was refused, 2 bad input or configuration
//! (nothing attempted; see [`ChannelError::exit_code`]; clap's usage errors are 2 too).
//! With `--json`, every command prints one JSON document on stdout — also when it
//! fails — and keeps the human-readable report on stderr. `serve` is not here: the HTTP
//! service is its own crate (`fleetgate-server`), whose CLI adds it to these commands.
//!
//! [`args`] holds the options and their conversion into the library's configuration,
//! [`output`] what is printed.
use std::io::Write;
use std::process::ExitCode;

use fleetgate_nix::{Nix, PublicKey};

use crate::error::ChannelError;
use crate::hydra::event::HydraEvent;
use crate::hydra::hook::{self, HookConfig, HookOutcome};
use crate::manifest::SignedManifest;
use crate::promote::{PromoteRequest, promote};
use crate::sync::SyncRequest;

mod args;
mod output;
mod progress;

pub use args::{ChannelOpts, channel_config, nix_for};
use args::{HydraHookArgs, KeygenArgs, PromoteArgs, SyncArgs, VerifyArgs, public_key_arg};
pub use output::{EXIT_USAGE, report, usage_error, usage_error_json, wants_json};
use output::{error_json, outcome_json, print_json, print_outcome, print_skip, report_sync};
use progress::Display;

/// Arguments of `fleetgate channel`.
#[derive(Debug, clap::Args)]
pub struct ChannelArgs {
    #[command(subcommand)]
    command: ChannelCommand,
}

/// The commands of `fleetgate channel` (flattened into a larger command set by
/// `fleetgate-server`, which adds `serve`).
#[derive(Debug, clap::Subcommand)]
pub enum ChannelCommand {
    /// Promote one host: closure to the cache (verified), branch nixos-tested-<host>
    /// fast-forwarded, signed manifest published.
    Promote(PromoteArgs),
    /// Drop-in command for Hydra's RunCommand plugin (reads $HYDRA_JSON).
    HydraHook(HydraHookArgs),
    /// Promote every host whose system at COMMIT is already in the cache.
    Sync(SyncArgs),
    /// Make a Nix signing key pair (nix-store --generate-binary-cache-key).
    Keygen(KeygenArgs),
    /// Verify a signed manifest document and print the manifest.
    Verify(VerifyArgs),
}

/// Runs `fleetgate channel`; returns the process exit code.
pub fn run(args: ChannelArgs) -> ExitCode {
    run_with_output(args, &mut std::io::stdout())
}

/// [`run`], printing results to `out` instead of stdout (progress and errors still go
/// to stderr).
pub fn run_with_output(args: ChannelArgs, out: &mut dyn Write) -> ExitCode {
    run_command(args.command, out)
}

/// Runs one command of `fleetgate channel`, printing results to `out`.
pub fn run_command(command: ChannelCommand, out: &mut dyn Write) -> ExitCode {
    let json = match &command {
        ChannelCommand::Promote(a) => a.json,
        ChannelCommand::HydraHook(a) => a.json,
        ChannelCommand::Sync(a) => a.json,
        ChannelCommand::Keygen(a) => a.json,
        ChannelCommand::Verify(a) => a.json,
    };
    let result = match command {
        ChannelCommand::Promote(a) => run_promote(a, out),
        ChannelCommand::HydraHook(a) => run_hydra_hook(a, out),
        ChannelCommand::Sync(a) => run_sync(a, out),
        ChannelCommand::Keygen(a) => run_keygen(a, out),
        ChannelCommand::Verify(a) => run_verify(a, out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                print_json(out, &error_json(&e));
            }
            report(e)
        }
    }
}

fn run_promote(a: PromoteArgs, out: &mut dyn Write) -> Result<ExitCode, ChannelError> {
    let req = PromoteRequest::parse(&a.host, &a.commit, &a.system, a.build.as_deref(), a.force)?;
    let cfg = channel_config(&a.opts)?;
    let nix = nix_for(&a.opts)?;
    let outcome = promote(&nix, &cfg, &req, &Display::new(a.json))?;
    if a.json {
        print_json(out, &outcome_json(&outcome));
    } else {
        print_outcome(out, &outcome);
    }
    Ok(ExitCode::SUCCESS)
}

fn run_hydra_hook(a: HydraHookArgs, out: &mut dyn Write) -> Result<ExitCode, ChannelError> {
    let event = HydraEvent::read(&a.event)?;
    let mut hook_cfg = HookConfig::new(&a.job_pattern)?;
    hook_cfg.project = a.project;
    hook_cfg.jobset = a.jobset;
    hook_cfg.hydra_url = a.hydra_url;
    hook_cfg.hydra_db = a.hydra_db;
    // Decide before touching Nix or git: skipped events need neither.
    if let hook::Decision::Skip(reason) = hook::decide(&event, &hook_cfg)? {
        print_skip(out, a.json, &reason);
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = channel_config(&a.opts)?;
    let nix = nix_for(&a.opts)?;
    match hook::run(&nix, &cfg, &hook_cfg, &event, &Display::new(a.json))? {
        HookOutcome::Skipped(reason) => print_skip(out, a.json, &reason),
        HookOutcome::Promoted(o) if a.json => print_json(out, &outcome_json(&o)),
        HookOutcome::Promoted(o) => print_outcome(out, &o),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_sync(a: SyncArgs, out: &mut dyn Write) -> Result<ExitCode, ChannelError> {
    let commit = crate::commit::CommitId::parse(&a.commit)?;
    let cfg = channel_config(&a.opts)?;
    let nix = nix_for(&a.opts)?;
    let req = SyncRequest {
        flake: a.flake,
        commit: commit.clone(),
        hosts: (!a.hosts.is_empty()).then_some(a.hosts),
        hosts_attr: a.hosts_attr,
        system_attr: a.system_attr,
    };
    let results = crate::sync::run(&nix, &cfg, &req, &Display::new(a.json))?;
    Ok(report_sync(out, a.json, &commit, results))
}

fn run_keygen(a: KeygenArgs, out: &mut dyn Write) -> Result<ExitCode, ChannelError> {
    for p in [&a.secret_key_file, &a.public_key_file] {
        if p.exists() {
            return Err(ChannelError::Config(format!("{} already exists; refusing to overwrite a key", p.display())));
        }
    }
    fleetgate_nix::keys::check_key_name(&a.name).map_err(|e| ChannelError::Config(format!("--name: {e}")))?;
    let nix = Nix::detect().map_err(ChannelError::Nix)?;
    nix.generate_key_pair(&a.name, &a.secret_key_file, &a.public_key_file).map_err(ChannelError::Nix)?;
    let pk = PublicKey::from_file(&a.public_key_file).map_err(|e| ChannelError::Nix(e.into()))?;
    if a.json {
        let doc = serde_json::json!({
            "result": "generated",
            "public_key": pk.to_string(),
            "secret_key_file": a.secret_key_file,
            "public_key_file": a.public_key_file,
        });
        print_json(out, &doc);
    } else {
        let _ = writeln!(out, "{pk}");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_verify(a: VerifyArgs, out: &mut dyn Write) -> Result<ExitCode, ChannelError> {
    let pk = public_key_arg(&a.public_key)?;
    let bytes = fleetgate_nix::read_small_file(&a.manifest, crate::manifest::MAX_DOCUMENT)
        .map_err(|source| ChannelError::InputFile { what: "the manifest", source })?;
    let m = SignedManifest::parse(&bytes)?.verify(&pk)?;
    if a.json {
        print_json(out, &serde_json::json!({ "result": "verified", "key": pk.name(), "manifest": m }));
    } else {
        let text = serde_json::to_string_pretty(&m).map_err(|e| ChannelError::ManifestFormat(e.to_string()))?;
        let _ = writeln!(out, "{text}");
    }
    Ok(ExitCode::SUCCESS)
}
