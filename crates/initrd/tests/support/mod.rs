//! Test helpers: build newc/crc archives and compress them in memory.
#![allow(dead_code)]

use std::io::Write;

use fleetgate_initrd::Compression;

/// Builds one cpio archive ("070701" newc or "070702" crc), like
/// `cpio -o -H newc`.
pub struct Cpio {
    out: Vec<u8>,
    crc: bool,
    next_ino: u32,
}

impl Cpio {
    pub fn newc() -> Self {
        Cpio { out: Vec::new(), crc: false, next_ino: 1 }
    }

    pub fn crc() -> Self {
        Cpio { out: Vec::new(), crc: true, next_ino: 1 }
    }

    /// Appends a raw header with every field given.
    pub fn raw_entry(&mut self, name: &[u8], mode: u32, data: &[u8], checksum: Option<u32>) -> &mut Self {
        let sum = data.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
        let check = match (self.crc, checksum) {
            (_, Some(c)) => c,
            (true, None) if mode & 0o170000 == 0o100000 => sum,
            _ => 0,
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        let magic = if self.crc { "070702" } else { "070701" };
        let header = format!(
            "{magic}{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{check:08x}",
            0,
            0,
            1,
            1_700_000_000u32,
            data.len(),
            8,
            1,
            0,
            0,
            name.len() + 1
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name);
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw_entry(name.as_bytes(), 0o100644, data, None)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.raw_entry(name.as_bytes(), 0o040755, b"", None)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw_entry(name.as_bytes(), 0o120777, target.as_bytes(), None)
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(&mut self) -> Vec<u8> {
        self.raw_entry(b"TRAILER!!!", 0, b"", None);
        std::mem::take(&mut self.out)
    }
}

/// Compresses `data` with `c`, using the same crates the reader decodes with
/// (the LZ4 legacy format is written by hand: magic, then for each 8 MiB
/// chunk a little-endian size and an LZ4 block).
pub fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
        Compression::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Lzma => {
            let opts = liblzma::stream::LzmaOptions::new_preset(6).unwrap();
            let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
            let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Lz4Legacy => {
            let mut out = 0x184C_2102u32.to_le_bytes().to_vec();
            for chunk in data.chunks(8 << 20) {
                let block = lz4_flex::block::compress(chunk);
                out.extend_from_slice(&(block.len() as u32).to_le_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Compression::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        other => panic!("no test compressor for {other}"),
    }
}

pub const ALL_COMPRESSIONS: [Compression; 6] = [
    Compression::Gzip,
    Compression::Zstd,
    Compression::Xz,
    Compression::Lzma,
    Compression::Lz4Legacy,
    Compression::Bzip2,
];

/// `data` in the standard LZ4 frame format (`lz4` without `-l`), which
/// the kernel cannot unpack.
pub fn lz4_frame(data: &[u8]) -> Vec<u8> {
    let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A small "early" (microcode) archive.
pub fn early_cpio() -> Vec<u8> {
    Cpio::newc()
        .dir("kernel")
        .dir("kernel/x86")
        .dir("kernel/x86/microcode")
        .file("kernel/x86/microcode/GenuineIntel.bin", &[0xAA; 1000])
        .finish()
}

/// A "main" archive with a few kinds of entries.
pub fn main_cpio() -> Vec<u8> {
    Cpio::newc()
        .dir(".")
        .dir("./usr")
        .dir("./usr/lib")
        .symlink("./lib", "usr/lib")
        .dir("./usr/lib/modules")
        .dir("./usr/lib/modules/6.1.0-test")
        .file("./usr/lib/modules/6.1.0-test/virtio_blk.ko", b"\x7fELF module one")
        .file("./usr/lib/modules/6.1.0-test/dm-mod.ko.xz", b"\xfd7zXZ fake")
        .file("./init", b"#!/bin/sh\necho hello\n")
        .finish()
}

/// Reads every entry's path and data (symlink targets for symlinks).
pub fn read_all(image: &[u8]) -> Result<Vec<(String, Vec<u8>)>, fleetgate_initrd::Error> {
    use std::io::Read;
    let mut reader = fleetgate_initrd::Reader::new(image);
    let mut out = Vec::new();
    while let Some(mut e) = reader.next_entry()? {
        let path = e.entry().path_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).map_err(|err| {
            match err.into_inner().map(|inner| inner.downcast::<fleetgate_initrd::Error>()) {
                Some(Ok(typed)) => *typed,
                _ => panic!("entry read failed without a typed error"),
            }
        })?;
        out.push((path, data));
    }
    Ok(out)
}
