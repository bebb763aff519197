//! A child's output pipes, read on threads of their own — and bounded, so that no
//! child (a hostile host's answer over SSH, a build log) can grow fleetgate's memory
//! without end:
//!
//! * standard output is kept whole up to [`MAX_STDOUT`]; past it the child's process
//!   group is killed and the run is [`crate::ProcessError::OutputTooLarge`] (a truncated
//!   answer would be parsed as if it were whole);
//! * standard error keeps its last [`STDERR_KEEP`] bytes (errors show its tail; a
//!   streaming caller still sees every line as it comes, a line cut every
//!   [`MAX_LINE`] bytes).
use std::io::{BufRead as _, BufReader, Read};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rustix::process::{Pid, Signal};

/// The most standard output a child may print.
pub const MAX_STDOUT: usize = 256 << 20;

/// How much of the end of standard error is kept.
pub const STDERR_KEEP: usize = 4 << 20;

/// The longest line handed to a streaming caller; a longer one comes in pieces.
pub const MAX_LINE: usize = 64 << 10;

/// Standard output as read: whole, or cut at the cap (`overflowed`).
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub(crate) bytes: Vec<u8>,
    pub(crate) overflowed: bool,
}

/// Reads `pipe` in chunks to its end, or until `take` says stop (returns false).
fn read_chunks(mut pipe: impl Read, mut take: impl FnMut(&[u8]) -> bool) {
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !take(&chunk[..n]) {
                    break;
                }
            }
        }
    }
}

/// Reads standard output up to `cap` bytes; past it kills `group` and stops.
pub(crate) fn stdout_reader<R: Read + Send + 'static>(
    pipe: Option<R>,
    group: Option<Pid>,
    cap: usize,
) -> Option<JoinHandle<Captured>> {
    pipe.map(|p| {
        std::thread::spawn(move || {
            let mut out = Captured::default();
            read_chunks(p, |chunk| {
                if out.bytes.len() + chunk.len() > cap {
                    out.overflowed = true;
                    if let Some(group) = group {
                        let _ = rustix::process::kill_process_group(group, Signal::KILL);
                    }
                    return false;
                }
                out.bytes.extend_from_slice(chunk);
                true
            });
            out
        })
    })
}

/// Reads standard error to its end, keeping the last [`STDERR_KEEP`] bytes.
pub(crate) fn stderr_reader<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|p| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            read_chunks(p, |chunk| {
                keep_tail(&mut kept, chunk);
                true
            });
            kept
        })
    })
}

/// Appends `more` to `kept`, dropping from the front so that at most about twice
/// [`STDERR_KEEP`] is ever held and at least the last [`STDERR_KEEP`] bytes are kept.
pub(crate) fn keep_tail(kept: &mut Vec<u8>, more: &[u8]) {
    kept.extend_from_slice(more);
    if kept.len() > 2 * STDERR_KEEP {
        let cut = kept.len() - STDERR_KEEP;
        kept.drain(..cut);
    }
}

/// Reads `pipe` line by line on a thread of its own, each line (with its `\n`, if it had
/// one; at most [`MAX_LINE`] bytes, a longer line in pieces) sent as it is complete; the
/// channel closes at the end of the pipe.
pub(crate) fn line_reader<R: Read + Send + 'static>(pipe: Option<R>) -> Option<mpsc::Receiver<Vec<u8>>> {
    pipe.map(|p| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut p = BufReader::new(p);
            loop {
                let mut line = Vec::new();
                match (&mut p).take(MAX_LINE as u64).read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        rx
    })
}

/// Whether a reader thread is done.
pub(crate) fn finished<T>(t: &Option<JoinHandle<T>>) -> bool {
    t.as_ref().is_none_or(JoinHandle::is_finished)
}

/// A reader thread's result (the default if it panicked or there was no pipe).
pub(crate) fn join<T: Default>(t: Option<JoinHandle<T>>) -> T {
    t.and_then(|t| t.join().ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_tail_is_bounded_and_ends_with_the_last_bytes() {
        let mut kept = Vec::new();
        for i in 0..3000u32 {
            keep_tail(&mut kept, &[u8::try_from(i % 251).unwrap_or(0); 4096]);
            assert!(kept.len() <= 2 * STDERR_KEEP + 4096);
        }
        assert!(kept.len() >= STDERR_KEEP);
        assert_eq!(kept.last(), Some(&u8::try_from(2999 % 251).unwrap_or(0)));
    }

    #[test]
    fn a_long_line_comes_in_pieces() {
        let text = [vec![b'x'; MAX_LINE + 10], b"\nshort\n".to_vec()].concat();
        let rx = line_reader(Some(std::io::Cursor::new(text))).expect("a pipe");
        let lines: Vec<Vec<u8>> = rx.iter().collect();
        assert_eq!(lines.iter().map(Vec::len).collect::<Vec<_>>(), [MAX_LINE, 11, 6]);
    }
}
