//! Buffered raw input that knows its file offset.
//!
//! Decoders are given this as their `BufRead`; they only `consume` what they
//! used, so when a compressed stream ends the input is positioned exactly at
//! the next segment. `peek` lets the segment scanner look at magic bytes
//! without consuming them.

use std::io::{self, BufRead, Read};

pub(crate) struct Input<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// File offset of `buf[pos]`.
    offset: u64,
    /// The inner reader reported end of file.
    pub(crate) eof: bool,
    /// The inner reader returned an error (so a decoder error that follows
    /// is an I/O problem, not corrupt data).
    pub(crate) io_failed: bool,
}

impl<R: Read> Input<R> {
    pub(crate) fn new(inner: R, capacity: usize) -> Self {
        Input {
            inner,
            buf: vec![0; capacity.max(16)].into_boxed_slice(),
            pos: 0,
            end: 0,
            offset: 0,
            eof: false,
            io_failed: false,
        }
    }

    /// File offset of the next unconsumed byte.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    fn read_more(&mut self) -> io::Result<usize> {
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    // A misbehaving reader could claim more than it was given.
                    let n = n.min(self.buf.len() - self.end);
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.io_failed = true;
                    return Err(e);
                }
            }
        }
    }

    /// Returns at least `n` buffered bytes (fewer only at end of file),
    /// without consuming them. `n` must be small compared to the capacity.
    pub(crate) fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.end - self.pos < n {
            // Move the unconsumed tail to the front, then fill.
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
            while self.end < n && self.end < self.buf.len() {
                if self.read_more()? == 0 {
                    break;
                }
            }
        }
        Ok(&self.buf[self.pos..self.end])
    }

    /// Consumes consecutive zero bytes; returns how many.
    pub(crate) fn skip_zeros(&mut self) -> io::Result<u64> {
        let mut skipped = 0u64;
        loop {
            let avail = self.fill_buf()?;
            if avail.is_empty() {
                return Ok(skipped);
            }
            let zeros = avail.iter().position(|&b| b != 0).unwrap_or(avail.len());
            self.consume(zeros);
            skipped += zeros as u64;
            if zeros == 0 || self.pos < self.end {
                return Ok(skipped);
            }
        }
    }
}

impl<R: Read> BufRead for Input<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            self.read_more()?;
        }
        Ok(&self.buf[self.pos..self.end])
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.end - self.pos);
        self.pos += amt;
        self.offset += amt as u64;
    }
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns one byte per call, to exercise refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), out.first_mut()) {
                (Some((&b, rest)), Some(o)) => {
                    *o = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn peek_gathers_across_short_reads_and_offset_tracks_consume() {
        let mut input = Input::new(Trickle(b"\0\0\0\0abcdef"), 16);
        assert_eq!(input.skip_zeros().unwrap(), 4);
        assert_eq!(input.offset(), 4);
        assert_eq!(input.peek(4).unwrap(), b"abcd");
        input.consume(2);
        assert_eq!(input.offset(), 6);
        assert_eq!(input.peek(10).unwrap(), b"cdef");
        let mut rest = Vec::new();
        input.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"cdef");
        assert_eq!(input.offset(), 10);
        assert!(input.eof);
    }
}
