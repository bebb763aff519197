//! Behaviour of the reader on archives built in the test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod support;

use std::io::Read;

use fleetgate_initrd::{Compression, CpioFormat, Error, FileType, ModuleScan, Options, Reader};
use support::{ALL_COMPRESSIONS, Cpio, compress, early_cpio, main_cpio, read_all};

fn entries(image: &[u8]) -> Vec<fleetgate_initrd::Entry> {
    Reader::new(image).entries().collect::<Result<Vec<_>, _>>().expect("image should parse")
}

#[test]
fn newc_entries_have_metadata_and_normalised_paths() {
    let mut c = Cpio::newc();
    c.dir(".")
        .dir("./etc")
        .file("./etc/hostname", b"box\n")
        .symlink("./bin", "usr/bin")
        .raw_entry(b"dev/console", 0o020600, b"", None)
        .raw_entry(b"run/fifo", 0o010644, b"", None)
        .raw_entry(b"weird/\xff\xfe-name", 0o100600, b"x", None);
    let image = c.finish();
    let es = entries(&image);
    let got: Vec<(&[u8], FileType)> = es.iter().map(|e| (e.path_bytes(), e.file_type())).collect();
    assert_eq!(
        got,
        vec![
            (&b"."[..], FileType::Directory),
            (b"etc", FileType::Directory),
            (b"etc/hostname", FileType::Regular),
            (b"bin", FileType::Symlink),
            (b"dev/console", FileType::CharDevice),
            (b"run/fifo", FileType::Fifo),
            (b"weird/\xff\xfe-name", FileType::Regular),
        ]
    );
    let hostname = &es[2];
    assert_eq!(hostname.size, 4);
    assert_eq!(hostname.permissions(), 0o644);
    assert_eq!(hostname.format, CpioFormat::Newc);
    assert_eq!(hostname.segment, 0);
    assert_eq!(hostname.compression, Compression::None);
    assert_eq!(hostname.mtime, 1_700_000_000);
    assert_eq!(es[3].symlink_target(), Some(&b"usr/bin"[..]));
    assert_eq!(es[2].symlink_target(), None);
    // Non-UTF-8 names are kept byte for byte.
    assert_eq!(es[6].path_str(), None);
    assert_eq!(es[6].path().as_os_str().len(), 13);
}

#[test]
fn data_is_read_on_demand_and_skipped_otherwise() {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let image = Cpio::newc().file("a", &big).file("b", b"second file").symlink("c", "b").file("d", &big).finish();
    for compression in [Compression::None, Compression::Zstd] {
        let image = compress(compression, &image);
        let mut reader = Reader::new(image.as_slice());
        let mut seen = Vec::new();
        while let Some(mut e) = reader.next_entry().unwrap() {
            let path = e.entry().path_lossy().into_owned();
            match path.as_str() {
                // Read only part of "a": the rest must be skipped correctly.
                "a" => {
                    let mut head = [0u8; 1000];
                    e.read_exact(&mut head).unwrap();
                    assert_eq!(&head[..], &big[..1000]);
                }
                "b" => assert_eq!(e.read_to_vec(100).unwrap(), b"second file"),
                "c" => {
                    let mut t = String::new();
                    e.read_to_string(&mut t).unwrap();
                    assert_eq!(t, "b");
                }
                "d" => {
                    let mut all = Vec::new();
                    e.read_to_end(&mut all).unwrap();
                    assert_eq!(all, big);
                }
                other => panic!("unexpected {other}"),
            }
            seen.push(path);
        }
        assert_eq!(seen, ["a", "b", "c", "d"]);
    }
}

#[test]
fn read_to_vec_refuses_data_over_the_cap() {
    let image = Cpio::newc().file("f", &[7u8; 50]).finish();
    let mut reader = Reader::new(image.as_slice());
    let mut e = reader.next_entry().unwrap().unwrap();
    let err = e.read_to_vec(10).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(reader.next_entry().unwrap().is_none());
}

#[test]
fn early_cpio_followed_by_every_compression() {
    for compression in ALL_COMPRESSIONS {
        let early = early_cpio();
        let mut image = early.clone();
        image.extend(compress(compression, &main_cpio()));
        let es = entries(&image);
        let first_main = es.iter().position(|e| e.segment == 1).expect("second segment");
        assert_eq!(first_main, 4, "{compression}");
        assert!(es[..4].iter().all(|e| e.compression == Compression::None && e.segment_offset == 0));
        for e in &es[4..] {
            assert_eq!(e.compression, compression);
            assert_eq!(e.segment_offset, early.len() as u64, "{compression}");
        }
        let got: Vec<_> = es.iter().map(|e| e.path_lossy().into_owned()).collect();
        assert_eq!(
            got,
            [
                "kernel",
                "kernel/x86",
                "kernel/x86/microcode",
                "kernel/x86/microcode/GenuineIntel.bin",
                ".",
                "usr",
                "usr/lib",
                "lib",
                "usr/lib/modules",
                "usr/lib/modules/6.1.0-test",
                "usr/lib/modules/6.1.0-test/virtio_blk.ko",
                "usr/lib/modules/6.1.0-test/dm-mod.ko.xz",
                "init",
            ],
            "{compression}"
        );
        let all = read_all(&image).unwrap();
        assert_eq!(all.last().unwrap().1, b"#!/bin/sh\necho hello\n", "{compression}");
    }
}

