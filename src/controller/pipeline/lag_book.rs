//! The lag of each consumer pipeline, kept between reconciles. Measuring
//! opens Kafka clients, and a status write wakes the pipeline again, so:
//! - a reconcile within [`MEASURE_EVERY`] of the last measurement reuses it
//!   (the reconcile that the operator's own status write caused measures
//!   nothing);
//! - metrics and the SLO sampler take every measurement;
//! - `status.lag` shows a measurement at most every [`SHOW_EVERY`], and only
//!   when it differs meaningfully from what status shows ([`meaningful`]),
//!   so that `kubectl get -w` and GitOps tools see a write when something
//!   happened, not at every tick.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::pipeline::StreamLag;
use crate::slo::sli::PipelineKey;

/// How often a consumer pipeline's lag is measured.
pub const MEASURE_EVERY: Duration = Duration::from_secs(15);
/// How often at most `status.lag` changes.
pub const SHOW_EVERY: Duration = Duration::from_secs(30);
/// An entry not read for this long belongs to a pipeline that is gone or
/// no longer a consumer pipeline (a live one is measured every 15 s).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// A measurement: the lag per input stream, or `None` when it could not
/// be measured.
pub type Measured = Option<Vec<StreamLag>>;

#[derive(Debug)]
struct Entry {
    measured_at: Instant,
    lag: Measured,
    shown_at: Option<Instant>,
}

/// The newest measurement of each consumer pipeline, and when status last
/// showed one.
#[derive(Debug, Default)]
pub struct LagBook(Mutex<Book>);

#[derive(Debug, Default)]
struct Book {
    entries: HashMap<PipelineKey, Entry>,
    /// When entries of gone pipelines were last dropped: at most every
    /// [`FORGET_AFTER`], not at every measurement (a scan of all of them).
    pruned_at: Option<Instant>,
}

impl LagBook {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lag of `key`: the last measurement when it is younger than
    /// [`MEASURE_EVERY`], else a new one from `measure`.
    pub async fn reading<F>(&self, key: &PipelineKey, now: Instant, measure: F) -> Measured
    where
        F: Future<Output = Measured>,
    {
        if let Some(entry) = self.book().entries.get(key) {
            if now.saturating_duration_since(entry.measured_at) < MEASURE_EVERY {
                return entry.lag.clone();
            }
        }
        let lag = measure.await;
        let mut book = self.book();
        let due = book
            .pruned_at
            .is_none_or(|at| now.saturating_duration_since(at) >= FORGET_AFTER);
        if due {
            book.entries
                .retain(|_, e| now.saturating_duration_since(e.measured_at) < FORGET_AFTER);
            book.pruned_at = Some(now);
        }
        let entry = book.entries.entry(key.clone()).or_insert(Entry {
            measured_at: now,
            lag: None,
            shown_at: None,
        });
        entry.measured_at = now;
        entry.lag = lag.clone();
        lag
    }

    /// The newest measurement of `key`, if any.
    pub fn latest(&self, key: &PipelineKey) -> Option<Measured> {
        self.book().entries.get(key).map(|e| e.lag.clone())
    }

    /// Whether status, showing `shown`, is to show the newest measurement
    /// of `key` now; if so, that is recorded as shown.
    pub fn show(&self, key: &PipelineKey, now: Instant, shown: &Measured) -> bool {
        let mut book = self.book();
        let Some(entry) = book.entries.get_mut(key) else {
            return false;
        };
        let due = entry
            .shown_at
            .is_none_or(|at| now.saturating_duration_since(at) >= SHOW_EVERY);
        let show = due && meaningful(shown, &entry.lag);
        if show {
            entry.shown_at = Some(now);
        }
        show
    }
}

