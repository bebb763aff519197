//! The streaming reader: segment scanning plus a newc/crc cpio parser.
//!
//! The cpio parser is handwritten. The `cpio` crate (0.4) reads newc, but it
//! rejects names that are not UTF-8 (initramfs names are bytes), reports
//! plain `io::Error`s without positions, allocates a `String` per entry, and
//! has no cap on the declared name size; a header parser is ~100 lines, so
//! owning it is cheaper than working around those.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::compression::{self, Decoder, DecoderLimits, MAGIC_LEN, Magic};
use crate::entry::{CpioFormat, Entry, FileType, normalise_path};
use crate::input::Input;
use crate::{Compression, Error, Location};

/// Size of a newc/crc header.
const HEADER_LEN: usize = 110;
const TRAILER: &[u8] = b"TRAILER!!!";
/// Smallest buffer: magic numbers must fit when peeking.
const MIN_BUFFER: usize = 16;

/// Limits and knobs of a [`Reader`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Largest accepted `c_namesize` (bytes, including the NUL). Default
    /// 64 KiB: the kernel's limit is `PATH_MAX` (4096), and dracut pads names.
    pub max_name_len: u64,
    /// Symlink targets up to this size are read into
    /// [`Entry::symlink_target`]. Default 4096 (`PATH_MAX`).
    pub max_symlink_len: u64,
    /// Memory limit for the xz/lzma decoders (which allocate the dictionary
    /// size declared in the stream). zstd is separately limited to a 128 MiB
    /// window. Default 256 MiB.
    pub decoder_memory_limit: u64,
    /// Verify the data checksums of "070702" (crc) archives. Default true.
    pub verify_checksums: bool,
    /// Size of each of the two I/O buffers (raw and decompressed).
    /// Default 128 KiB; values below 16 bytes are raised to 16.
    pub buffer_size: usize,
    /// The most bytes of the image read; past them, [`Error::ImageTooLarge`].
    /// Default 4 GiB: initrds are tens to hundreds of MiB, and an image
    /// that never ends (`/dev/zero`, a stream of zero padding) ends here.
    pub max_image_bytes: u64,
    /// The most bytes all compressed segments together may unpack to; past
    /// them, [`Error::UnpackedTooLarge`]. Default 8 GiB: the kernel unpacks
    /// the initrd into memory, and a decompression bomb ends here.
    pub max_unpacked_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_name_len: 64 * 1024,
            max_symlink_len: 4096,
            decoder_memory_limit: 256 * 1024 * 1024,
            verify_checksums: true,
            buffer_size: 128 * 1024,
            max_image_bytes: 4 << 30,
            max_unpacked_bytes: 8 << 30,
        }
    }
}

enum Source<R: Read> {
    /// Top level of the file, or an uncompressed archive.
    Raw(Input<R>),
    /// Inside a compressed segment.
    Decoded(Box<BufReader<Decoder<R>>>),
    /// Only while switching between the two, or after a fatal error.
    Poisoned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between segments: zero padding, a cpio archive or a compressed
    /// stream is expected.
    Top,
    /// Inside an archive: a header is expected.
    Header,
    /// Inside a compressed segment but outside an archive: zero padding,
    /// another archive, or the end of the stream is expected.
    Between,
    Done,
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    index: usize,
    compression: Compression,
    start: u64,
}

