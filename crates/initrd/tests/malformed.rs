//! Truncated, corrupt and hostile inputs give typed errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod support;

use fleetgate_initrd::{Compression, Error, Options, Reader};
use support::{ALL_COMPRESSIONS, Cpio, compress, early_cpio, lz4_frame, main_cpio, read_all};

/// Runs the reader to the end (reading all data) and returns its error.
fn error_of(image: &[u8]) -> Error {
    match read_all(image) {
        Ok(entries) => panic!("expected an error, got {} entries", entries.len()),
        Err(e) => e,
    }
}

#[test]
fn every_truncation_of_an_uncompressed_image_is_a_typed_error() {
    let image = main_cpio();
    for len in 1..image.len() {
        let cut = &image[..len];
        match read_all(cut) {
            // A cut that lands exactly after the trailer's padding is whole.
            Ok(_) => assert!(len >= image.len() - 3, "cut at {len} parsed"),
            Err(Error::Truncated { at, .. }) => assert!(at.offset <= len as u64),
            Err(other) => panic!("cut at {len}: {other:?}"),
        }
    }
}

#[test]
fn every_truncation_of_a_compressed_segment_is_an_error() {
    for compression in ALL_COMPRESSIONS {
        let mut image = early_cpio();
        let early_len = image.len();
        image.extend(compress(compression, &main_cpio()));
        // Cutting inside the compressed stream (keeping at least its magic).
        for len in (early_len + 6..image.len()).step_by(7) {
            match read_all(&image[..len]) {
                Err(Error::Truncated { .. } | Error::Decompress { .. }) => {}
                Err(other) => panic!("{compression} cut at {len}: unexpected {other:?}"),
                Ok(entries) => {
                    // Only formats without an end marker of their own may look
                    // complete, and only if the whole archive came out.
                    assert!(
                        matches!(compression, Compression::Lz4Legacy),
                        "{compression} cut at {len} parsed ({} entries)",
                        entries.len()
                    );
                    assert_eq!(entries.len(), 13, "{compression} cut at {len}");
                }
            }
        }
    }
}

#[test]
fn truncation_reports_what_and_where() {
    let image = Cpio::newc().file("file", &[1u8; 100]).finish();
    match error_of(&image[..150]) {
        Error::Truncated { what, at } => {
            assert_eq!(what, "file data");
            assert_eq!(at.offset, 150);
            assert_eq!(at.segment, 0);
        }
        other => panic!("{other:?}"),
    }
    let mut image = early_cpio();
    let start = image.len() as u64;
    image.extend(compress(Compression::Gzip, &main_cpio()));
    image.truncate(image.len() - 12);
    match error_of(&image) {
        Error::Truncated { at, .. } => {
            assert_eq!(at.segment, 1);
            assert_eq!(at.compression, Compression::Gzip);
            assert_eq!(at.segment_offset, start);
        }
        Error::Decompress { segment_offset, .. } => assert_eq!(segment_offset, start),
        other => panic!("{other:?}"),
    }
}

