//! Compression detection (by magic bytes) and the per-segment decoders.

use std::fmt;
use std::io::{self, Read};

use crate::input::Input;
use crate::lz4_legacy::Lz4Legacy;

/// Compression of one segment of an initramfs image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Compression {
    /// A plain cpio archive (e.g. the "early" microcode archive).
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// Legacy `.lzma` ("LZMA_Alone", first byte `5d 00`).
    Lzma,
    /// LZ4 legacy format (`02 21 4c 18`), what the kernel's `unlz4` and
    /// `lz4 -l` use. (The standard LZ4 *frame* format, `04 22 4d 18`, is
    /// not a [`Compression`]: the kernel cannot unpack it, so the reader
    /// reports it as [`crate::Error::UnsupportedCompression`].)
    Lz4Legacy,
    /// bzip2 (`BZh1`..`BZh9`).
    Bzip2,
}

impl Compression {
    /// Short lowercase name ("gzip", "zstd", "lz4-legacy", "none", ...).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Lz4Legacy => "lz4-legacy",
            Compression::Bzip2 => "bzip2",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the bytes at the start of a segment are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Magic {
    /// A newc/crc cpio header.
    Cpio,
    /// An odc ("070707") or old binary cpio header.
    OldCpio(&'static str),
    Compressed(Compression),
    /// Recognised, but not decodable here: the format's name and why.
    Unsupported(&'static str, &'static str),
    Unknown,
}

/// Why an LZ4 *frame* stream is refused: `lib/decompress.c` maps the LZ4
/// magic to `unlz4`, which reads only the legacy format (`lz4 -l`).
const LZ4_FRAME_REASON: &str = "the kernel cannot unpack it: lib/decompress.c reads only legacy LZ4 \
     (`lz4 -l`, magic 02 21 4c 18), so the kernel would fail to unpack this initrd at boot; \
     rebuild the image with `lz4 -l`";

/// Why a format the kernel may unpack is still refused.
const NOT_DECODED_HERE: &str = "fleetgate cannot decode it, so its contents cannot be checked";

/// Number of bytes [`detect`] wants to see (fewer only at end of file).
pub(crate) const MAGIC_LEN: usize = 6;

/// Identifies a segment by its first bytes, like the kernel's
/// `lib/decompress.c` (`compressed_formats[]`) and Debian's
/// `unmkinitramfs`, but with the full magic where the kernel only
/// looks at two bytes.
pub(crate) fn detect(b: &[u8]) -> Magic {
    let starts = |m: &[u8]| b.starts_with(m);
    if starts(b"070701") || starts(b"070702") {
        Magic::Cpio
    } else if starts(b"070707") {
        Magic::OldCpio("odc")
    } else if starts(&[0xc7, 0x71]) || starts(&[0x71, 0xc7]) {
        Magic::OldCpio("old binary")
    } else if starts(&[0x1f, 0x8b]) {
        Magic::Compressed(Compression::Gzip)
    } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Magic::Compressed(Compression::Zstd)
    } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Magic::Compressed(Compression::Xz)
    } else if starts(&[0x5d, 0x00]) {
        Magic::Compressed(Compression::Lzma)
    } else if starts(&[0x02, 0x21, 0x4c, 0x18]) {
        Magic::Compressed(Compression::Lz4Legacy)
    } else if starts(&[0x04, 0x22, 0x4d, 0x18]) {
        Magic::Unsupported("lz4 frame format", LZ4_FRAME_REASON)
    } else if starts(b"BZh") && b.get(3).is_some_and(|c| (b'1'..=b'9').contains(c)) {
        Magic::Compressed(Compression::Bzip2)
    } else if starts(&[0x89, b'L', b'Z', b'O']) {
        Magic::Unsupported("lzo", NOT_DECODED_HERE)
    } else if starts(&[0x1f, 0x9e]) {
        Magic::Unsupported("old gzip (1f 9e)", NOT_DECODED_HERE)
    } else if b.len() >= 4 && b[1..4] == [0x2a, 0x4d, 0x18] && b[0] & 0xf0 == 0x50 {
        Magic::Unsupported(
            "zstd/lz4 skippable frame",
            "the kernel cannot unpack it either (no compressed_formats[] entry in lib/decompress.c)",
        )
    } else {
        Magic::Unknown
    }
}

/// Limits for decoders, from [`crate::Options`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecoderLimits {
    pub(crate) memory: u64,
}

/// zstd's default decoder window limit (2^27 = 128 MiB); frames asking for
/// more (`zstd --long=31`) are refused rather than allocated.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