#[test]
fn zero_padding_between_and_inside_segments() {
    // early | 512 zeros | gzip(main) | 3 zeros | zstd(archive, zeros, archive) | zeros
    let mut inner = Cpio::newc().file("one", b"1").finish();
    inner.extend([0u8; 64]);
    inner.extend(Cpio::newc().file("two", b"2").finish());
    inner.extend([0u8; 8]);
    let mut image = early_cpio();
    image.extend([0u8; 512]);
    let gz_at = image.len() as u64;
    image.extend(compress(Compression::Gzip, &main_cpio()));
    image.extend([0u8; 3]);
    let zst_at = image.len() as u64;
    image.extend(compress(Compression::Zstd, &inner));
    image.extend([0u8; 100]);

    let es = entries(&image);
    let segs: Vec<(usize, Compression, u64)> =
        es.iter().map(|e| (e.segment, e.compression, e.segment_offset)).collect();
    assert_eq!(segs.first(), Some(&(0, Compression::None, 0)));
    assert!(segs.contains(&(1, Compression::Gzip, gz_at)));
    let tail: Vec<_> = es.iter().rev().take(2).map(|e| (e.path_lossy().into_owned(), e.segment)).collect();
    assert_eq!(tail, [("two".to_owned(), 2), ("one".to_owned(), 2)]);
    assert_eq!(es.last().unwrap().segment_offset, zst_at);
    assert_eq!(es.last().unwrap().compression, Compression::Zstd);
}

#[test]
fn two_uncompressed_archives_in_a_row() {
    let mut image = early_cpio();
    image.extend(Cpio::newc().file("second", b"2").finish());
    let es = entries(&image);
    assert_eq!(es.last().unwrap().path_bytes(), b"second");
    assert_eq!(es.last().unwrap().segment, 1);
    assert_eq!(es.last().unwrap().segment_offset, early_cpio().len() as u64);
}

#[test]
fn lz4_legacy_with_several_chunks_and_zero_padding() {
    // 9 MiB of data spans two 8 MiB legacy chunks.
    let big: Vec<u8> = (0..9u32 << 20).map(|i| (i / 4096) as u8).collect();
    let archive = Cpio::newc().file("big", &big).file("after", b"ok").finish();
    let mut image = compress(Compression::Lz4Legacy, &archive);
    image.extend([0u8; 16]);
    image.extend(compress(Compression::Gzip, &Cpio::newc().file("tail", b"t").finish()));
    let all = read_all(&image).unwrap();
    assert_eq!(all.len(), 3);
    assert!(all[0].1 == big);
    assert_eq!(all[1], ("after".to_owned(), b"ok".to_vec()));
    assert_eq!(all[2], ("tail".to_owned(), b"t".to_vec()));
}

#[test]
fn crc_format_checksums_are_verified() {
    let good = Cpio::crc().file("f", b"hello").symlink("l", "f").finish();
    let es = entries(&good);
    assert_eq!(es[0].format, CpioFormat::Crc);
    assert_eq!(es[0].checksum, b"hello".iter().map(|&b| u32::from(b)).sum::<u32>());

    let bad = Cpio::crc().raw_entry(b"f", 0o100644, b"hello", Some(1)).finish();
    let err = Reader::new(bad.as_slice()).entries().find_map(Result::err).expect("an error");
    match err {
        Error::ChecksumMismatch { path, expected, actual, at } => {
            assert_eq!(path, "f");
            assert_eq!(expected, 1);
            assert_eq!(actual, 532);
            assert_eq!(at.offset, 0);
        }
        other => panic!("wrong error {other:?}"),
    }
    // Also when the data was read, not skipped.
    assert!(matches!(read_all(&bad), Err(Error::ChecksumMismatch { .. })));
    // And not at all when disabled.
    let mut opts = Options::default();
    opts.verify_checksums = false;
    let n = Reader::with_options(bad.as_slice(), opts).entries().count();
    assert_eq!(n, 1);
}

