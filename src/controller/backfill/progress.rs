//! How far a run is: records and bytes done, rates and the time left.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::run::since;
use crate::api::backfill::Progress;
use crate::kafka::TopicOffsets;

/// Everything in `committed` (cluster -> topic -> partition -> figure) added up.
pub(crate) fn sum(committed: &BTreeMap<String, TopicOffsets>) -> i64 {
    committed
        .values()
        .flat_map(|t| t.values())
        .flat_map(|p| p.values())
        .sum()
}

/// `done` per second since `started`, to a tenth, once there is some.
pub(crate) fn per_second(done: i64, started: Option<&Time>) -> Option<f64> {
    let seconds = since(started);
    (seconds > 0.0 && done > 0).then(|| (done as f64 / seconds * 10.0).round() / 10.0)
}

/// `progress` with the replay's `bytes` and their rate since `started`.
pub(crate) fn with_bytes(
    progress: Progress,
    bytes: Option<i64>,
    started: Option<&Time>,
) -> Progress {
    Progress {
        bytes_replayed: bytes,
        bytes_per_second: bytes.and_then(|b| per_second(b, started)),
        ..progress
    }
}

/// Progress with its percentage, average rate since `started` and ETA.
pub(crate) fn progress(
    done: i64,
    total: i64,
    started: Option<&Time>,
    lag: Option<i64>,
) -> Progress {
    let rate = per_second(done, started);
    let eta = rate.filter(|r| *r > 0.0).map(|r| {
        let left = ((total - done).max(0) as f64 / r).ceil() as u64;
        crate::duration::format_duration(Duration::from_secs(left))
    });
    Progress {
        records_replayed: done,
        records_total: total,
        percent: (total > 0).then(|| format!("{}%", done.min(total) * 100 / total)),
        lag,
        rate,
        eta,
        ..Progress::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn eta_follows_the_average_rate() {
        let started = Time(Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(10));
        let shown = progress(500, 1_000, Some(&started), None);
        assert_eq!(shown.percent.as_deref(), Some("50%"));
        let rate = shown.rate.expect("a rate");
        assert!((45.0..=50.0).contains(&rate), "{rate}");
        assert!(
            matches!(shown.eta.as_deref(), Some("10s" | "11s")),
            "{:?}",
            shown.eta
        );
        let shown = with_bytes(shown, Some(50_000), Some(&started));
        let per_second = shown.bytes_per_second.expect("a byte rate");
        assert!((4_500.0..=5_000.0).contains(&per_second), "{per_second}");
        assert_eq!(
            with_bytes(shown, None, Some(&started)).bytes_per_second,
            None
        );
    }
}
