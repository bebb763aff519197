//! Lists an initramfs image and the kernel modules it holds.
//!
//! Usage: `lsinitrd [--segments] [--quiet] IMAGE`
//!
//! Prints every path (like `lsinitramfs`), then a summary of kernel versions
//! and module count. `--segments` prints one line per segment instead of the
//! paths: `segment <index> <compression> <file offset>`. `--quiet` prints only
//! the summary.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use fleetgate_initrd::{ModuleScan, Reader};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("lsinitrd: {e}");
            let mut source = std::error::Error::source(e.as_ref());
            while let Some(s) = source {
                eprint!(": {s}");
                source = s.source();
            }
            eprintln!();
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut segments = false;
    let mut quiet = false;
    let mut image = None;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--segments") => segments = true,
            Some("--quiet") => quiet = true,
            Some("-h" | "--help") => {
                println!("usage: lsinitrd [--segments] [--quiet] IMAGE");
                return Ok(());
            }
            _ => image = Some(arg),
        }
    }
    let image = image.ok_or("usage: lsinitrd [--segments] [--quiet] IMAGE")?;

    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut reader = Reader::open(&image)?;
    let mut scan = ModuleScan::new();
    let mut last_segment = None;
    let mut count = 0u64;
    while let Some(current) = reader.next_entry()? {
        let entry = current.entry();
        count += 1;
        if segments {
            if last_segment != Some(entry.segment) {
                last_segment = Some(entry.segment);
                writeln!(out, "segment {} {} {}", entry.segment, entry.compression, entry.segment_offset)?;
            }
        } else if !quiet {
            out.write_all(entry.path_bytes())?;
            out.write_all(b"\n")?;
        }
        scan.add(entry)?;
    }
    let modules = scan.finish();
    if !segments {
        let versions: Vec<&str> = modules.kernel_versions.iter().map(String::as_str).collect();
        writeln!(out, "# {count} entries; kernel versions: {}; {} modules", versions.join(" "), modules.names.len())?;
    }
    out.flush()?;
    Ok(())
}
