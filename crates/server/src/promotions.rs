//! Running a hook job: wait for a promotion slot, promote on a blocking thread, record the
//! outcome. A job still waiting when shutdown begins is dropped (marked failed with 503:
//! send the hook again); a running one is counted, so that shutdown can wait for it.
use std::sync::Arc;

use axum::http::StatusCode;
use fleetgate_nix::Nix;
use serde_json::json;

use crate::jobs::JobState;
use crate::routes::error_status;
use crate::state::AppState;
use fleetgate_channel::promote::{ChannelConfig, PromoteRequest, promote_with};

/// Runs job `id` in the background.
pub(crate) fn spawn(state: Arc<AppState>, id: String, nix: Nix, cfg: ChannelConfig, req: PromoteRequest) {
    tokio::spawn(async move {
        // The semaphore bounds running promotions; it is never closed.
        let permit = tokio::select! {
            permit = state.promotions.clone().acquire_owned() => permit.ok(),
            () = state.stopped() => None,
        };
        let running = permit.as_ref().and_then(|_| state.start_job());
        let Some(_running) = running else {
            (state.log)(&format!("hook: job {id}: dropped, the service is shutting down"));
            let error = "the service shut down before this promotion started; send the hook again".to_owned();
            set_job(&state, &id, JobState::Failed { status: StatusCode::SERVICE_UNAVAILABLE.as_u16(), error });
            return;
        };
        set_job(&state, &id, JobState::Running);
        (state.log)(&format!("hook: job {id}: promoting {} to {}", req.host, req.commit));
        let worker = state.clone();
        let result = tokio::task::spawn_blocking(move || {
            let log = |line: &str| (worker.log)(&format!("hook: {line}"));
            promote_with(&nix, &cfg, &req, Some(worker.as_ref()), &log)
        })
        .await;
        let done = match result {
            Ok(Ok(outcome)) => {
                (state.log)(&format!("hook: job {id} succeeded"));
                JobState::Succeeded { outcome: json!(outcome) }
            }
            Ok(Err(e)) => {
                (state.log)(&format!("hook: job {id}: promotion failed: {}", e.chain()));
                JobState::Failed { status: error_status(&e).as_u16(), error: e.chain() }
            }
            Err(e) => JobState::Failed {
                status: StatusCode::INTERNAL_SERVER_ERROR.as_u16(),
                error: format!("promotion task: {e}"),
            },
        };
        set_job(&state, &id, done);
        drop(permit);
    });
}

fn set_job(state: &AppState, id: &str, job_state: JobState) {
    if let Ok(mut jobs) = state.jobs.lock() {
        jobs.set(id, job_state);
    }
}
