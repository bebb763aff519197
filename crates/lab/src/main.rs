//! `fleetgate-lab`: bring a lab fleet up, drive it, bring it down. Inside a lab
//! host the same binary answers as `systemctl`, `reboot`, `bootctl`,
//! `grub-reboot`… (see `fleetgate_lab::userland`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleetgate_lab::layout::DEFAULT_LAB_DIR;
use fleetgate_lab::{HostSpec, Lab, LabDir, LabSpec, Power, init, install, status_table, userland, vmm};

/// A lab fleet of NixOS-shaped hosts for fleetgate's tests and demo.
#[derive(Debug, Parser)]
#[command(name = "fleetgate-lab", version)]
struct Cli {
    /// The lab's directory.
    #[arg(long, global = true, env = "FLEETGATE_LAB_DIR", default_value = DEFAULT_LAB_DIR)]
    lab: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring a lab up: network, disks, hardware, first generation, boot.
    Up {
        /// Number of hosts (host1…hostN cycling through virtio, NVMe, SATA).
        #[arg(long, conflicts_with = "host")]
        hosts: Option<usize>,
        /// A host as NAME[=[vm,]BUS[,BOOTLOADER]], e.g. web1=virtio,grub, or
        /// vps1=vm,virtio,systemd-boot for a QEMU machine. Repeatable.
        #[arg(long)]
        host: Vec<String>,
    },
    /// Remove every namespace, mount, loop device and process of the lab.
    Down,
    /// Power state, boot and generation of each host.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Open an SSH session to a host (real ssh, the lab's own ssh_config).
    Ssh {
        host: String,
        /// Command to run instead of a shell.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Reboot a host cleanly and wait for the boot to settle.
    Reboot { host: String },
    /// Cut a host's power and turn it on again (works on a hung host).
    PowerCycle { host: String },
    /// Turn a host off.
    PowerOff { host: String },
    /// Turn a host on.
    PowerOn { host: String },
    /// Print a host's console log.
    Console { host: String },
    /// Build the fixture systems of the given hosts (all if none) and print them.
    Build { hosts: Vec<String> },
    /// Build the VM guest's Debian root once for this machine (cached; `up`
    /// builds it when a VM host needs it) and print where it is.
    VmImage,
    /// Build the kexec installer tarball (nixos-images' format, from Debian
    /// packages) once for this machine (cached) and print where it is.
    KexecInstaller,
    #[command(hide = true, name = "__vmm")]
    Vmm {
        #[arg(long)]
        host: String,
    },
    #[command(hide = true, name = "__vm")]
    Vm {
        #[arg(long)]
        host: String,
    },
    /// One guest connection to a loopback service (QEMU's `guestfwd` runs it).
    #[command(hide = true, name = "__forward")]
    Forward {
        #[arg(long)]
        to: std::path::PathBuf,
    },
    #[command(hide = true, name = "__init")]
    Init {
        #[arg(long)]
        host: String,
        #[arg(long)]
        boot: String,
    },
    #[command(hide = true, name = "__prepare")]
    Prepare {
        #[arg(long)]
        host: String,
        #[arg(long)]
        system: String,
    },
    #[command(hide = true, name = "__install")]
    Install {
        #[arg(long)]
        host: String,
        #[arg(long)]
        system: String,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_owned()).unwrap_or_default();
    if let Some(code) = userland::dispatch(&argv0, &args[1..]) {
        return code;
    }
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Vmm { .. }
            | Command::Vm { .. }
            | Command::Forward { .. }
            | Command::Init { .. }
            | Command::Prepare { .. }
            | Command::Install { .. }
    ) {
        forward_interrupts(&LabDir::new(&cli.lab));
    }
    let dir = LabDir::new(&cli.lab);
    match run(dir, cli.command) {
        Ok(code) => code,
        // A reader that went away (`fleetgate-lab status | head`) is not an
        // error worth a word, and certainly not a panic.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fleetgate-lab: error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Our children run in process groups of their own (so a timeout reaches
/// their children too), which keeps Ctrl-C from reaching them: take them down
/// ourselves when interrupted. What `up` had made stays; `down` removes it.
fn forward_interrupts(dir: &LabDir) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else { return };
    let down = dir.command("down");
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            fleetgate_lab::process::kill_running();
            eprintln!("fleetgate-lab: interrupted; what was made so far stays: `{down}` removes it");
            std::process::exit(130);
        }
    });
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn progress(line: &str) {
    eprintln!("fleetgate-lab: {line}");
}

