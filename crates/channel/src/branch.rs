//! Moving `nixos-tested-<host>`: the fast-forward decision, and the push that carries the
//! branch and the host's manifest note together (`git push --atomic`, each ref behind a
//! `--force-with-lease`), retried from a fresh fetch when the remote moved meanwhile.
//! Only such lease / fast-forward rejections are retried: a remote that declines the
//! update (hook, protected branch) or cannot be reached or authenticated to fails at
//! once.
use std::time::Duration;

use crate::Log;
use crate::commit::CommitId;
use crate::error::ChannelError;
use crate::git::{Mirror, PushFailure, RefUpdate, tracking_notes};
use crate::host::HostName;

/// How the branch relates to the promoted commit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Movement {
    /// The branch did not exist and was created.
    Created,
    /// The branch moved forward.
    FastForward {
        /// Where it was.
        from: String,
    },
    /// The branch already points at the commit: nothing changed.
    AlreadyAt,
    /// The commit is already an ancestor of the branch tip: nothing changed.
    AlreadyContained {
        /// The (newer) tip.
        tip: String,
    },
    /// `--force`: the branch moved backwards.
    ForcedRewind {
        /// Where it was.
        from: String,
    },
    /// `--force`: the branch jumped to an unrelated commit.
    ForcedSideways {
        /// Where it was.
        from: String,
    },
}

impl Movement {
    /// What happened, in the words every human-readable output uses (they match the JSON
    /// `kind`: `already_at` is "already at", `already_contained` "already contains").
    pub fn describe(&self, commit: &CommitId) -> String {
        match self {
            Self::Created => format!("created at {commit}"),
            Self::FastForward { from } => format!("fast-forwarded from {from} to {commit}"),
            Self::AlreadyAt => format!("already at {commit}, unchanged"),
            Self::AlreadyContained { tip } => format!("already contains {commit} (its tip is {tip}), unchanged"),
            Self::ForcedRewind { from } => format!("rewound from {from} to {commit} (--force)"),
            Self::ForcedSideways { from } => format!("moved sideways from {from} to {commit} (--force)"),
        }
    }

    /// True if the branch (and the manifest) changed.
    pub fn changed(&self) -> bool {
        !matches!(self, Self::AlreadyAt | Self::AlreadyContained { .. })
    }
}

/// Limits of one branch update.
#[derive(Clone, Debug)]
pub struct BranchPolicy {
    /// Allow rewinds and sideways jumps.
    pub force: bool,
    /// Push attempts before giving up.
    pub max_attempts: u32,
    /// How long to wait for the repository lock.
    pub lock_timeout: Duration,
}

impl Default for BranchPolicy {
    fn default() -> Self {
        Self { force: false, max_attempts: 5, lock_timeout: Duration::from_secs(600) }
    }
}

/// The decision for a branch at `current` asked to go to `commit`.
pub fn decide(
    mirror: &Mirror,
    branch: &str,
    current: Option<&str>,
    commit: &str,
    force: bool,
) -> Result<Movement, ChannelError> {
    let Some(current) = current else {
        return Ok(Movement::Created);
    };
    if current == commit {
        return Ok(Movement::AlreadyAt);
    }
    if mirror.is_ancestor(commit, current)? {
        return Ok(if force {
            Movement::ForcedRewind { from: current.to_owned() }
        } else {
            Movement::AlreadyContained { tip: current.to_owned() }
        });
    }
    if mirror.is_ancestor(current, commit)? {
        return Ok(Movement::FastForward { from: current.to_owned() });
    }
    if force {
        Ok(Movement::ForcedSideways { from: current.to_owned() })
    } else {
        Err(ChannelError::Diverged {
            branch: branch.to_owned(),
            current: current.to_owned(),
            commit: commit.to_owned(),
        })
    }
}

/// Checks that the mirror (just fetched) has `commit`, asking the remote for it by id if
/// no branch reaches it (GitHub and `uploadpack.allowAnySHA1InWant` servers allow that).
pub fn require_commit(mirror: &Mirror, commit: &CommitId) -> Result<(), ChannelError> {
    if !mirror.has_commit(commit.as_str()) {
        let _ = mirror.fetch_commit(commit.as_str());
        if !mirror.has_commit(commit.as_str()) {
            return Err(ChannelError::CommitNotFound { commit: commit.to_string(), repo: mirror.url().to_owned() });
        }
    }
    Ok(())
}