/// Streaming reader over the entries of an initramfs image.
///
/// Reads the image front to back with bounded memory (two buffers of
/// [`Options::buffer_size`], plus what the current segment's decoder needs).
/// Call [`Reader::next_entry`] in a loop; each returned [`EntryReader`] gives
/// the entry's metadata and can read its data. Data that is not read is
/// skipped (decompressed into the buffer and dropped) when you advance.
///
/// ```no_run
/// use std::io::Read;
/// let mut reader = fleetgate_initrd::Reader::open("/boot/initrd.img")?;
/// while let Some(mut entry) = reader.next_entry()? {
///     if entry.entry().path_bytes() == b"conf/initramfs.conf" {
///         let mut text = String::new();
///         entry.read_to_string(&mut text)?;
///         print!("{text}");
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Reader<R: Read> {
    src: Source<R>,
    state: State,
    opts: Options,
    seg: Segment,
    segments_seen: usize,
    /// Offset within the current segment's stream (for uncompressed
    /// segments: the file offset).
    pos: u64,
    /// Bytes unpacked from all compressed segments so far.
    unpacked: u64,
    entry: Entry,
    has_entry: bool,
    /// Data bytes of the current entry not yet consumed.
    remaining: u64,
    /// Read position within `entry.link_target` for the `Read` impl.
    link_pos: usize,
    /// Running byte sum of the data, for crc archives.
    sum: u32,
    verify_sum: bool,
}

impl Reader<File> {
    /// Opens an image file with default [`Options`]. Only a regular file is
    /// an image: a FIFO, a device (`/dev/zero`) or a directory is
    /// [`Error::File`], and opening never blocks.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(Reader::new(fleetgate_files::open_regular(path.as_ref())?))
    }
}

impl<R: Read> Reader<R> {
    /// Reads an image from `inner` (which need not be buffered) with
    /// default [`Options`].
    pub fn new(inner: R) -> Self {
        Reader::with_options(inner, Options::default())
    }

    /// Reads an image from `inner` with the given options.
    pub fn with_options(inner: R, mut opts: Options) -> Self {
        opts.buffer_size = opts.buffer_size.max(MIN_BUFFER);
        Reader {
            src: Source::Raw(Input::new(inner, opts.buffer_size, opts.max_image_bytes)),
            state: State::Top,
            opts,
            seg: Segment { index: 0, compression: Compression::None, start: 0 },
            segments_seen: 0,
            pos: 0,
            unpacked: 0,
            entry: Entry::empty(),
            has_entry: false,
            remaining: 0,
            link_pos: 0,
            sum: 0,
            verify_sum: false,
        }
    }

    /// Turns the reader into an iterator of owned entries (data is skipped).
    pub fn entries(self) -> Entries<R> {
        Entries { reader: self }
    }

