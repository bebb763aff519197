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
    /// Bytes of the inner reader taken so far, and the most that will be.
    taken: u64,
    limit: u64,
    /// The limit was reached with more input behind it.
    pub(crate) limit_hit: bool,
}

/// The error [`Input`] reports when the image is longer than its limit.
#[derive(Debug)]
pub(crate) struct InputTooLong;

impl std::fmt::Display for InputTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the image is longer than the reader's limit")
    }
}

impl std::error::Error for InputTooLong {}

impl<R: Read> Input<R> {
    /// Reads `inner` through a buffer of `capacity` bytes, and at most
    /// `limit` bytes of it: what follows is an error, not more input.
    pub(crate) fn new(inner: R, capacity: usize, limit: u64) -> Self {
        Input {
            inner,
            buf: vec![0; capacity.max(16)].into_boxed_slice(),
            pos: 0,
            end: 0,
            offset: 0,
            eof: false,
            io_failed: false,
            taken: 0,
            limit,
            limit_hit: false,
        }
    }

    /// File offset of the next unconsumed byte.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    fn read_more(&mut self) -> io::Result<usize> {
        // One byte past the limit tells a longer input from one that ends
        // exactly there.
        let room = usize::try_from(self.limit.saturating_add(1).saturating_sub(self.taken)).unwrap_or(usize::MAX);
        let want = (self.buf.len() - self.end).min(room);
        if want == 0 {
            self.limit_hit = true;
            return Err(io::Error::other(InputTooLong));
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..self.end + want]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    // A misbehaving reader could claim more than it was given.
                    let n = n.min(want);
                    self.taken += n as u64;
                    if self.taken > self.limit {
                        self.limit_hit = true;
                        return Err(io::Error::other(InputTooLong));
                    }
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
        let mut input = Input::new(Trickle(b"\0\0\0\0abcdef"), 16, u64::MAX);
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

    #[test]
    fn input_past_the_limit_is_an_error_and_at_the_limit_is_not() {
        let mut input = Input::new(&b"0123456789"[..], 4, 10);
        let mut all = Vec::new();
        input.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"0123456789");
        assert!(!input.limit_hit);
        let mut input = Input::new(&b"0123456789a"[..], 4, 10);
        let err = input.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<InputTooLong>()), "{err:?}");
        assert!(input.limit_hit);
        // Zeros are input too: an endless stream of them ends at the limit.
        let mut zeros = Input::new(io::repeat(0), 64, 1000);
        assert!(zeros.skip_zeros().is_err());
        assert!(zeros.limit_hit && zeros.offset() <= 1000);
    }
}
