//! What a promotion reports while it runs: which of its five [`Step`]s it is in, how many
//! bytes of the upload went out, and detail lines. A front end decides how to show it —
//! the CLI as a live line on a terminal and as plain lines otherwise, the server in its
//! log. Any `Fn(&str)` is a [`Progress`] that gets every step and detail as one line.
use std::fmt;

/// The steps of a promotion, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The commit is in the repository (fetched).
    CheckCommit,
    /// The closure goes to the cache (skipped when it is not in the local store).
    Upload,
    /// The cache is read back: every path there, every narinfo signed.
    Verify,
    /// Branch and manifest note pushed (after waiting for the repository lock).
    Branch,
    /// The signed manifest written to its files and the server.
    Publish,
}

impl Step {
    /// How many steps a promotion has.
    pub const COUNT: usize = 5;

    /// 1-based position.
    pub fn number(self) -> usize {
        match self {
            Self::CheckCommit => 1,
            Self::Upload => 2,
            Self::Verify => 3,
            Self::Branch => 4,
            Self::Publish => 5,
        }
    }

    /// What the step does, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::CheckCommit => "checking the commit",
            Self::Upload => "uploading the closure",
            Self::Verify => "verifying the cache",
            Self::Branch => "moving the branch",
            Self::Publish => "publishing the manifest",
        }
    }
}

impl fmt::Display for Step {
    /// `[2/5] uploading the closure`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}/{}] {}", self.number(), Self::COUNT, self.describe())
    }
}

/// Receives a promotion's progress.
pub trait Progress: Sync {
    /// A step begins; `detail` says on what (`/srv/git/r.git has 1a2b…`).
    fn step(&self, step: Step, detail: &str);

    /// The upload sent `done` NAR bytes of `total` (when known). Called often; the
    /// default ignores it (the step and the final byte count are lines of their own).
    fn bytes(&self, done: u64, total: Option<u64>) {
        let _ = (done, total);
    }

    /// A detail line.
    fn note(&self, line: &str);
}

impl<F: Fn(&str) + Sync> Progress for F {
    fn step(&self, step: Step, detail: &str) {
        self(&format!("{step}: {detail}"));
    }

    fn note(&self, line: &str) {
        self(line);
    }
}

/// `12.3 MiB` (binary units, one decimal).
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_function_gets_steps_and_notes_as_lines() {
        let lines = std::sync::Mutex::new(Vec::new());
        let sink = |l: &str| lines.lock().unwrap().push(l.to_owned());
        let p: &dyn Progress = &sink;
        p.step(Step::Upload, "to file:///cache");
        p.bytes(1, Some(2));
        p.note("uploaded 2 B");
        assert_eq!(*lines.lock().unwrap(), ["[2/5] uploading the closure: to file:///cache", "uploaded 2 B"]);
        let numbers: Vec<usize> =
            [Step::CheckCommit, Step::Upload, Step::Verify, Step::Branch, Step::Publish].map(Step::number).into();
        assert_eq!(numbers, (1..=Step::COUNT).collect::<Vec<_>>());
    }
}