#[test]
fn nixos_stage1_layout_resolves_symlinks_into_the_store() {
    let store = "nix/store/aaaa-linux-6.6.1-modules-shrunk";
    let kernel = "nix/store/bbbb-linux-6.6.1-modules";
    let archive = Cpio::newc()
        .dir("nix")
        .dir("nix/store")
        // /lib -> the shrunk modules closure
        .symlink("lib", &format!("/{store}/lib"))
        .dir(store)
        .dir(&format!("{store}/lib"))
        .dir(&format!("{store}/lib/modules"))
        .dir(&format!("{store}/lib/modules/6.6.1"))
        .dir(&format!("{store}/lib/modules/6.6.1/kernel"))
        .file(&format!("{store}/lib/modules/6.6.1/kernel/virtio_pci.ko.xz"), b"m")
        // a module that is a relative symlink to the full kernel's copy
        .symlink(
            &format!("{store}/lib/modules/6.6.1/kernel/virtio_blk.ko.xz"),
            "../../../../../bbbb-linux-6.6.1-modules/lib/modules/6.6.1/kernel/drivers/block/virtio_blk.ko.xz",
        )
        // a module symlink whose target is not in the archive: not counted
        .symlink(
            &format!("{store}/lib/modules/6.6.1/kernel/virtio_scsi.ko.xz"),
            &format!("/{kernel}/lib/modules/6.6.1/kernel/drivers/scsi/virtio_scsi.ko.xz"),
        )
        // a directory symlink inside the version directory
        .symlink(&format!("{store}/lib/modules/6.6.1/extra"), &format!("/{kernel}/extra"))
        .file(&format!("{kernel}/extra/zfs.ko.zst"), b"m")
        .file(&format!("{kernel}/lib/modules/6.6.1/kernel/drivers/block/virtio_blk.ko.xz"), b"m")
        // a loop must not hang
        .symlink(&format!("{store}/lib/modules/6.6.1/loop"), ".")
        .file("lib.ko", b"not under lib/modules")
        .finish();
    let mut scan = ModuleScan::new();
    for e in entries(&archive) {
        scan.add(&e).unwrap();
    }
    let found = scan.finish();
    let names: Vec<&str> = found.names.iter().map(String::as_str).collect();
    assert_eq!(names, ["virtio_blk", "virtio_pci", "zfs"]);
    assert!(found.contains("virtio-blk"));
    assert_eq!(found.kernel_versions.iter().collect::<Vec<_>>(), ["6.6.1"]);
    // Reached through /lib, it is the same store path (walked once).
    assert!(found.files.iter().any(|f| f.path.ends_with("extra/zfs.ko.zst")));
}

#[test]
fn modules_under_lib_usr_lib_and_merged_usr_symlink() {
    let mut image = early_cpio();
    image.extend(compress(Compression::Xz, &main_cpio()));
    let mut scan = ModuleScan::new();
    let mut reader = Reader::new(image.as_slice());
    while let Some(e) = reader.next_entry().unwrap() {
        scan.add(e.entry()).unwrap();
    }
    let found = scan.finish();
    assert_eq!(found.names.iter().collect::<Vec<_>>(), ["dm_mod", "virtio_blk"]);
    assert_eq!(found.kernel_versions.iter().collect::<Vec<_>>(), ["6.1.0-test"]);
}

#[test]
fn long_symlink_target_is_left_as_data() {
    let target = "t".repeat(5000);
    let image = Cpio::newc().symlink("l", &target).file("after", b"a").finish();
    let mut reader = Reader::new(image.as_slice());
    let mut e = reader.next_entry().unwrap().unwrap();
    assert_eq!(e.entry().symlink_target(), None);
    assert_eq!(e.read_to_vec(10_000).unwrap(), target.as_bytes());
    assert_eq!(reader.next_entry().unwrap().unwrap().entry().path_bytes(), b"after");
}

#[test]
fn list_and_kernel_modules_read_a_file() {
    let dir = std::env::temp_dir().join(format!("fleetgate-initrd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("initrd.img");
    let mut image = early_cpio();
    image.extend(compress(Compression::Zstd, &main_cpio()));
    std::fs::write(&file, &image).unwrap();
    let listed = fleetgate_initrd::list(&file).unwrap();
    assert_eq!(listed.len(), 13);
    let modules = fleetgate_initrd::kernel_modules(&file).unwrap();
    assert!(modules.contains("virtio_blk"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(fleetgate_initrd::list(&file), Err(Error::File(_))));
}

#[test]
fn tiny_buffers_give_identical_results() {
    // Headers, names and magic numbers then straddle buffer refills.
    let mut image = early_cpio();
    image.extend([0u8; 12]);
    for c in ALL_COMPRESSIONS {
        image.extend(compress(c, &main_cpio()));
        image.extend([0u8; 4]);
    }
    let expected = read_all(&image).unwrap();
    assert_eq!(expected.len(), 4 + ALL_COMPRESSIONS.len() * 9);
    for size in [0, 16, 17, 113] {
        let mut opts = Options::default();
        opts.buffer_size = size;
        let mut reader = Reader::with_options(image.as_slice(), opts);
        let mut got = Vec::new();
        while let Some(mut e) = reader.next_entry().unwrap() {
            let path = e.entry().path_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            got.push((path, data));
        }
        assert_eq!(got, expected, "buffer size {size}");
    }
}
