//! Every finding id the code of `fleetgate-check` and `fleetgate-facts`
//! emits is documented in `docs/check.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literal passed first to `Finding::new(` or to the initrd
/// check's `error(` helper, whitespace between them ignored.
fn ids_in(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for call in ["Finding::new(", "error("] {
        let mut rest = text;
        while let Some(i) = rest.find(call) {
            rest = &rest[i + call.len()..];
            let arg = rest.trim_start();
            let Some(lit) = arg.strip_prefix('"') else { continue };
            let Some(end) = lit.find('"') else { continue };
            let id = &lit[..end];
            let well_formed = id.split_once('.').is_some_and(|(area, name)| {
                !area.is_empty()
                    && !name.is_empty()
                    && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            });
            if well_formed {
                ids.push(id.to_owned());
            }
        }
    }
    ids
}

#[test]
fn every_finding_id_is_in_docs_check_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    sources(&root.join("crates/check/src"), &mut files);
    sources(&root.join("crates/facts/src"), &mut files);
    let mut ids = BTreeSet::new();
    for file in &files {
        ids.extend(ids_in(&std::fs::read_to_string(file).expect("source")));
    }
    // The scan itself works: it finds ids of every area, across line breaks.
    for known in [
        "facts.unparsed",
        "initrd.missing-modules",
        "root.none",
        "switch.unreadable-inhibitors",
        "closure.diff",
        "hazard.stage1-hangs",
    ] {
        assert!(ids.contains(known), "{known} not found in the code: {ids:?}");
    }
    assert!(ids.len() >= 40, "{ids:?}");
    let doc = std::fs::read_to_string(root.join("docs/check.md")).expect("docs/check.md");
    let missing: Vec<&String> = ids.iter().filter(|id| !doc.contains(&format!("`{id}`"))).collect();
    assert!(missing.is_empty(), "finding ids missing from docs/check.md: {missing:?}");
}

#[test]
fn the_scan_reads_calls_across_lines() {
    let text = "Finding::new(\n    \"root.none\",\n    Severity::Error,\n); error(\"initrd.no-driver\", x); error(e); Finding::new(id, s, m)";
    assert_eq!(ids_in(text), ["root.none", "initrd.no-driver"]);
}
