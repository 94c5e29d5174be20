//! HandingOff: the live pipeline restarts where the replay ended.

use kube::{Api, ResourceExt};

use super::super::derived::request_handoff;
use super::super::objects;
use super::super::reason::Reason;
use super::super::run::{RunBackfill, Step, RECHECK};
use crate::api::backfill::{Backfill, BackfillPhase, BackfillStatus};
use crate::api::pipeline::Pipeline;
use crate::controller::common::snapshots;
use crate::controller::status::Requeue;
use crate::error::Error;

impl RunBackfill<'_> {
    /// Restarts the live pipeline where the replay ended: records the
    /// hand-off offsets as an offsets Savepoint of the live pipeline, asks
    /// the pipeline (by annotation) to restart from it, and waits until it
    /// has.
    pub(crate) async fn handing_off(
        &self,
        backfill: &Backfill,
        status: BackfillStatus,
    ) -> Result<Step, Error> {
        let Some(live) = self.pipeline(backfill) else {
            let message = format!("Pipeline `{}` is gone", backfill.spec.pipeline_ref);
            return Ok(Step::fail(status, Reason::ReferenceGone, message));
        };
        let name = objects::handoff_name(backfill);
        let restarted = live
            .status
            .as_ref()
            .and_then(|s| s.handed_off_from.as_deref());
        let pipelines: Api<Pipeline> = Api::namespaced(
            self.shared.client.clone(),
            &backfill.namespace().unwrap_or_default(),
        );
        let requested = live.annotations().get(snapshots::HANDOFF_ANNOTATION);
        let offsets = objects::handoff_offsets(&status);
        match decide(
            &name,
            restarted,
            requested.map(String::as_str),
            !offsets.is_empty(),
        ) {
            Next::Done { withdraw } => {
                // The request is done: the live object goes back to what its
                // owner (or Git) wrote.
                if withdraw {
                    request_handoff(&pipelines, &live, None).await?;
                }
                let message = format!(
                    "Pipeline `{}` continues from the hand-off offsets (Savepoint `{name}`)",
                    live.name_any()
                );
                return Ok(Step::advance(status, BackfillPhase::TearingDown, message));
            }
            Next::NothingToHandOff => {
                let message =
                    "the replay recorded no hand-off offsets on the source cluster".into();
                return Ok(Step::fail(status, Reason::NoHandoffOffsets, message));
            }
            Next::Request => {
                // The annotation is set only once the Savepoint is recorded.
                snapshots::record_handoff(&self.shared.client, &live, &name, offsets).await?;
                request_handoff(&pipelines, &live, Some(&name)).await?;
            }
            Next::Wait => {}
        }
        Ok(Step::wait(
            status,
            Reason::Phase(BackfillPhase::HandingOff),
            format!(
                "waiting for Pipeline `{}` to restart from Savepoint `{name}` at the offsets where the replay ended",
                live.name_any()
            ),
            Requeue::After(RECHECK),
        ))
    }
}

/// What HandingOff does next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The live pipeline restarted from the hand-off; `withdraw` the
    /// request still on it.
    Done { withdraw: bool },
    /// The replay recorded no offsets to hand off: the run fails.
    NothingToHandOff,
    /// Record the hand-off Savepoint and ask the live pipeline to restart from it.
    Request,
    /// Asked: wait for the restart.
    Wait,
}

/// Decides from the hand-off Savepoint's `name`, the Savepoint the live
/// pipeline says it `restarted` from, the one its annotation `requested`,
/// and whether the replay recorded hand-off offsets.
fn decide(name: &str, restarted: Option<&str>, requested: Option<&str>, offsets: bool) -> Next {
    if restarted == Some(name) {
        Next::Done {
            withdraw: requested.is_some(),
        }
    } else if requested == Some(name) {
        Next::Wait
    } else if offsets {
        Next::Request
    } else {
        Next::NothingToHandOff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_pipeline_is_asked_once_and_the_request_withdrawn_once_it_restarted() {
        let name = "handoff-rerun-1";
        let cases = [
            ("not asked yet", None, None, true, Next::Request),
            (
                "not asked yet, nothing to hand off",
                None,
                None,
                false,
                Next::NothingToHandOff,
            ),
            (
                "an older request",
                Some("handoff-old"),
                Some("handoff-old"),
                true,
                Next::Request,
            ),
            ("asked", None, Some(name), true, Next::Wait),
            (
                "restarted, request still on it",
                Some(name),
                Some(name),
                true,
                Next::Done { withdraw: true },
            ),
            (
                "restarted, request withdrawn",
                Some(name),
                None,
                true,
                Next::Done { withdraw: false },
            ),
        ];
        for (case, restarted, requested, offsets, expected) in cases {
            assert_eq!(
                decide(name, restarted, requested, offsets),
                expected,
                "{case}"
            );
        }
    }
}
