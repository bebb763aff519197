//! Nothing about an image decides how long reading it takes or how much
//! memory it costs: images that never end, unpack without end, are not
//! files, or hold millions of entries stop at a limit with an error that
//! says which.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod support;

use std::io::{self, Read};

use fleetgate_initrd::{Compression, Error, ModuleScan, Options, Reader};
use support::{Cpio, compress};

fn options(f: impl FnOnce(&mut Options)) -> Options {
    let mut o = Options::default();
    f(&mut o);
    o
}

/// Reads every entry (and its data) to the end or the first error.
fn drain<R: Read>(mut reader: Reader<R>) -> Result<usize, Error> {
    let mut n = 0;
    while let Some(mut entry) = reader.next_entry()? {
        // The data is read through `Read`, whose io::Error carries the
        // reader's own error.
        if let Err(e) = io::copy(&mut entry, &mut io::sink()) {
            return Err(match e.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(inner)) => *inner,
                other => panic!("not a reader error: {other:?}"),
            });
        }
        n += 1;
    }
    Ok(n)
}

#[test]
fn a_device_or_a_fifo_is_no_image_and_opening_it_does_not_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, says) in fleetgate_files::testing::hostile_files(dir.path(), "initrd") {
        let err = fleetgate_initrd::kernel_modules(&path).expect_err("refused");
        assert!(matches!(err, Error::File(_)), "{err:?}");
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[test]
fn an_endless_stream_of_zeros_ends_at_the_image_limit() {
    // What /dev/zero would give if it were read: zero padding forever.
    let reader = Reader::with_options(io::repeat(0), options(|o| o.max_image_bytes = 1 << 20));
    let err = drain(reader).expect_err("ends");
    assert!(matches!(err, Error::ImageTooLarge { max } if max == 1 << 20), "{err:?}");
    assert!(err.to_string().contains("more than an initrd can be"), "{err}");
    // Inside a compressed segment, the raw limit holds too.
    let mut image = compress(Compression::Gzip, &Cpio::newc().file("a", b"x").finish());
    image.truncate(image.len() - 8);
    let endless = image.as_slice().chain(io::repeat(0));
    let err = drain(Reader::with_options(endless, options(|o| o.max_image_bytes = 1 << 20))).expect_err("ends");
    assert!(matches!(err, Error::ImageTooLarge { .. } | Error::Decompress { .. }), "{err:?}");
}

#[test]
fn an_image_at_its_limit_is_read_and_one_byte_more_is_not() {
    let image = Cpio::newc().file("lib/modules/6.1.0/kernel/virtio_blk.ko", b"m").finish();
    let exact = options(|o| o.max_image_bytes = image.len() as u64);
    assert_eq!(drain(Reader::with_options(image.as_slice(), exact.clone())).expect("fits"), 1);
    let mut longer = image.clone();
    longer.extend([0u8; 4]);
    let err = drain(Reader::with_options(longer.as_slice(), exact)).expect_err("4 bytes too many");
    assert!(matches!(err, Error::ImageTooLarge { .. }), "{err:?}");
}

#[test]
fn a_decompression_bomb_ends_at_the_unpacked_limit() {
    // 16 MiB of zero padding compress to a few KiB.
    let mut inner = Cpio::newc().file("a", b"x").finish();
    inner.resize(16 << 20, 0);
    for c in [Compression::Zstd, Compression::Gzip] {
        let bomb = compress(c, &inner);
        assert!(bomb.len() < 1 << 20, "{c}: {}", bomb.len());
        let reader = Reader::with_options(bomb.as_slice(), options(|o| o.max_unpacked_bytes = 4 << 20));
        let err = drain(reader).expect_err("stops");
        assert!(matches!(err, Error::UnpackedTooLarge { max, .. } if max == 4 << 20), "{c}: {err:?}");
        assert!(err.to_string().contains("unpacks to more than 4194304 bytes"), "{err}");
        // With room, the same image reads.
        assert_eq!(drain(Reader::new(bomb.as_slice())).expect("reads"), 1, "{c}");
    }
    // File data counts as much as padding.
    let big = Cpio::newc().file("big", &vec![7u8; 4 << 20]).finish();
    let big = compress(Compression::Zstd, &big);
    let reader = Reader::with_options(big.as_slice(), options(|o| o.max_unpacked_bytes = 1 << 20));
    assert!(matches!(drain(reader), Err(Error::UnpackedTooLarge { .. })));
}

#[test]
fn entries_that_are_not_modules_cost_no_memory() {
    // Two hundred thousand empty files, directories and devices: nothing a
    // module search needs, so nothing is kept.
    let mut cpio = Cpio::newc();
    for i in 0..200_000 {
        match i % 4 {
            0 => cpio.file(&format!("usr/share/doc/f{i}"), b""),
            1 => cpio.dir(&format!("etc/d{i}")),
            2 => cpio.file(&format!("lib/modules/6.1.0/modules.x{i}"), b""),
            _ => cpio.raw_entry(format!("dev/c{i}").as_bytes(), 0o020_644, b"", None),
        };
    }
    cpio.file("lib/modules/6.1.0/kernel/drivers/block/virtio_blk.ko", b"m");
    let image = compress(Compression::Zstd, &cpio.finish());
    let mut reader = Reader::new(image.as_slice());
    let mut scan = ModuleScan::new();
    let mut entries = 0;
    while let Some(entry) = reader.next_entry().expect("reads") {
        scan.add(entry.entry()).expect("within the limits");
        entries += 1;
    }
    assert_eq!(entries, 200_001);
    // The module file, and its version directory (implied, so not kept).
    assert_eq!(scan.kept_paths(), 1);
    let found = scan.finish();
    assert_eq!(found.names.iter().collect::<Vec<_>>(), ["virtio_blk"]);
    assert_eq!(found.kernel_versions.iter().collect::<Vec<_>>(), ["6.1.0"]);
}

#[test]
fn what_must_be_kept_is_capped_with_an_error() {
    let mut cpio = Cpio::newc();
    for i in 0..11 {
        cpio.file(&format!("lib/modules/6.1.0/m{i}.ko"), b"");
    }
    let archive = cpio.finish();
    let mut scan = ModuleScan::with_limits(10, 1 << 20);
    let mut reader = Reader::new(archive.as_slice());
    let mut result = Ok(());
    while let Some(entry) = reader.next_entry().expect("reads") {
        result = scan.add(entry.entry());
        if result.is_err() {
            break;
        }
    }
    let err = result.expect_err("the eleventh module passes the limit");
    assert!(matches!(err, Error::TooManyEntries { max_paths: 10, .. }), "{err:?}");
    assert!(err.to_string().contains("refusing to use more memory"), "{err}");
    // Bytes count as well as paths.
    let mut scan = ModuleScan::with_limits(1000, 64);
    let mut reader = Reader::new(archive.as_slice());
    let mut failed = false;
    while let Some(entry) = reader.next_entry().expect("reads") {
        if scan.add(entry.entry()).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "64 bytes hold three paths of 20 bytes, not eleven");
}

#[test]
fn a_later_entry_replaces_an_earlier_one_even_when_it_is_not_kept() {
    // A module file, then a device node at the same path: the kernel's
    // unpacker replaces the file, so the module is gone.
    let archive = Cpio::newc()
        .file("lib/modules/6.1.0/virtio_blk.ko", b"m")
        .raw_entry(b"lib/modules/6.1.0/virtio_blk.ko", 0o020_644, b"", None)
        .file("lib/modules/6.1.0/ext4.ko", b"m")
        .finish();
    let mut scan = ModuleScan::new();
    let mut reader = Reader::new(archive.as_slice());
    while let Some(entry) = reader.next_entry().expect("reads") {
        scan.add(entry.entry()).expect("fits");
    }
    assert_eq!(scan.finish().names.iter().collect::<Vec<_>>(), ["ext4"]);
}
