//! Deterministic fuzzing: thousands of mutated images, all read to the end.
//! The reader must return (entries or a typed error) and never panic. The
//! same harness, `fleetgate_initrd::fuzzing::read_everything`, runs under
//! cargo-fuzz in `fuzz/fuzz_targets/reader.rs`. Fixed seeds, so a failure
//! reproduces.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod support;

use fastrand::Rng;
use fleetgate_initrd::Compression;
use fleetgate_initrd::fuzzing::read_everything;
use support::{ALL_COMPRESSIONS, Cpio, compress, early_cpio, main_cpio};

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![main_cpio(), Cpio::crc().file("f", b"data").symlink("l", "f").finish()];
    for c in ALL_COMPRESSIONS {
        let mut image = early_cpio();
        image.extend([0u8; 4]);
        image.extend(compress(c, &main_cpio()));
        seeds.push(image);
    }
    seeds
}

const TOKENS: [&[u8]; 8] = [
    b"070701",
    b"070702",
    b"TRAILER!!!\0",
    b"ffffffff",
    b"00000000",
    b"\x28\xb5\x2f\xfd",
    b"\x02\x21\x4c\x18",
    b"\0\0\0\0",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..rng.usize(1..=4) {
        if d.is_empty() {
            d.push(0);
        }
        let at = rng.usize(..d.len());
        match rng.usize(..6) {
            0 => d[at] ^= 1 << rng.u32(..8),
            1 => d[at] = rng.u8(..),
            2 => d.truncate(at),
            3 => {
                let t = TOKENS[rng.usize(..TOKENS.len())];
                let end = (at + t.len()).min(d.len());
                d.splice(at..end, t.iter().copied());
            }
            4 => {
                let len = rng.usize(..16).min(d.len() - at);
                let copy = d[at..at + len].to_vec();
                let to = rng.usize(..d.len());
                d.splice(to..to, copy);
            }
            _ => {
                let end = (at + rng.usize(1..=8)).min(d.len());
                d.drain(at..end);
            }
        }
    }
    d
}

#[test]
fn mutated_images_never_panic() {
    let seeds = seeds();
    let mut rng = Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    for i in 0..20_000 {
        let seed = &seeds[i % seeds.len()];
        let input = mutate(&mut rng, seed);
        read_everything(&input);
    }
}

#[test]
fn random_bytes_and_magic_prefixes_never_panic() {
    let mut rng = Rng::with_seed(42);
    let prefixes: [&[u8]; 9] = [
        b"",
        b"070701",
        b"\x1f\x8b\x08\x00",
        b"\x28\xb5\x2f\xfd",
        b"\xfd7zXZ\0",
        b"\x5d\x00\x00\x80\x00",
        b"\x02\x21\x4c\x18",
        b"\x04\x22\x4d\x18",
        b"BZh9",
    ];
    for i in 0..2000 {
        let mut input = prefixes[i % prefixes.len()].to_vec();
        let len = rng.usize(..300);
        input.extend(std::iter::repeat_with(|| rng.u8(..)).take(len));
        read_everything(&input);
    }
    // Each compressor's output of random bytes (valid streams, junk inside).
    for c in ALL_COMPRESSIONS.into_iter().chain([Compression::None]) {
        let noise: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(2000).collect();
        read_everything(&compress(c, &noise));
    }
}
