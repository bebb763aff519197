//! Images made by the real tools: `cpio -o -H newc|crc`, then `gzip`,
//! `zstd`, `xz`, `xz --format=lzma`, `lz4 -l`, `lz4`, `bzip2`, concatenated
//! behind an uncompressed early archive the way `mkinitramfs` and dracut do.
//! The listing must equal `cpio -t`'s. Missing tools fail the test (CI
//! installs them: cpio zstd xz-utils lz4 bzip2 gzip).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fleetgate_initrd::{Compression, Reader};
use support::ALL_COMPRESSIONS;

fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    assert!(found, "the `{name}` tool is required for this test (apt-get install cpio zstd xz-utils lz4 bzip2 gzip)");
    Command::new(name)
}

/// Runs `cmd` with `input` on stdin, returns stdout.
fn pipe(mut cmd: Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("fleetgate-initrd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `find . | cpio -o -H <format>` in `dir`, names sorted like mkinitramfs.
fn cpio_archive(dir: &Path, format: &str) -> Vec<u8> {
    let mut names = Vec::new();
    collect(dir, Path::new("."), &mut names);
    names.sort();
    let mut list = Vec::new();
    for n in &names {
        list.extend_from_slice(n.as_os_str().as_bytes());
        list.push(b'\n');
    }
    let mut cmd = tool("cpio");
    cmd.current_dir(dir).args(["--quiet", "-o", "-H", format]);
    pipe(cmd, &list)
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    out.push(rel.to_path_buf());
    let meta = std::fs::symlink_metadata(root.join(rel)).unwrap();
    if meta.is_dir() {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            collect(root, &rel.join(e.unwrap().file_name()), out);
        }
    }
}

/// `cpio -t` of one archive, paths normalised like the reader's.
fn cpio_list(archive: &[u8]) -> BTreeSet<Vec<u8>> {
    let mut cmd = tool("cpio");
    cmd.args(["--quiet", "-t"]);
    pipe(cmd, archive)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix(b"./").unwrap_or(l).to_vec())
        .collect()
}

fn make_tree(dir: &Path, big: bool) {
    let m = dir.join("usr/lib/modules/6.9.0-test/kernel/drivers/block");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("virtio_blk.ko"), b"\x7fELF virtio_blk").unwrap();
    std::fs::write(m.join("nbd.ko.zst"), b"zstd module").unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/hostname"), b"test\n").unwrap();
    std::fs::write(dir.join("init"), b"#!/bin/sh\nexec /sbin/init\n").unwrap();
    std::os::unix::fs::symlink("usr/lib", dir.join("lib")).unwrap();
    std::fs::hard_link(dir.join("init"), dir.join("init-hardlink")).unwrap();
    std::fs::write(dir.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9")), b"x").unwrap();
    if big {
        // Over 8 MiB so that `lz4 -l` writes several chunks.
        let data: Vec<u8> = (0..9u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 29) as u8).collect();
        std::fs::write(dir.join("big.bin"), data).unwrap();
    }
}

fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    let (name, args): (&str, &[&str]) = match c {
        Compression::Gzip => ("gzip", &["-c", "-9"]),
        Compression::Zstd => ("zstd", &["-q", "-c", "-9", "-T0"]),
        Compression::Xz => ("xz", &["-c", "--check=crc32"]),
        Compression::Lzma => ("xz", &["-c", "--format=lzma"]),
        Compression::Lz4Legacy => ("lz4", &["-c", "-l", "-9"]),
        Compression::Bzip2 => ("bzip2", &["-c", "-9"]),
        other => panic!("no tool for {other}"),
    };
    let mut cmd = tool(name);
    cmd.args(args);
    pipe(cmd, data)
}

fn our_paths(image: &[u8], segment: usize) -> BTreeSet<Vec<u8>> {
    Reader::new(image)
        .entries()
        .map(|e| e.unwrap())
        .filter(|e| e.segment == segment)
        .map(|e| e.path_bytes().to_vec())
        .collect()
}

