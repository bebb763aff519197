//! `bootctl` and the GRUB environment tools for lab hosts, writing the same
//! state the lab's firmware reads: EFI variables under
//! `/sys/firmware/efi/efivars` and `/boot/grub/grubenv`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::firmware::{efivar, grub, systemd_boot};

const EFIVARS: &str = "/sys/firmware/efi/efivars";

fn fail(tool: &str, message: &str) -> ExitCode {
    eprintln!("{tool}: {message}");
    ExitCode::from(1)
}

/// `bootctl set-oneshot ID`, `bootctl set-default ID` (`""` clears), `bootctl list`.
pub fn bootctl(args: &[String]) -> ExitCode {
    let words: Vec<&str> = args.iter().map(String::as_str).filter(|a| !a.starts_with("--")).collect();
    let efivars = Path::new(EFIVARS);
    if !efivars.is_dir() {
        return fail("bootctl", "Not booted with EFI, cannot access EFI variables.");
    }
    match words.as_slice() {
        ["set-oneshot", id] => set_var(efivars, "LoaderEntryOneShot", id),
        ["set-default", id] => set_var(efivars, "LoaderEntryDefault", id),
        ["list"] => match systemd_boot::entries(Path::new("/boot")) {
            Ok(entries) => {
                for entry in entries {
                    let counters = match entry.tries_left {
                        Some(left) => format!(" (tries left {left}, done {})", entry.tries_done),
                        None => String::new(),
                    };
                    println!("{}\t{}{counters}", entry.id, entry.title.unwrap_or_default());
                }
                ExitCode::SUCCESS
            }
            Err(err) => fail("bootctl", &format!("cannot read /boot/loader/entries: {err}")),
        },
        _ => fail("bootctl", "usage: bootctl set-oneshot ID | set-default ID | list"),
    }
}

fn set_var(efivars: &Path, name: &str, value: &str) -> ExitCode {
    let result =
        if value.is_empty() { efivar::remove(efivars, name) } else { efivar::write_string(efivars, name, value) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail("bootctl", &format!("Failed to update EFI variable '{name}': {err}")),
    }
}

fn grubenv_path(args: &[String]) -> PathBuf {
    let boot = args.iter().find_map(|a| a.strip_prefix("--boot-directory=")).unwrap_or("/boot");
    Path::new(boot).join("grub/grubenv")
}

fn set_grub_var(tool: &str, args: &[String], key: &str) -> ExitCode {
    let Some(entry) = args.iter().find(|a| !a.starts_with("--")) else {
        return fail(tool, "you must specify the menu entry");
    };
    let path = grubenv_path(args);
    let mut env = match grub::read_env(&path) {
        Ok(env) => env,
        Err(err) => return fail(tool, &format!("cannot read {}: {err}", path.display())),
    };
    env.insert(key.to_owned(), entry.clone());
    match grub::write_env(&path, &env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(tool, &err.to_string()),
    }
}

/// `grub-reboot ENTRY`: boot ENTRY once (`next_entry`).
pub fn grub_reboot(args: &[String]) -> ExitCode {
    set_grub_var("grub-reboot", args, "next_entry")
}

/// `grub-set-default ENTRY`: the saved default (`saved_entry`).
pub fn grub_set_default(args: &[String]) -> ExitCode {
    set_grub_var("grub-set-default", args, "saved_entry")
}

/// `grub-editenv FILE list | set K=V… | unset K…`.
pub fn grub_editenv(args: &[String]) -> ExitCode {
    let (Some(file), Some(command)) = (args.first(), args.get(1)) else {
        return fail("grub-editenv", "usage: grub-editenv FILE list|set NAME=VALUE...|unset NAME...");
    };
    let path = if file == "-" { PathBuf::from("/boot/grub/grubenv") } else { PathBuf::from(file) };
    let mut env = match grub::read_env(&path) {
        Ok(env) => env,
        Err(err) => return fail("grub-editenv", &format!("cannot read {}: {err}", path.display())),
    };
    match command.as_str() {
        "list" => {
            for (key, value) in &env {
                println!("{key}={value}");
            }
            return ExitCode::SUCCESS;
        }
        "set" => {
            for pair in &args[2..] {
                let Some((key, value)) = pair.split_once('=') else {
                    return fail("grub-editenv", &format!("invalid parameter {pair}"));
                };
                env.insert(key.to_owned(), value.to_owned());
            }
        }
        "unset" => {
            for key in &args[2..] {
                env.remove(key);
            }
        }
        "create" => env.clear(),
        other => return fail("grub-editenv", &format!("unknown command `{other}`")),
    }
    match grub::write_env(&path, &env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail("grub-editenv", &err.to_string()),
    }
}