    /// Advances to the next entry, skipping what is left of the current
    /// one's data. Returns `Ok(None)` at the end of the image. After an
    /// error, the reader is finished and returns `Ok(None)`.
    pub fn next_entry(&mut self) -> Result<Option<EntryReader<'_, R>>, Error> {
        match self.advance() {
            Ok(true) => Ok(Some(EntryReader { reader: self })),
            Ok(false) => {
                if self.state != State::Failed {
                    self.state = State::Done;
                }
                Ok(None)
            }
            Err(e) => {
                self.state = State::Failed;
                self.has_entry = false;
                self.src = Source::Poisoned;
                Err(e)
            }
        }
    }

    fn advance(&mut self) -> Result<bool, Error> {
        if self.has_entry {
            self.has_entry = false;
            self.finish_entry()?;
        }
        loop {
            match self.state {
                State::Done | State::Failed => return Ok(false),
                State::Top => {
                    if !self.start_segment()? {
                        return Ok(false);
                    }
                }
                State::Header => {
                    if self.read_header()? {
                        self.has_entry = true;
                        return Ok(true);
                    }
                }
                State::Between => self.between_archives()?,
            }
        }
    }

    fn location(&self) -> Location {
        Location {
            segment: self.seg.index,
            compression: self.seg.compression,
            segment_offset: self.seg.start,
            offset: self.pos,
        }
    }

    // ----- low-level stream access -------------------------------------

    fn stream(&mut self) -> Option<&mut dyn BufRead> {
        match &mut self.src {
            Source::Raw(input) => Some(input),
            Source::Decoded(d) => Some(d),
            Source::Poisoned => None,
        }
    }

    /// Maps an error from the current stream to a typed error.
    fn stream_error(&self, e: io::Error) -> Error {
        let too_large = Error::ImageTooLarge { max: self.opts.max_image_bytes };
        match &self.src {
            Source::Raw(input) if input.limit_hit => too_large,
            Source::Raw(input) => Error::Io { offset: input.offset(), source: e },
            Source::Decoded(d) => {
                let input = d.get_ref().input();
                if input.limit_hit {
                    too_large
                } else if input.io_failed {
                    Error::Io { offset: input.offset(), source: e }
                } else if input.eof && e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::Truncated { what: "compressed data", at: self.location() }
                } else {
                    Error::Decompress {
                        compression: self.seg.compression,
                        segment_offset: self.seg.start,
                        decompressed: self.pos,
                        source: e,
                    }
                }
            }
            Source::Poisoned => Error::Io { offset: 0, source: e },
        }
    }

    fn poisoned() -> io::Error {
        io::Error::other("reader used after a fatal error")
    }

    /// Like `BufRead::fill_buf` on the current stream, with typed errors.
    /// Returns the number of available bytes (0 at end of stream).
    fn fill(&mut self) -> Result<usize, Error> {
        if self.unpacked > self.opts.max_unpacked_bytes {
            return Err(Error::UnpackedTooLarge { max: self.opts.max_unpacked_bytes, at: self.location() });
        }
        let r = match self.stream() {
            Some(s) => s.fill_buf().map(<[u8]>::len),
            None => Err(Self::poisoned()),
        };
        r.map_err(|e| self.stream_error(e))
    }

    fn buffered(&mut self) -> &[u8] {
        match &mut self.src {
            Source::Raw(input) => input.fill_buf().unwrap_or(&[]),
            Source::Decoded(d) => d.buffer(),
            Source::Poisoned => &[],
        }
    }

    fn consume(&mut self, n: usize) {
        if let Some(s) = self.stream() {
            s.consume(n);
        }
        self.pos += n as u64;
        if matches!(self.src, Source::Decoded(_)) {
            self.unpacked += n as u64;
        }
    }

    /// Consumes exactly `n` bytes of the stream, handing them to `take` one
    /// buffered chunk at a time, or fails as truncated (inside `what`).
    fn take_chunks(&mut self, mut n: u64, what: &'static str, mut take: impl FnMut(&[u8])) -> Result<(), Error> {
        while n > 0 {
            let avail = self.fill()?;
            if avail == 0 {
                return Err(Error::Truncated { what, at: self.location() });
            }
            let k = (avail as u64).min(n) as usize;
            take(&self.buffered()[..k]);
            self.consume(k);
            n -= k as u64;
        }
        Ok(())
    }

    /// Fills `out` completely from the stream, or fails as truncated.
    fn read_exact(&mut self, out: &mut [u8], what: &'static str) -> Result<(), Error> {
        let mut done = 0;
        self.take_chunks(out.len() as u64, what, |chunk| {
            out[done..done + chunk.len()].copy_from_slice(chunk);
            done += chunk.len();
        })
    }

    /// Skips `n` bytes of the stream; with `sum`, adds them to the checksum.
    fn skip(&mut self, n: u64, what: &'static str, sum: bool) -> Result<(), Error> {
        if !sum {
            return self.take_chunks(n, what, |_| {});
        }
        let mut total = self.sum;
        let result = self.take_chunks(n, what, |chunk| total = byte_sum(total, chunk));
        self.sum = total;
        result
    }

    /// Skips to the next multiple of 4 of the stream offset.
    fn align4(&mut self, what: &'static str) -> Result<(), Error> {
        let pad = (4 - self.pos % 4) % 4;
        self.skip(pad, what, false)
    }

    // ----- segments ----------------------------------------------------

    /// At top level: skips zero padding and starts the next segment.
    /// Returns false at end of file.
    fn start_segment(&mut self) -> Result<bool, Error> {
        let Source::Raw(input) = &mut self.src else {
            return Err(Error::Io { offset: 0, source: Self::poisoned() });
        };
        let max_image_bytes = self.opts.max_image_bytes;
        let io_err = |input: &Input<R>, source| {
            if input.limit_hit {
                Error::ImageTooLarge { max: max_image_bytes }
            } else {
                Error::Io { offset: input.offset(), source }
            }
        };
        if let Err(e) = input.skip_zeros() {
            return Err(io_err(input, e));
        }
        let offset = input.offset();
        let magic = match input.peek(MAGIC_LEN) {
            Ok([]) => return Ok(false),
            Ok(head) => {
                let head = &head[..head.len().min(MAGIC_LEN)];
                (compression::detect(head), head.to_vec())
            }
            Err(e) => return Err(io_err(input, e)),
        };
        let index = self.segments_seen;
        if magic.0 == Magic::Unknown && magic.1.len() < MAGIC_LEN {
            // The file ends before a whole magic number.
            return Err(Error::Truncated {
                what: "a segment's magic number",
                at: Location { segment: index, compression: Compression::None, segment_offset: offset, offset },
            });
        }
        match magic {
            (Magic::Cpio, found) => {
                // The kernel only takes an uncompressed archive at a 4-byte
                // aligned offset (otherwise it tries to decompress it).
                if offset % 4 != 0 {
                    return Err(Error::BadMagic { offset, found });
                }
                self.seg = Segment { index, compression: Compression::None, start: offset };
                self.pos = offset;
                self.state = State::Header;
            }
            (Magic::Compressed(compression), _) => {
                let Source::Raw(input) = std::mem::replace(&mut self.src, Source::Poisoned) else {
                    return Ok(false);
                };
                let limits = DecoderLimits { memory: self.opts.decoder_memory_limit };
                let decoder = Decoder::new(compression, input, limits).map_err(|source| Error::Decompress {
                    compression,
                    segment_offset: offset,
                    decompressed: 0,
                    source,
                })?;
                self.src = Source::Decoded(Box::new(BufReader::with_capacity(self.opts.buffer_size, decoder)));
                self.seg = Segment { index, compression, start: offset };
                self.pos = 0;
                self.state = State::Between;
            }
            (Magic::OldCpio(format), _) => {
                return Err(Error::UnsupportedCpioFormat {
                    format,
                    at: Location { segment: index, compression: Compression::None, segment_offset: offset, offset },
                });
            }
            (Magic::Unsupported(name, reason), magic) => {
                return Err(Error::UnsupportedCompression { name, reason, magic, offset });
            }
            (Magic::Unknown, found) => return Err(Error::BadMagic { offset, found }),
        }
        self.segments_seen += 1;
        Ok(true)
    }

    /// In a compressed segment after a trailer: zero padding, then either
    /// the end of the stream (back to top level) or another archive.
    fn between_archives(&mut self) -> Result<(), Error> {
        let zeros_from = self.pos;
        loop {
            let avail = self.fill()?;
            if avail == 0 {
                // End of this compressed stream: hand the raw input back.
                let src = std::mem::replace(&mut self.src, Source::Poisoned);
                if let Source::Decoded(d) = src {
                    self.src = Source::Raw(d.into_inner().into_input());
                }
                self.state = State::Top;
                return Ok(());
            }
            let buf = self.buffered();
            let zeros = buf.iter().position(|&b| b != 0).unwrap_or(buf.len());
            let first = buf.get(zeros).copied();
            self.consume(zeros);
            match first {
                None => continue,
                Some(b'0') => {
                    if self.pos % 4 != 0 && self.pos != zeros_from {
                        return Err(Error::BrokenPadding { at: self.location() });
                    }
                    self.state = State::Header;
                    return Ok(());
                }
                Some(found) => {
                    return Err(Error::Junk { at: self.location(), found });
                }
            }
        }
    }

    // ----- cpio --------------------------------------------------------

    /// Parses one header (and name). Returns true for an entry, false for
    /// the trailer (after updating the state).
    fn read_header(&mut self) -> Result<bool, Error> {
        let at = self.location();
        let mut hdr = [0u8; HEADER_LEN];
        // The magic first, so that an odc header (shorter) is named as such.
        self.read_exact(&mut hdr[..6], "a cpio header")?;
        let format = match &hdr[..6] {
            b"070701" => CpioFormat::Newc,
            b"070702" => CpioFormat::Crc,
            b"070707" => return Err(Error::UnsupportedCpioFormat { format: "odc", at }),
            [0xc7, 0x71, ..] | [0x71, 0xc7, ..] => {
                return Err(Error::UnsupportedCpioFormat { format: "old binary", at });
            }
            other => {
                let mut found = [0u8; 6];
                found.copy_from_slice(other);
                return Err(Error::BadHeaderMagic { at, found });
            }
        };
        self.read_exact(&mut hdr[6..], "a cpio header")?;
        let field = |i: usize| -> Result<u32, Error> {
            let raw = &hdr[6 + 8 * i..14 + 8 * i];
            parse_hex8(raw).ok_or_else(|| Error::BadHeaderField {
                field: FIELD_NAMES[i],
                value: String::from_utf8_lossy(raw).into_owned(),
                at,
            })
        };
        let ino = field(0)?;
        let mode = field(1)?;
        let uid = field(2)?;
        let gid = field(3)?;
        let nlink = field(4)?;
        let mtime = field(5)?;
        let size = field(6)?;
        let dev_major = field(7)?;
        let dev_minor = field(8)?;
        let rdev_major = field(9)?;
        let rdev_minor = field(10)?;
        let namesize = field(11)?;
        let checksum = field(12)?;

        if namesize == 0 {
            return Err(Error::BadHeaderField { field: FIELD_NAMES[11], value: "00000000".to_owned(), at });
        }
        if u64::from(namesize) > self.opts.max_name_len {
            return Err(Error::NameTooLong { len: u64::from(namesize), max: self.opts.max_name_len, at });
        }

        // Read the name into the reused buffer.
        let mut name = std::mem::take(&mut self.entry.path);
        name.clear();
        let res = self.read_into(&mut name, u64::from(namesize), "a cpio entry name");
        if let Err(e) = res {
            self.entry.path = name;
            return Err(e);
        }
        if name.last() != Some(&0) {
            self.entry.path = name;
            return Err(Error::NameNotTerminated { at });
        }
        // Drop the NUL, and any further NULs some writers pad names with.
        while name.last() == Some(&0) {
            name.pop();
        }
        let is_trailer = name == TRAILER;
        let keep = normalise_path(&name).len();
        let strip = name.len() - keep;
        name.drain(..strip);
        self.entry.path = name;
        self.align4("cpio name padding")?;

        if is_trailer {
            self.skip(u64::from(size), "trailer data", false)?;
            self.align4("trailer padding")?;
            self.state = match self.src {
                Source::Decoded(_) => State::Between,
                _ => State::Top,
            };
            return Ok(false);
        }

        let e = &mut self.entry;
        e.mode = mode;
        e.size = u64::from(size);
        e.ino = ino;
        e.uid = uid;
        e.gid = gid;
        e.nlink = nlink;
        e.mtime = mtime;
        e.dev_major = dev_major;
        e.dev_minor = dev_minor;
        e.rdev_major = rdev_major;
        e.rdev_minor = rdev_minor;
        e.checksum = checksum;
        e.format = format;
        e.segment = self.seg.index;
        e.compression = self.seg.compression;
        e.segment_offset = self.seg.start;
        e.header_offset = at.offset;
        e.has_link_target = false;
        self.remaining = u64::from(size);
        self.link_pos = 0;
        self.sum = 0;
        self.verify_sum = format == CpioFormat::Crc
            && self.opts.verify_checksums
            && size > 0
            && FileType::from_mode(mode) == FileType::Regular;

        if FileType::from_mode(mode) == FileType::Symlink && u64::from(size) <= self.opts.max_symlink_len {
            let mut target = std::mem::take(&mut self.entry.link_target);
            target.clear();
            let res = self.read_into(&mut target, u64::from(size), "a symlink target");
            self.entry.link_target = target;
            res?;
            self.entry.has_link_target = true;
            self.remaining = 0;
        }
        Ok(true)
    }

    /// Appends exactly `n` bytes of the stream to `out`.
    fn read_into(&mut self, out: &mut Vec<u8>, n: u64, what: &'static str) -> Result<(), Error> {
        self.take_chunks(n, what, |chunk| out.extend_from_slice(chunk))
    }

    /// Skips the rest of the current entry's data and its padding, and
    /// checks the crc checksum.
    fn finish_entry(&mut self) -> Result<(), Error> {
        let remaining = std::mem::take(&mut self.remaining);
        self.skip(remaining, "file data", self.verify_sum)?;
        if self.verify_sum && self.sum != self.entry.checksum {
            return Err(Error::ChecksumMismatch {
                path: self.entry.path_lossy().into_owned(),
                expected: self.entry.checksum,
                actual: self.sum,
                at: Location { offset: self.entry.header_offset, ..self.location() },
            });
        }
        self.align4("file data padding")
    }

    /// `Read` for the current entry's data.
    fn read_data(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        if !self.has_entry || out.is_empty() {
            return Ok(0);
        }
        if self.entry.has_link_target {
            let rest = self.entry.link_target.get(self.link_pos..).unwrap_or(&[]);
            let n = rest.len().min(out.len());
            out[..n].copy_from_slice(&rest[..n]);
            self.link_pos += n;
            return Ok(n);
        }
        if self.remaining == 0 {
            return Ok(0);
        }
        let avail = self.fill()?;
        if avail == 0 {
            return Err(Error::Truncated { what: "file data", at: self.location() });
        }
        let k = (avail as u64).min(self.remaining).min(out.len() as u64) as usize;
        out[..k].copy_from_slice(&self.buffered()[..k]);
        if self.verify_sum {
            self.sum = byte_sum(self.sum, &out[..k]);
        }
        self.consume(k);
        self.remaining -= k as u64;
        Ok(k)
    }
}