#[test]
fn tool_made_images_list_like_cpio_t() {
    let early_dir = TempDir::new("early");
    std::fs::create_dir_all(early_dir.0.join("kernel/x86/microcode")).unwrap();
    std::fs::write(early_dir.0.join("kernel/x86/microcode/AuthenticAMD.bin"), [1u8; 3000]).unwrap();
    let early = cpio_archive(&early_dir.0, "newc");
    assert_eq!(early.len() % 512, 0, "cpio pads to 512-byte blocks");

    let main_dir = TempDir::new("main");
    make_tree(&main_dir.0, false);
    let main = cpio_archive(&main_dir.0, "newc");
    let expected_main = cpio_list(&main);
    assert!(expected_main.contains(b"latin1-\xe9t\xe9".as_slice()));

    for c in ALL_COMPRESSIONS {
        let mut image = early.clone();
        image.extend(compress(c, &main));
        assert_eq!(our_paths(&image, 0), cpio_list(&early), "{c}: early segment");
        assert_eq!(our_paths(&image, 1), expected_main, "{c}: main segment");
        let entries: Vec<_> = Reader::new(image.as_slice()).entries().map(|e| e.unwrap()).collect();
        let last = entries.last().unwrap();
        assert_eq!((last.compression, last.segment_offset), (c, early.len() as u64));
        // The hard link's data is carried by one of the two entries.
        let init_sizes: u64 = entries.iter().filter(|e| e.path_bytes().starts_with(b"init")).map(|e| e.size).sum();
        assert_eq!(init_sizes, 26, "{c}");
        let lib = entries.iter().find(|e| e.path_bytes() == b"lib").unwrap();
        assert_eq!(lib.symlink_target(), Some(&b"usr/lib"[..]));
    }
}

/// `lz4` without `-l` writes the frame format, which the kernel cannot
/// unpack: the image is an error that says so, not a list of modules.
#[test]
fn tool_made_lz4_frame_image_is_an_error_naming_the_kernel() {
    let dir = TempDir::new("lz4frame");
    make_tree(&dir.0, false);
    let main = cpio_archive(&dir.0, "newc");
    let mut cmd = tool("lz4");
    cmd.args(["-c", "-9"]);
    let image = pipe(cmd, &main);
    assert_eq!(image[..4], [0x04, 0x22, 0x4d, 0x18]);
    let err =
        Reader::new(image.as_slice()).entries().find_map(Result::err).expect("an LZ4 frame image must be an error");
    assert!(matches!(err, fleetgate_initrd::Error::UnsupportedCompression { offset: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("kernel cannot unpack"), "{err}");
}

#[test]
fn tool_made_crc_archive_and_multi_chunk_lz4_legacy() {
    let dir = TempDir::new("crc");
    make_tree(&dir.0, true);
    let crc = cpio_archive(&dir.0, "crc");
    assert_eq!(&crc[..6], b"070702");
    let expected = cpio_list(&crc);
    for c in [Compression::Lz4Legacy, Compression::Zstd] {
        let image = compress(c, &crc);
        // Read every byte, so crc checksums are verified.
        let mut reader = Reader::new(image.as_slice());
        let mut seen = BTreeSet::new();
        while let Some(mut e) = reader.next_entry().unwrap() {
            seen.insert(e.entry().path_bytes().to_vec());
            if e.entry().path_bytes() == b"big.bin" {
                let n = std::io::copy(&mut e, &mut std::io::sink()).unwrap();
                assert_eq!(n, 9 << 20);
            }
        }
        assert_eq!(seen, expected, "{c}");
    }
    // The real kernel flow: modules found through the merged-usr symlink.
    let image = compress(Compression::Zstd, &crc);
    let mut scan = fleetgate_initrd::ModuleScan::new();
    for e in Reader::new(image.as_slice()).entries() {
        scan.add(&e.unwrap()).unwrap();
    }
    let found = scan.finish();
    assert_eq!(found.names.iter().collect::<Vec<_>>(), ["nbd", "virtio_blk"]);
    assert_eq!(found.kernel_versions.iter().collect::<Vec<_>>(), ["6.9.0-test"]);
}