/// Whether `measured` differs from `shown` enough to be written: streams
/// came or went, the lag became known or unknown, a stream caught up or
/// fell behind (zero against not zero), its records moved by more than 10%
/// and more than 100, or its seconds by more than 10% and more than 5 s
/// (or became known or unknown).
pub fn meaningful(shown: &Measured, measured: &Measured) -> bool {
    let (shown, measured) = match (shown, measured) {
        (Some(shown), Some(measured)) => (shown, measured),
        (None, None) => return false,
        _ => return true,
    };
    if shown.len() != measured.len() {
        return true;
    }
    let moved = |before: f64, now: f64, floor: f64| {
        (before == 0.0) != (now == 0.0)
            || (now - before).abs() > floor.max(0.1 * before.abs().max(now.abs()))
    };
    shown.iter().zip(measured).any(|(before, now)| {
        before.stream != now.stream
            || moved(before.records as f64, now.records as f64, 100.0)
            || match (before.seconds, now.seconds) {
                (Some(before), Some(now)) => moved(before, now, 5.0),
                (None, None) => false,
                _ => true,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(entries: &[(&str, i64, Option<f64>)]) -> Measured {
        Some(
            entries
                .iter()
                .map(|(stream, records, seconds)| StreamLag {
                    stream: stream.to_string(),
                    records: *records,
                    seconds: *seconds,
                })
                .collect(),
        )
    }

    #[test]
    fn only_meaningful_changes_count() {
        let shown = lag(&[("orders", 1_000, Some(20.0))]);
        let table = [
            ("the same", lag(&[("orders", 1_000, Some(20.0))]), false),
            (
                "records within 10%",
                lag(&[("orders", 1_090, Some(20.0))]),
                false,
            ),
            (
                "records beyond 10%",
                lag(&[("orders", 1_200, Some(20.0))]),
                true,
            ),
            (
                "seconds within 5 s",
                lag(&[("orders", 1_000, Some(24.0))]),
                false,
            ),
            (
                "seconds beyond 5 s and 10%",
                lag(&[("orders", 1_000, Some(26.0))]),
                true,
            ),
            ("caught up", lag(&[("orders", 0, Some(0.0))]), true),
            ("seconds unknown", lag(&[("orders", 1_000, None)]), true),
            (
                "another stream",
                lag(&[("payments", 1_000, Some(20.0))]),
                true,
            ),
            (
                "a stream more",
                lag(&[("orders", 1_000, Some(20.0)), ("payments", 0, None)]),
                true,
            ),
            ("unmeasurable", None, true),
        ];
        for (what, measured, expected) in table {
            assert_eq!(meaningful(&shown, &measured), expected, "{what}");
        }
        let small = lag(&[("orders", 10, None)]);
        assert!(
            !meaningful(&small, &lag(&[("orders", 90, None)])),
            "within 100 records"
        );
        assert!(
            meaningful(&small, &lag(&[("orders", 0, None)])),
            "caught up"
        );
        assert!(!meaningful(&None, &None), "still unmeasurable");
    }

    #[tokio::test]
    async fn measures_at_most_every_interval_and_shows_at_most_every_other() {
        let book = LagBook::default();
        let key = ("ns".to_string(), "p".to_string());
        let start = Instant::now();
        let first = book
            .reading(&key, start, async { lag(&[("orders", 1_000, None)]) })
            .await;
        assert_eq!(first, lag(&[("orders", 1_000, None)]));
        assert!(book.show(&key, start, &None), "nothing shown yet");
        // Within the interval: the last measurement, nothing measured.
        let again = book
            .reading(&key, start + Duration::from_secs(1), async {
                panic!("measured again within the interval")
            })
            .await;
        assert_eq!(again, first);
        // After it: measured, kept as the latest, not shown before SHOW_EVERY.
        let at = start + MEASURE_EVERY;
        let next = book
            .reading(&key, at, async { lag(&[("orders", 5_000, None)]) })
            .await;
        assert_eq!(book.latest(&key), Some(next));
        assert!(!book.show(&key, at, &first), "shown {MEASURE_EVERY:?} ago");
        assert!(book.show(&key, start + SHOW_EVERY, &first));
        // Due again later, but the same as shown: not written.
        let shown = book.latest(&key).expect("measured");
        assert!(!book.show(&key, start + SHOW_EVERY * 2, &shown));
        assert!(
            !book.show(&("ns".into(), "other".into()), at, &None),
            "never measured"
        );
    }

    #[tokio::test]
    async fn a_pipeline_not_measured_for_a_while_is_forgotten() {
        let book = LagBook::default();
        let (gone, live) = (
            ("ns".to_string(), "gone".to_string()),
            ("ns".to_string(), "live".to_string()),
        );
        let start = Instant::now();
        book.reading(&gone, start, async { None }).await;
        book.reading(&live, start + MEASURE_EVERY, async { None })
            .await;
        assert!(book.latest(&gone).is_some(), "kept within {FORGET_AFTER:?}");
        book.reading(&live, start + FORGET_AFTER, async { None })
            .await;
        assert!(
            book.latest(&gone).is_none(),
            "dropped after {FORGET_AFTER:?}"
        );
        assert!(book.latest(&live).is_some());
    }
}
