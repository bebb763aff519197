//! [`Stop`]: how a phase ended the install — its result, the outcome, the
//! machine's standing, and where a resume begins.

use crate::phase::Phase;
use crate::proof::Unproven;
use crate::report::{Outcome, PhaseResult, Standing};

/// How a phase stopped the install.
pub(crate) struct Stop {
    pub(crate) result: PhaseResult,
    pub(crate) outcome: Outcome,
    pub(crate) standing: Standing,
    pub(crate) error: String,
    /// Where a resume begins; `None`: no resume (state unknown).
    pub(crate) resume_from: Option<Phase>,
    pub(crate) next_step: String,
}

impl Stop {
    pub(crate) fn refused(
        standing: Standing,
        error: impl Into<String>,
        resume_from: Phase,
        next_step: impl Into<String>,
    ) -> Stop {
        Stop {
            result: PhaseResult::Refused,
            outcome: Outcome::Refused,
            standing,
            error: error.into(),
            resume_from: Some(resume_from),
            next_step: next_step.into(),
        }
    }

    pub(crate) fn failed(
        standing: Standing,
        error: impl Into<String>,
        resume_from: Phase,
        next_step: impl Into<String>,
    ) -> Stop {
        let known = standing != Standing::Unknown;
        Stop {
            result: PhaseResult::Failed,
            outcome: if known { Outcome::Failed } else { Outcome::Unknown },
            standing,
            error: error.into(),
            resume_from: known.then_some(resume_from),
            next_step: next_step.into(),
        }
    }

    pub(crate) fn unproven(u: Unproven, resume_from: Phase, next_step: impl Into<String>) -> Stop {
        Stop::failed(u.standing, u.reason, resume_from, next_step)
    }
}