/// Moves the host's branch to `commit` and attaches `note` (the signed manifest) to it.
/// The caller holds the repository lock ([`crate::lock::RepoLock`] on
/// [`Mirror::lock_path`]). Returns what happened and how many pushes it took.
pub fn advance(
    mirror: &Mirror,
    host: &HostName,
    commit: &CommitId,
    note: &[u8],
    policy: &BranchPolicy,
    log: Log<'_>,
) -> Result<(Movement, u32), ChannelError> {
    let branch = host.branch();
    let notes_ref = host.notes_ref();
    mirror.ensure()?;
    let mut last_error = None;
    for attempt in 1..=policy.max_attempts.max(1) {
        mirror.fetch()?;
        require_commit(mirror, commit)?;
        let current = mirror.rev(&format!("refs/remotes/origin/{branch}"))?;
        let movement = decide(mirror, &branch, current.as_deref(), commit.as_str(), policy.force)?;
        if !movement.changed() {
            log.note(&format!("{branch}: {}", movement.describe(commit)));
            return Ok((movement, attempt - 1));
        }
        let old_note = mirror.rev(&tracking_notes(&notes_ref))?;
        let work_ref = format!("refs/notes/fleetgate-work/{host}");
        let new_note = mirror.make_note(&work_ref, old_note.as_deref(), commit.as_str(), note)?;
        let updates = [
            RefUpdate { remote_ref: format!("refs/heads/{branch}"), expect: current.clone(), new: commit.to_string() },
            RefUpdate { remote_ref: notes_ref.clone(), expect: old_note, new: new_note },
        ];
        match mirror.push_atomic(&updates) {
            Ok(()) => {
                log.note(&format!("{branch}: {}", movement.describe(commit)));
                return Ok((movement, attempt));
            }
            Err(PushFailure::Stale(e)) => {
                log.note(&format!(
                    "{branch}: push attempt {attempt}/{} rejected, the remote moved: {}",
                    policy.max_attempts.max(1),
                    e.stderr_tail().lines().last().unwrap_or("")
                ));
                last_error = Some(e);
                std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
            }
            Err(PushFailure::Declined(source)) => {
                log.note(&format!(
                    "{branch}: push attempt {attempt} declined by the remote, not retrying: {}",
                    source.stderr_tail().lines().last().unwrap_or("")
                ));
                return Err(ChannelError::PushRejected { branch, attempts: attempt, source });
            }
            // Unreachable remote, refused credentials, timeout: a retry would only hide
            // the cause, so it is reported at once.
            Err(PushFailure::NoAnswer(e)) => return Err(ChannelError::Git(e)),
        }
    }
    match last_error {
        Some(source) => Err(ChannelError::PushRejected { branch, attempts: policy.max_attempts.max(1), source }),
        None => Err(ChannelError::Internal("no push attempt was made".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_movement_is_described_in_words_that_match_its_json_kind() {
        let commit = CommitId::parse(&"c".repeat(40)).unwrap();
        let from = "f".repeat(40);
        let cases = [
            (Movement::Created, "created", "created at cccc"),
            (Movement::FastForward { from: from.clone() }, "fast_forward", "fast-forwarded from ffff"),
            (Movement::AlreadyAt, "already_at", "already at cccc"),
            (Movement::AlreadyContained { tip: from.clone() }, "already_contained", "already contains cccc"),
            (Movement::ForcedRewind { from: from.clone() }, "forced_rewind", "rewound from ffff"),
            (Movement::ForcedSideways { from }, "forced_sideways", "moved sideways from ffff"),
        ];
        for (movement, kind, words) in cases {
            assert_eq!(serde_json::to_value(&movement).unwrap()["kind"], kind);
            let text = movement.describe(&commit);
            assert!(text.starts_with(words), "{text}");
            assert!(!text.contains('{') && !text.contains("from:"), "no Debug output: {text}");
        }
    }
}