fn run(dir: LabDir, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up { hosts, host } => {
            let spec = if host.is_empty() {
                LabSpec::default_fleet(hosts.unwrap_or(3))?
            } else {
                LabSpec::new(host.iter().map(|h| HostSpec::parse(h)).collect::<Result<_, _>>()?)?
            };
            let lab = Lab::up(dir, &spec, &mut progress)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "lab up in {}", lab.dir().root().display())?;
            writeln!(out, "  ssh:   ssh -F {} <host>", lab.dir().ssh_config().display())?;
            writeln!(out, "  flake: {}", lab.fleet_dir().display())?;
            drop(out);
            print_status(&lab)?;
        }
        Command::Down => {
            Lab::down(&dir, &mut progress)?;
            writeln!(std::io::stdout().lock(), "lab in {} is down", dir.root().display())?;
        }
        Command::Status { json } => {
            let lab = Lab::open(dir)?;
            if json {
                writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&statuses(&lab)?)?)?;
            } else {
                print_status(&lab)?;
            }
        }
        Command::Ssh { host, command } => {
            let lab = Lab::open(dir)?;
            lab.host(&host)?;
            let status = lab.ssh_command(&host).args(&command).status().context("running ssh")?;
            return Ok(ExitCode::from(status.code().unwrap_or(255) as u8));
        }
        Command::Reboot { host } => print_one(&Lab::open(dir)?.reboot(&host)?)?,
        Command::PowerCycle { host } => print_one(&Lab::open(dir)?.power_cycle(&host)?)?,
        Command::PowerOff { host } => print_one(&Lab::open(dir)?.power_off(&host)?)?,
        Command::PowerOn { host } => print_one(&Lab::open(dir)?.power_on(&host)?)?,
        Command::Console { host } => std::io::stdout().lock().write_all(Lab::open(dir)?.console(&host)?.as_bytes())?,
        Command::Build { hosts } => {
            let lab = Lab::open(dir)?;
            let names: Vec<String> =
                if hosts.is_empty() { lab.hosts().map(|h| h.name().to_owned()).collect() } else { hosts };
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut out = std::io::stdout().lock();
            for (host, path) in lab.build(&refs)? {
                writeln!(out, "{host}\t{path}")?;
            }
        }
        Command::VmImage => {
            let image = fleetgate_lab::vm::image::ensure(&mut progress)?;
            writeln!(std::io::stdout().lock(), "{}", image.tree().display())?;
        }
        Command::KexecInstaller => {
            let kernel = fleetgate_lab::vm::debian_first::DebianKernel::of_this_machine()?;
            let tarball = fleetgate_lab::vm::kexec_installer::ensure(&kernel, &mut progress)?;
            writeln!(std::io::stdout().lock(), "{}", tarball.display())?;
        }
        Command::Vmm { host } => vmm::run(&dir, &host)?,
        Command::Vm { host } => fleetgate_lab::vm::supervisor::run(&dir, &host)?,
        // Its stderr is the guest's connection: a failure only closes it.
        Command::Forward { to } => {
            return Ok(if fleetgate_lab::vm::forward::run(&to).is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Init { host, boot } => return Ok(init::run(&dir, &host, init::Mode::Boot { toplevel: boot })),
        Command::Prepare { host, system } => {
            let key = std::env::var("FLEETGATE_LAB_CLIENT_KEY").context("FLEETGATE_LAB_CLIENT_KEY is not set")?;
            install::prepare(&dir, &host, &system, &key)?;
        }
        Command::Install { host, system } => return Ok(init::run(&dir, &host, init::Mode::Install { system })),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_one(status: &fleetgate_lab::HostStatus) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}\t{:?}\tboot {}\t{}",
        status.host,
        status.power,
        status.boots,
        status.reason.clone().unwrap_or_default()
    )
}

/// A host's status with what it runs now beside what it booted.
#[derive(serde::Serialize)]
struct StatusWithCurrent {
    #[serde(flatten)]
    status: fleetgate_lab::HostStatus,
    /// `/run/current-system`, if the host could be asked.
    current: Option<String>,
}

fn statuses(lab: &Lab) -> anyhow::Result<Vec<StatusWithCurrent>> {
    lab.hosts()
        .map(|host| {
            let status = lab.status(host.name())?;
            let current = if status.power == Power::Running { lab.current_system(host.name()) } else { None };
            Ok(StatusWithCurrent { status, current })
        })
        .collect()
}

fn print_status(lab: &Lab) -> anyhow::Result<()> {
    let rows: Vec<status_table::Row> = lab
        .hosts()
        .zip(statuses(lab)?)
        .map(|(host, s)| status_table::Row {
            host: host.name().to_owned(),
            machine: host.spec.machine.as_str().to_owned(),
            address: match host.ssh_port {
                Some(port) => format!("{}:{port}", host.address),
                None => host.address.clone(),
            },
            disk: host.spec.disk.as_str().to_owned(),
            bootloader: host.spec.bootloader.as_str().to_owned(),
            power: match s.status.power {
                Power::Running => "running".to_owned(),
                other => format!("{other:?}").to_lowercase(),
            },
            booted: s.status.toplevel.clone(),
            current: s.current,
            reason: s.status.reason,
        })
        .collect();
    std::io::stdout().lock().write_all(status_table::render(&rows).as_bytes())?;
    Ok(())
}
