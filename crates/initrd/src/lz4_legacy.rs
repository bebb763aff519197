//! The LZ4 "legacy" format (`lz4 -l`), which the kernel's `unlz4` reads.
//!
//! Handwritten because no crate reads it the way the kernel does: the format
//! has no end marker, so a stream ends at end of input, at a zero chunk size
//! (zero padding between initramfs segments), or when fewer than 4 bytes are
//! left; a repeated magic number starts a new stream that continues this one
//! (see the kernel's `lib/decompress_unlz4.c`). Each chunk is an LZ4 block
//! of at most 8 MiB of output, decoded with `lz4_flex::block`.

use std::io::{self, BufRead, Read};

use crate::input::Input;

const MAGIC: u32 = 0x184C_2102;
/// Uncompressed size of every chunk but the last.
const CHUNK: usize = 8 << 20;
/// `LZ4_COMPRESSBOUND(CHUNK)`: no valid chunk is larger.
const CHUNK_BOUND: usize = CHUNK + CHUNK / 255 + 16;

pub(crate) struct Lz4Legacy<R> {
    input: Input<R>,
    src: Vec<u8>,
    dst: Vec<u8>,
    pos: usize,
    end: usize,
    started: bool,
    finished: bool,
}

impl<R: Read> Lz4Legacy<R> {
    pub(crate) fn new(input: Input<R>) -> Self {
        Lz4Legacy { input, src: Vec::new(), dst: Vec::new(), pos: 0, end: 0, started: false, finished: false }
    }

    pub(crate) fn get_ref(&self) -> &Input<R> {
        &self.input
    }

    pub(crate) fn into_inner(self) -> Input<R> {
        self.input
    }

    /// Decodes the next chunk into `dst`; returns false at end of stream.
    fn next_chunk(&mut self) -> io::Result<bool> {
        loop {
            let head = self.input.peek(4)?;
            if head.len() < 4 {
                return Ok(false);
            }
            let size = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if size == MAGIC {
                self.input.consume(4);
                self.started = true;
                continue;
            }
            if !self.started {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "not an lz4 legacy stream"));
            }
            let size = size as usize;
            if size == 0 || size > CHUNK_BOUND {
                // Zero padding, or the start of something that is not ours.
                return Ok(false);
            }
            self.input.consume(4);
            self.src.resize(size, 0);
            self.input.read_exact(&mut self.src)?;
            // An LZ4 block expands at most ~255 times, so small chunks do
            // not need the whole 8 MiB output buffer.
            let out_len = size.saturating_mul(256).saturating_add(64).min(CHUNK);
            if self.dst.len() < out_len {
                self.dst.resize(out_len, 0);
            }
            let n = lz4_flex::block::decompress_into(&self.src, &mut self.dst[..out_len])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.pos = 0;
            self.end = n.min(self.dst.len());
            if n > 0 {
                return Ok(true);
            }
        }
    }
}

impl<R: Read> Read for Lz4Legacy<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.end {
            if self.finished || out.is_empty() {
                return Ok(0);
            }
            if !self.next_chunk()? {
                self.finished = true;
                return Ok(0);
            }
        }
        let n = (self.end - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.dst[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
