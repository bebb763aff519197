//! Differential test: our `fnmatch` against the C library's `fnmatch(3)`
//! with flags 0 (what libkmod calls), on hand-picked and generated
//! pattern/text pairs. Needs a C compiler (`cc`), which the build machine has
//! anyway; without one the test fails loudly rather than passing unchecked.

use std::io::Write;
use std::process::{Command, Stdio};

use fleetgate_kmod::fnmatch::fnmatch_bytes;

const HELPER: &str = r#"
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>

/* Reads NUL-terminated pattern/text pairs, prints 1 (match) or 0 per pair. */
static char *read_field(void) {
    size_t cap = 64, len = 0;
    char *buf = malloc(cap);
    int c;
    while ((c = getchar()) != EOF) {
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
        if (c == 0) { buf[len] = 0; return buf; }
        buf[len++] = (char)c;
    }
    free(buf);
    return NULL;
}

int main(void) {
    for (;;) {
        char *p = read_field();
        if (!p) break;
        char *t = read_field();
        if (!t) return 2;
        putchar(fnmatch(p, t, 0) == 0 ? '1' : '0');
        free(p);
        free(t);
    }
    return 0;
}
"#;

fn glibc_fnmatch(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<bool> {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("fnmatch_helper.c");
    let bin = dir.path().join("fnmatch_helper");
    std::fs::write(&src, HELPER).expect("write helper source");
    let status = Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("this test needs a C compiler named `cc` to build its fnmatch(3) oracle");
    assert!(status.success(), "compiling the fnmatch(3) helper failed");

    let mut child =
        Command::new(&bin).env("LC_ALL", "C").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run helper");
    let mut input = Vec::new();
    for (p, t) in pairs {
        input.extend_from_slice(p);
        input.push(0);
        input.extend_from_slice(t);
        input.push(0);
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("helper output");
    writer.join().expect("writer thread").expect("write pairs");
    assert!(out.status.success(), "helper failed: {:?}", out.status);
    assert_eq!(out.stdout.len(), pairs.len(), "one answer per pair");
    out.stdout.iter().map(|&b| b == b'1').collect()
}

fn hand_picked() -> Vec<(&'static str, &'static str)> {
    vec![
        ("", ""),
        ("*", ""),
        ("virtio:d00000002v*", "virtio:d00000002v00001AF4"),
        ("pci:v*d*sv*sd*bc01sc08i02*", "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"),
        ("usb:v13FDp3940d0[0-2]*dc*", "usb:v13FDp3940d0100dc00"),
        ("[!a]", "b"),
        ("[^a]", "a"),
        ("[]]", "]"),
        ("[]-a]", "_"),
        ("[!]]", "]"),
        ("[a-]", "-"),
        ("[", "["),
        ("[ab", "[ab"),
        ("[ab", "a"),
        ("[a-", "a"),
        ("[a-", "[a-"),
        ("a\\", "a"),
        ("a\\", "a\\"),
        ("\\*", "*"),
        ("[\\]]", "]"),
        ("[\\", "["),
        ("[[:alpha:]]", "q"),
        ("[[:alpha:]]", "1"),
        ("[[:bogus:]]", "a"),
        ("[[:bogus:]", "["),
        ("[[:a]", ":"),
        ("[[:alpha:]", "["),
        ("[[=a=]]", "a"),
        ("[[.a.]]", "a"),
        ("[[.a.]-c]", "b"),
        ("[z-a]", "m"),
        ("*[", "x["),
        ("*a[", "aa["),
        ("[*]", "*"),
        ("[?]", "x"),
        ("*?*?", "ab"),
        ("*[!a]", ""),
    ]
}

fn generated(count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let pattern_atoms: &[&[u8]] = &[
        b"a",
        b"b",
        b"c",
        b"-",
        b"_",
        b"]",
        b"[",
        b"!",
        b"^",
        b"*",
        b"?",
        b"\\",
        b":",
        b"=",
        b".",
        b"[!",
        b"[^",
        b"[]",
        b"[a-c]",
        b"[:alpha:]",
        b"[[:digit:]]",
        b"[[:x",
        b"[=a=]",
        b"[.b.]",
        b"a-",
        b"z",
        b"0",
        b"9",
    ];
    let text_atoms: &[&[u8]] =
        &[b"a", b"b", b"c", b"-", b"_", b"]", b"[", b"!", b"^", b"*", b"\\", b":", b"0", b"9", b"z", b".", b"="];
    // A fixed seed, so a failure reproduces.
    let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    (0..count)
        .map(|_| {
            let mut p = Vec::new();
            for _ in 0..rng.usize(..10) {
                p.extend_from_slice(pattern_atoms[rng.usize(..pattern_atoms.len())]);
            }
            let mut t = Vec::new();
            for _ in 0..rng.usize(..6) {
                t.extend_from_slice(text_atoms[rng.usize(..text_atoms.len())]);
            }
            (p, t)
        })
        .collect()
}

#[test]
fn fnmatch_agrees_with_the_c_library() {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
        hand_picked().into_iter().map(|(p, t)| (p.as_bytes().to_vec(), t.as_bytes().to_vec())).collect();
    pairs.extend(generated(60_000));
    let expected = glibc_fnmatch(&pairs);

    let mut mismatches = Vec::new();
    let mut matched = 0usize;
    for ((p, t), want) in pairs.iter().zip(&expected) {
        matched += usize::from(*want);
        if fnmatch_bytes(p, t) != *want {
            mismatches.push(format!(
                "pattern {:?} text {:?}: libc says {want}",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(t)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} pairs disagree with fnmatch(3):\n{}",
        mismatches.len(),
        pairs.len(),
        mismatches.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
    // The corpus must exercise both outcomes to mean anything.
    assert!(matched > 1000 && matched < pairs.len() - 1000, "{matched} matches");
}
