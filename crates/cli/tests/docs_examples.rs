//! The documentation's runnable examples, run as written: every fenced `sh`
//! block of README.md and docs/*.md preceded by a `<!-- runnable … -->` line is
//! run command by command on one lab of its own, and each command must exit 0.
//! So the examples cannot rot silently.
//!
//! What is adapted, and nothing else: the lab is this test's own (in
//! `$TMPDIR/fleetgate-lab-test-*`, found through `FLEETGATE_LAB_DIR`, and the
//! default lab's path `/var/lib/fleetgate-lab/default` in a command is replaced
//! by it), and `target/debug/` is where cargo built this test's binaries.
//! Commands run in bash from a scratch directory; `#` comments are dropped and
//! `\` continues a command on the next line.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The default lab directory the docs name (`fleetgate_lab::layout::DEFAULT_LAB_DIR`).
const DOCS_LAB_DIR: &str = "/var/lib/fleetgate-lab/default";

/// The repository's root (two levels above this crate).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The commands of every block marked runnable in `text`, in order.
fn runnable_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if !line.trim_start().starts_with("<!-- runnable") {
            continue;
        }
        assert_eq!(lines.next().map(str::trim), Some("```sh"), "a runnable marker must precede a ```sh block");
        let mut pending = String::new();
        for line in lines.by_ref().take_while(|l| l.trim() != "```") {
            let code = strip_comment(line);
            let (code, continues) = match code.trim_end().strip_suffix('\\') {
                Some(head) => (head, true),
                None => (code.trim_end(), false),
            };
            pending.push_str(code.trim());
            if continues {
                pending.push(' ');
            } else if !pending.trim().is_empty() {
                commands.push(std::mem::take(&mut pending).trim().to_owned());
            }
        }
    }
    commands
}

/// `line` without a trailing `# comment` (a `#` after whitespace, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

/// Brings the lab down if a command failed before the block's own `down`.
struct Teardown {
    lab_bin: PathBuf,
    lab: PathBuf,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if self.lab.join("lab.json").exists() {
            let _ = Command::new(&self.lab_bin).arg("--lab").arg(&self.lab).arg("down").status();
        }
    }
}

#[test]
fn parsing_runnable_blocks() {
    let text =
        "intro\n```sh\nnot runnable\n```\n<!-- runnable: x -->\n```sh\na --x   # say\nb 'c # d' \\\n    --e\n\n```\n";
    assert_eq!(runnable_commands(text), ["a --x", "b 'c # d' --e"]);
}

#[test]
fn the_docs_runnable_examples_run_on_a_lab() {
    let mut commands = Vec::new();
    let mut docs: Vec<PathBuf> = vec![repo().join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    docs.extend(pages);
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("read");
        commands.extend(runnable_commands(&text).into_iter().map(|c| (doc.clone(), c)));
    }
    let readme_lab = ["fleetgate-lab up", "fleetgate-lab status", "fleetgate-lab ssh", "fleetgate-lab reboot"];
    for wanted in readme_lab.iter().chain(&["fleetgate facts", "fleetgate check", "fleetgate-lab down"]) {
        assert!(commands.iter().any(|(_, c)| c.contains(wanted)), "no runnable example runs `{wanted}`");
    }

    let bin_dir = Path::new(env!("CARGO_BIN_EXE_fleetgate")).parent().expect("bin dir").to_owned();
    let lab_bin = bin_dir.join("fleetgate-lab");
    assert!(lab_bin.exists(), "build fleetgate-lab first: cargo build -p fleetgate-lab");
    let tmp = tempfile::Builder::new().prefix("fleetgate-lab-test-").tempdir().expect("tmp");
    // Lets `scripts/test` tell this live test's lab from a killed test's.
    std::fs::write(tmp.path().join("owner.pid"), std::process::id().to_string()).expect("owner");
    let lab = tmp.path().join("lab");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(work.join("target")).expect("mkdir");
    std::os::unix::fs::symlink(&bin_dir, work.join("target/debug")).expect("symlink");
    let _teardown = Teardown { lab_bin, lab: lab.clone() };

    for (doc, command) in &commands {
        let command = command.replace(DOCS_LAB_DIR, &lab.display().to_string());
        let out = Command::new("bash")
            .args(["--norc", "-o", "pipefail", "-c", &command])
            .current_dir(&work)
            .env("FLEETGATE_LAB_DIR", &lab)
            .env("NIX_CONFIG", "substituters =")
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{}: `{command}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            doc.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if command.contains("is-system-running") {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "running");
        }
    }
    assert!(!lab.join("lab.json").exists(), "the examples end with the lab down");
}