#[test]
fn huge_declared_file_size_does_not_allocate() {
    let mut image = Cpio::newc().file("f", b"").finish();
    // c_filesize is the 7th field: offset 6 + 6 * 8.
    image[54..62].copy_from_slice(b"ffffffff");
    match error_of(&image) {
        Error::Truncated { what: "file data", .. } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn name_size_is_capped() {
    let mut image = Cpio::newc().file("f", b"").finish();
    // c_namesize is the 12th field: offset 6 + 11 * 8.
    image[94..102].copy_from_slice(b"7fffffff");
    match error_of(&image) {
        Error::NameTooLong { len, max, at } => {
            assert_eq!(len, 0x7fff_ffff);
            assert_eq!(max, Options::default().max_name_len);
            assert_eq!(at.offset, 0);
        }
        other => panic!("{other:?}"),
    }
    image[94..102].copy_from_slice(b"00000000");
    assert!(matches!(error_of(&image), Error::BadHeaderField { field: "c_namesize", .. }));
}

#[test]
fn bad_header_fields_are_named() {
    let mut image = Cpio::newc().file("f", b"x").finish();
    image[14..22].copy_from_slice(b"0000z1a4"); // c_mode
    match error_of(&image) {
        Error::BadHeaderField { field, value, at } => {
            assert_eq!(field, "c_mode");
            assert_eq!(value, "0000z1a4");
            assert_eq!(at.offset, 0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn name_without_nul_is_rejected() {
    let mut image = Cpio::newc().file("abc", b"").finish();
    image[113] = b'!'; // the NUL after "abc"
    assert!(matches!(error_of(&image), Error::NameNotTerminated { .. }));
}

#[test]
fn old_cpio_formats_are_rejected_with_their_name() {
    let mut odc = b"070707".to_vec();
    odc.extend([b'0'; 70]);
    match error_of(&odc) {
        Error::UnsupportedCpioFormat { format, at } => {
            assert_eq!(format, "odc");
            assert_eq!(at.offset, 0);
        }
        other => panic!("{other:?}"),
    }
    let binary = [0xc7, 0x71, 0, 0, 0, 0, 0, 0];
    assert!(matches!(error_of(&binary), Error::UnsupportedCpioFormat { format: "old binary", .. }));
    // odc inside a compressed segment
    let mut gz_odc = early_cpio();
    gz_odc.extend(compress(Compression::Gzip, &odc));
    assert!(matches!(
        error_of(&gz_odc),
        Error::UnsupportedCpioFormat { format: "odc", at } if at.segment == 1 && at.offset == 0
    ));
}

/// The kernel's `lib/decompress.c` unpacks only legacy LZ4 (`lz4 -l`);
/// an image with an LZ4 *frame* segment does not boot, so its modules must
/// not be reported as present.
#[test]
fn lz4_frame_format_is_refused_because_the_kernel_cannot_unpack_it() {
    let mut image = early_cpio();
    let at = image.len() as u64;
    image.extend(lz4_frame(&main_cpio()));
    let err = error_of(&image);
    let text = err.to_string();
    match err {
        Error::UnsupportedCompression { name, reason, magic, offset } => {
            assert_eq!(name, "lz4 frame format");
            assert_eq!(magic[..4], [0x04, 0x22, 0x4d, 0x18]);
            assert_eq!(offset, at);
            assert!(reason.contains("kernel cannot unpack"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(text.contains("lz4 frame format"), "{text}");
    assert!(text.contains("kernel cannot unpack"), "{text}");
    assert!(text.contains("lz4 -l"), "{text}");
    // The module scan fails too, rather than listing the modules.
    let dir = std::env::temp_dir().join(format!("fleetgate-initrd-lz4f-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("initrd.img");
    std::fs::write(&path, &image).unwrap();
    let scanned = fleetgate_initrd::kernel_modules(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(scanned, Err(Error::UnsupportedCompression { name: "lz4 frame format", .. })));
}

#[test]
fn unknown_and_unsupported_magic() {
    let mut image = early_cpio();
    let at = image.len() as u64;
    image.extend(b"\x89LZO\0\r\n\x1a\n");
    match error_of(&image) {
        Error::UnsupportedCompression { name, magic, offset, .. } => {
            assert_eq!(name, "lzo");
            assert_eq!(magic, b"\x89LZO\0\r");
            assert_eq!(offset, at);
        }
        other => panic!("{other:?}"),
    }
    let mut image = early_cpio();
    image.extend(b"garbage!");
    match error_of(&image) {
        Error::BadMagic { offset, found } => {
            assert_eq!(offset, at);
            assert_eq!(found, b"garbag");
        }
        other => panic!("{other:?}"),
    }
    // A cpio archive at an unaligned offset is not taken (the kernel would
    // try to decompress it).
    let mut image = early_cpio();
    image.push(0);
    image.extend(main_cpio());
    assert!(matches!(error_of(&image), Error::BadMagic { offset, .. } if offset == at + 1));
    // Fewer bytes than any magic number: truncated.
    let mut image = early_cpio();
    image.push(0xff);
    assert!(matches!(error_of(&image), Error::Truncated { at: loc, .. } if loc.offset == at));
    let mut image = b"\0\0\0\0\0".to_vec();
    image.extend(main_cpio());
    assert!(matches!(error_of(&image), Error::BadMagic { offset: 5, .. }));
}

#[test]
fn junk_inside_a_compressed_segment() {
    let mut inner = main_cpio();
    inner.extend(b"\0\0\0\0junk");
    let mut image = compress(Compression::Zstd, &inner);
    match error_of(&image) {
        Error::Junk { at, found } => {
            assert_eq!(found, b'j');
            assert_eq!(at.offset, main_cpio().len() as u64 + 4);
            assert_eq!(at.compression, Compression::Zstd);
        }
        other => panic!("{other:?}"),
    }
    // Misaligned second archive after zero padding.
    let mut inner = main_cpio();
    inner.extend(b"\0\0");
    inner.extend(Cpio::newc().file("x", b"").finish());
    image = compress(Compression::Zstd, &inner);
    assert!(matches!(error_of(&image), Error::BrokenPadding { .. }));
    // A header that is not one, in the middle of an archive.
    let mut bad = main_cpio();
    let trailer_at = bad.len() - 124;
    bad[trailer_at..trailer_at + 6].copy_from_slice(b"07070X");
    assert!(matches!(
        error_of(&bad),
        Error::BadHeaderMagic { found, .. } if &found == b"07070X"
    ));
}

#[test]
fn corrupt_compressed_data_is_a_decompress_error() {
    for compression in ALL_COMPRESSIONS {
        let mut image = compress(compression, &main_cpio());
        // Flip bytes in the middle of the stream, past the headers.
        let mid = image.len() / 2;
        for b in &mut image[mid..mid + 4] {
            *b ^= 0x55;
        }
        match read_all(&image) {
            Err(Error::Decompress { compression: c, segment_offset: 0, .. }) => assert_eq!(c, compression),
            // The cpio parser may trip over the garbage before the decoder
            // reaches the stream's checksum.
            Err(
                Error::BadHeaderMagic { .. }
                | Error::BadHeaderField { .. }
                | Error::Truncated { .. }
                | Error::Junk { .. }
                | Error::NameNotTerminated { .. }
                | Error::NameTooLong { .. },
            ) => {}
            Err(other) => panic!("{compression}: {other:?}"),
            // Only formats without a checksum can miss it.
            Ok(_) => assert!(
                matches!(compression, Compression::Lz4Legacy | Compression::Lzma),
                "{compression}: corruption went unnoticed"
            ),
        }
    }
}

#[test]
fn reader_is_finished_after_an_error() {
    let mut image = Cpio::newc().file("a", b"1").finish();
    image.truncate(image.len() - 20);
    let mut reader = Reader::new(image.as_slice());
    assert!(reader.next_entry().unwrap().is_some());
    assert!(reader.next_entry().is_err());
    assert!(reader.next_entry().unwrap().is_none());
    assert!(reader.next_entry().unwrap().is_none());
}

#[test]
fn errors_display_their_position() {
    let mut image = early_cpio();
    image.extend(compress(Compression::Zstd, b"not a cpio archive at all"));
    let text = error_of(&image).to_string();
    assert!(text.contains("segment 1"), "{text}");
    assert!(text.contains("zstd"), "{text}");
    assert!(text.contains(&format!("file byte {}", early_cpio().len())), "{text}");
}

#[test]
fn empty_and_zero_only_inputs_have_no_entries() {
    assert_eq!(read_all(b"").unwrap().len(), 0);
    assert_eq!(read_all(&[0u8; 1000]).unwrap().len(), 0);
}
