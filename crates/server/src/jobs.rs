//! Promotions started by `POST /hooks/github` run as background *jobs*: the hook
//! answers `202 Accepted` with a job id at once (GitHub gives up on a webhook after
//! 10 seconds and a promotion can take minutes), and `GET /v1/jobs/<id>` tells how the
//! job went.
//!
//! Bounds: at most [`JobTable::max_pending`] jobs queued or running (more are refused
//! with 503), at most `--max-promotions` running at once (a semaphore; promotions of
//! one repository still take turns on its lock), and the newest [`RETAINED`] finished
//! jobs kept for status queries. A GitHub delivery id (`X-GitHub-Delivery`) maps to
//! one job: a redelivery gets the existing job back instead of a second promotion.
//! Jobs live in memory: after a restart their ids are unknown (404). At shutdown queued
//! jobs are dropped and running ones may finish within the shutdown deadline
//! (`crate::promotions`, `Limits::job_deadline`).
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use sha2::Digest as _;

/// Finished jobs kept for `GET /v1/jobs/<id>`.
pub const RETAINED: usize = 1000;

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a promotion slot.
    Queued,
    /// Promoting.
    Running,
    /// Done; the promotion's outcome (as `POST /hooks/github` used to return it).
    Succeeded {
        /// The [`crate::PromoteOutcome`] as JSON.
        outcome: serde_json::Value,
    },
    /// Failed; the HTTP status the error maps to, and the error with its sources.
    Failed {
        /// 400, 409, 422, 502, … as for a synchronous request.
        status: u16,
        /// The error text.
        error: String,
    },
}

impl JobState {
    /// True once the job will not change any more.
    pub fn finished(&self) -> bool {
        matches!(self, Self::Succeeded { .. } | Self::Failed { .. })
    }
}

/// One promotion requested through the hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Job {
    /// 32 hex digits, unguessable.
    pub id: String,
    /// The `X-GitHub-Delivery` it came with, if any.
    pub delivery: Option<String>,
    /// The host.
    pub host: String,
    /// The commit.
    pub commit: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Where it is.
    #[serde(flatten)]
    pub state: JobState,
}

/// What [`JobTable::submit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// A new job; run it.
    New(Job),
    /// This delivery already has a job: nothing new to run.
    Duplicate(Job),
    /// Too many jobs queued or running.
    Full,
}

/// The jobs of one server.
#[derive(Debug)]
pub struct JobTable {
    jobs: HashMap<String, Job>,
    /// Finished job ids, oldest first (eviction order).
    finished: VecDeque<String>,
    deliveries: HashMap<String, String>,
    pending: usize,
    max_pending: usize,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn new_id(delivery: Option<&str>) -> String {
    let mut h = sha2::Sha256::new();
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    h.update(nanos.to_le_bytes());
    // Different for every process and run (ASLR), so ids are not predictable from the
    // counter and the clock alone.
    h.update((std::ptr::from_ref(&COUNTER) as usize).to_le_bytes());
    h.update(delivery.unwrap_or("").as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Checks an `X-GitHub-Delivery` value (GitHub sends a GUID).
pub fn valid_delivery(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 128
        && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl JobTable {
    /// An empty table admitting at most `max_pending` unfinished jobs.
    pub fn new(max_pending: usize) -> Self {
        Self {
            jobs: HashMap::new(),
            finished: VecDeque::new(),
            deliveries: HashMap::new(),
            pending: 0,
            max_pending: max_pending.max(1),
        }
    }

    /// The cap on queued + running jobs.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Registers a job for `host`/`commit`, unless the delivery already has one or the
    /// table is full.
    pub fn submit(&mut self, delivery: Option<&str>, host: &str, commit: &str, now: i64) -> Submitted {
        if let Some(existing) = delivery.and_then(|d| self.deliveries.get(d)).and_then(|id| self.jobs.get(id)) {
            return Submitted::Duplicate(existing.clone());
        }
        if self.pending >= self.max_pending {
            return Submitted::Full;
        }
        let job = Job {
            id: new_id(delivery),
            delivery: delivery.map(str::to_owned),
            host: host.to_owned(),
            commit: commit.to_owned(),
            created_at: now,
            state: JobState::Queued,
        };
        if let Some(d) = delivery {
            self.deliveries.insert(d.to_owned(), job.id.clone());
        }
        self.jobs.insert(job.id.clone(), job.clone());
        self.pending += 1;
        Submitted::New(job)
    }

    /// Moves a job on; a finished job is counted out of the pending ones and old
    /// finished jobs (and their delivery ids) are forgotten beyond [`RETAINED`].
    pub fn set(&mut self, id: &str, state: JobState) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        if job.state.finished() {
            return;
        }
        let done = state.finished();
        job.state = state;
        if done {
            self.pending = self.pending.saturating_sub(1);
            self.finished.push_back(id.to_owned());
            while self.finished.len() > RETAINED {
                if let Some(old) = self.finished.pop_front()
                    && let Some(job) = self.jobs.remove(&old)
                    && let Some(d) = job.delivery
                {
                    self.deliveries.remove(&d);
                }
            }
        }
    }

    /// A job by id.
    pub fn get(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(s: Submitted) -> Job {
        match s {
            Submitted::New(j) => j,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_delivery_maps_to_one_job_and_the_table_is_bounded() {
        let mut t = JobTable::new(2);
        let a = new(t.submit(Some("d-1"), "web1", "c", 1));
        assert_eq!(a.id.len(), 32);
        assert_eq!(t.submit(Some("d-1"), "web1", "c", 2), Submitted::Duplicate(a.clone()));
        let b = new(t.submit(None, "web2", "c", 3));
        assert_ne!(a.id, b.id);
        assert_eq!(t.submit(Some("d-2"), "web3", "c", 4), Submitted::Full);
        // A redelivery is answered even when full.
        assert!(matches!(t.submit(Some("d-1"), "web1", "c", 5), Submitted::Duplicate(_)));

        t.set(&a.id, JobState::Running);
        assert_eq!(t.get(&a.id).unwrap().state, JobState::Running);
        t.set(&a.id, JobState::Failed { status: 502, error: "x".into() });
        // Finished jobs stay finished and free a slot.
        t.set(&a.id, JobState::Running);
        assert!(t.get(&a.id).unwrap().state.finished());
        assert!(matches!(t.submit(Some("d-2"), "web3", "c", 6), Submitted::New(_)));
        // A finished delivery is still not started again.
        assert!(matches!(t.submit(Some("d-1"), "web1", "c", 7), Submitted::Duplicate(_)));
    }

    #[test]
    fn old_finished_jobs_are_forgotten() {
        let mut t = JobTable::new(1);
        let first = new(t.submit(Some("first"), "h", "c", 0));
        t.set(&first.id, JobState::Succeeded { outcome: serde_json::Value::Null });
        for i in 0..RETAINED {
            let j = new(t.submit(Some(&format!("d{i}")), "h", "c", 0));
            t.set(&j.id, JobState::Succeeded { outcome: serde_json::Value::Null });
        }
        assert!(t.get(&first.id).is_none());
        assert!(matches!(t.submit(Some("first"), "h", "c", 0), Submitted::New(_)));
        assert!(t.jobs.len() <= RETAINED + 1);
    }

    #[test]
    fn delivery_ids_are_checked() {
        assert!(valid_delivery("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        assert!(!valid_delivery(""));
        assert!(!valid_delivery("a b"));
        assert!(!valid_delivery(&"a".repeat(129)));
    }
}