enum Kind<R: Read> {
    Gzip(flate2::bufread::GzDecoder<Input<R>>),
    Zstd(zstd::stream::read::Decoder<'static, Input<R>>),
    Xz(liblzma::bufread::XzDecoder<Input<R>>),
    Bzip2(bzip2::bufread::BzDecoder<Input<R>>),
    Lz4Legacy(Lz4Legacy<R>),
}

/// Decodes exactly one compressed stream (one gzip member, one zstd frame,
/// one xz stream, ...) and then reports end of data, leaving the input
/// positioned right after the stream.
pub(crate) struct Decoder<R: Read> {
    kind: Kind<R>,
    done: bool,
}

impl<R: Read> Decoder<R> {
    /// Builds a decoder for a stream starting at the input's position.
    pub(crate) fn new(compression: Compression, input: Input<R>, limits: DecoderLimits) -> io::Result<Self> {
        let kind = match compression {
            Compression::None => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "no decoder for uncompressed data"));
            }
            Compression::Gzip => Kind::Gzip(flate2::bufread::GzDecoder::new(input)),
            Compression::Zstd => {
                // `with_buffer` reads from our BufRead and consumes exactly
                // what it used; `single_frame` stops at the end of the frame.
                let mut d = zstd::stream::read::Decoder::with_buffer(input)?.single_frame();
                d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                Kind::Zstd(d)
            }
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(limits.memory, 0).map_err(io::Error::other)?;
                Kind::Xz(liblzma::bufread::XzDecoder::new_stream(input, stream))
            }
            Compression::Lzma => {
                let stream = liblzma::stream::Stream::new_lzma_decoder(limits.memory).map_err(io::Error::other)?;
                Kind::Xz(liblzma::bufread::XzDecoder::new_stream(input, stream))
            }
            Compression::Bzip2 => Kind::Bzip2(bzip2::bufread::BzDecoder::new(input)),
            Compression::Lz4Legacy => Kind::Lz4Legacy(Lz4Legacy::new(input)),
        };
        Ok(Decoder { kind, done: false })
    }

    pub(crate) fn input(&self) -> &Input<R> {
        match &self.kind {
            Kind::Gzip(d) => d.get_ref(),
            Kind::Zstd(d) => d.get_ref(),
            Kind::Xz(d) => d.get_ref(),
            Kind::Bzip2(d) => d.get_ref(),
            Kind::Lz4Legacy(d) => d.get_ref(),
        }
    }

    pub(crate) fn into_input(self) -> Input<R> {
        match self.kind {
            Kind::Gzip(d) => d.into_inner(),
            Kind::Zstd(d) => d.finish(),
            Kind::Xz(d) => d.into_inner(),
            Kind::Bzip2(d) => d.into_inner(),
            Kind::Lz4Legacy(d) => d.into_inner(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = match &mut self.kind {
            Kind::Gzip(d) => d.read(buf)?,
            Kind::Zstd(d) => d.read(buf)?,
            Kind::Xz(d) => d.read(buf)?,
            Kind::Bzip2(d) => d.read(buf)?,
            Kind::Lz4Legacy(d) => d.read(buf)?,
        };
        if n == 0 {
            // Never call a finished decoder again: some would start on the
            // next stream or report a state error (liblzma).
            self.done = true;
        }
        Ok(n.min(buf.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_every_format_by_magic() {
        assert_eq!(detect(b"070701..."), Magic::Cpio);
        assert_eq!(detect(b"070702..."), Magic::Cpio);
        assert_eq!(detect(b"070707..."), Magic::OldCpio("odc"));
        assert_eq!(detect(&[0xc7, 0x71, 0, 0]), Magic::OldCpio("old binary"));
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Magic::Compressed(Compression::Gzip));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Magic::Compressed(Compression::Zstd));
        assert_eq!(detect(b"\xfd7zXZ\0"), Magic::Compressed(Compression::Xz));
        assert_eq!(detect(&[0x5d, 0, 0, 0x80]), Magic::Compressed(Compression::Lzma));
        assert_eq!(detect(&[0x02, 0x21, 0x4c, 0x18]), Magic::Compressed(Compression::Lz4Legacy));
        assert_eq!(detect(&[0x04, 0x22, 0x4d, 0x18]), Magic::Unsupported("lz4 frame format", LZ4_FRAME_REASON));
        assert_eq!(detect(b"BZh91AY"), Magic::Compressed(Compression::Bzip2));
        assert_eq!(detect(b"BZh0"), Magic::Unknown);
        assert_eq!(detect(b"\x89LZO\0"), Magic::Unsupported("lzo", NOT_DECODED_HERE));
        assert_eq!(detect(b"hello!"), Magic::Unknown);
        assert_eq!(detect(b""), Magic::Unknown);
    }
}