const FIELD_NAMES: [&str; 13] = [
    "c_ino",
    "c_mode",
    "c_uid",
    "c_gid",
    "c_nlink",
    "c_mtime",
    "c_filesize",
    "c_devmajor",
    "c_devminor",
    "c_rdevmajor",
    "c_rdevminor",
    "c_namesize",
    "c_check",
];

fn parse_hex8(raw: &[u8]) -> Option<u32> {
    raw.iter().try_fold(0u32, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        Some((acc << 4) | u32::from(d))
    })
}

/// The "crc" format's checksum: the sum of all data bytes, modulo 2^32.
fn byte_sum(acc: u32, data: &[u8]) -> u32 {
    data.iter().fold(acc, |a, &b| a.wrapping_add(u32::from(b)))
}

/// The current entry of a [`Reader`]: its metadata, and a [`Read`] over its
/// data (for a symlink whose target was read, that target).
///
/// Dropping it without reading is fine; the data is skipped on the next
/// [`Reader::next_entry`].
pub struct EntryReader<'a, R: Read> {
    reader: &'a mut Reader<R>,
}

impl<R: Read> EntryReader<'_, R> {
    /// The entry's metadata.
    pub fn entry(&self) -> &Entry {
        &self.reader.entry
    }

    /// Reads the entry's (remaining) data into a vector, failing with
    /// [`io::ErrorKind::InvalidData`] if it is longer than `max` bytes,
    /// so an untrusted size never decides an allocation.
    pub fn read_to_vec(&mut self, max: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.by_ref().take(max).read_to_end(&mut out)?;
        let mut probe = [0u8; 1];
        if self.read(&mut probe)? != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("entry data is longer than {max} bytes")));
        }
        Ok(out)
    }
}

impl<R: Read> Read for EntryReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.reader.read_data(out).map_err(Error::into_io)
    }
}

/// Iterator of owned [`Entry`] values, from [`Reader::entries`].
///
/// Ends after the first error.
pub struct Entries<R: Read> {
    reader: Reader<R>,
}

impl<R: Read> Iterator for Entries<R> {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.reader.next_entry() {
            Ok(Some(e)) => Some(Ok(e.entry().clone())),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
