//! `systemctl` for lab hosts: the verbs fleetgate and the fixture's
//! `switch-to-configuration` use, with systemctl's exit codes (`is-active`
//! exits 3 for a unit that is not active, `is-system-running` exits 1 unless
//! `running`).

use std::path::Path;
use std::process::ExitCode;

use rustix::process::{Pid, kill_process};

use super::PowerRequest;
use super::units::{self, ActiveState, STATE_DIR, UNIT_DIR};

pub fn main(args: &[String]) -> ExitCode {
    let quiet = args.iter().any(|a| a == "-q" || a == "--quiet");
    let words: Vec<&str> = args.iter().map(String::as_str).filter(|a| !a.starts_with('-')).collect();
    let (unit_dir, state_dir) = (Path::new(UNIT_DIR), Path::new(STATE_DIR));
    let Some((verb, rest)) = words.split_first() else {
        return list_units(unit_dir, state_dir, false);
    };
    let names: Vec<String> = rest.iter().map(|n| units::unit_name(n)).collect();
    match *verb {
        "is-active" => {
            let mut all = true;
            for unit in &names {
                let state = units::state(state_dir, unit);
                all &= state == ActiveState::Active;
                if !quiet {
                    println!("{}", state.as_str());
                }
            }
            if all && !names.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(3) }
        }
        "is-failed" => {
            let any = names.iter().any(|u| units::state(state_dir, u) == ActiveState::Failed);
            for unit in &names {
                if !quiet {
                    println!("{}", units::state(state_dir, unit).as_str());
                }
            }
            if any { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        "is-system-running" => match units::system_state(unit_dir, state_dir) {
            Ok(state) => {
                if !quiet {
                    println!("{state}");
                }
                if state == "running" { ExitCode::SUCCESS } else { ExitCode::from(1) }
            }
            Err(err) => fail(&format!("cannot read units: {err}")),
        },
        "start" | "restart" | "try-restart" | "reload-or-restart" | "reload" => {
            let mut code = ExitCode::SUCCESS;
            for unit in &names {
                match units::start(unit_dir, state_dir, unit) {
                    Ok(ActiveState::Active) => {}
                    Ok(_) => {
                        eprintln!("Job for {unit} failed because the control process exited with error code.");
                        eprintln!("See \"systemctl status {unit}\" and \"journalctl -xeu {unit}\" for details.");
                        code = ExitCode::from(1);
                    }
                    Err(err) => {
                        eprintln!("Failed to {verb} {unit}: {err}");
                        code = ExitCode::from(5);
                    }
                }
            }
            code
        }
        "stop" => set_all(state_dir, &names, ActiveState::Inactive),
        "reset-failed" => {
            let targets = if names.is_empty() { units::declared(unit_dir).unwrap_or_default() } else { names };
            let failed: Vec<String> =
                targets.into_iter().filter(|u| units::state(state_dir, u) == ActiveState::Failed).collect();
            set_all(state_dir, &failed, ActiveState::Inactive)
        }
        "daemon-reload" | "daemon-reexec" => ExitCode::SUCCESS,
        "reboot" => power(PowerRequest::Reboot),
        "poweroff" | "halt" => power(PowerRequest::PowerOff),
        "list-units" => list_units(unit_dir, state_dir, args.iter().any(|a| a == "--failed")),
        "status" => {
            for unit in &names {
                let state = units::state(state_dir, unit);
                println!("● {unit}\n     Active: {} (exited)", state.as_str());
            }
            if names.iter().all(|u| units::state(state_dir, u) == ActiveState::Active) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        "show" => {
            for unit in &names {
                println!("ActiveState={}", units::state(state_dir, unit).as_str());
            }
            ExitCode::SUCCESS
        }
        other => {
            fail(&format!("unknown command verb '{other}' (fleetgate-lab's systemctl implements what lab hosts need)"))
        }
    }
}

fn set_all(state_dir: &Path, names: &[String], state: ActiveState) -> ExitCode {
    for unit in names {
        if let Err(err) = units::set_state(state_dir, unit, state) {
            return fail(&format!("cannot record state of {unit}: {err}"));
        }
    }
    ExitCode::SUCCESS
}

fn list_units(unit_dir: &Path, state_dir: &Path, failed_only: bool) -> ExitCode {
    let declared = match units::declared(unit_dir) {
        Ok(declared) => declared,
        Err(err) => return fail(&format!("cannot read units: {err}")),
    };
    for unit in declared {
        let state = units::state(state_dir, &unit);
        if !failed_only || state == ActiveState::Failed {
            let sub = if state == ActiveState::Active { "exited" } else { state.as_str() };
            println!("{unit} loaded {} {sub}", state.as_str());
        }
    }
    ExitCode::SUCCESS
}

/// Asks PID 1 (the lab's init) to reboot or power off, as systemd's
/// `reboot`/`poweroff` do; returns at once, the connection then drops.
pub fn power(request: PowerRequest) -> ExitCode {
    match Pid::from_raw(1).map(|init| kill_process(init, request.signal())) {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(err)) => fail(&format!("cannot signal init: {err}")),
        None => fail("no init process"),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("systemctl: {message}");
    ExitCode::from(1)
}
