//! How `kubectl kappa backfill` shows a Backfill: its phase, a progress bar
//! of the records replayed, the rate and the time left, from its status
//! alone.

use crate::api::backfill::{Backfill, BackfillPhase};
use crate::conditions::READY;

/// Characters of the progress bar.
const BAR: usize = 30;
/// Bytes in a megabyte, as throughput is usually given.
const MB: f64 = 1_000_000.0;

/// A bar of `done` out of `total`, e.g. `[#########.....]  60%`.
pub fn bar(done: i64, total: i64) -> String {
    if total <= 0 {
        return format!("[{}]   ?%", ".".repeat(BAR));
    }
    let share = (done.clamp(0, total) as f64) / (total as f64);
    let filled = (share * BAR as f64).floor() as usize;
    format!(
        "[{}{}] {:>3}%",
        "#".repeat(filled),
        ".".repeat(BAR - filled),
        (share * 100.0).floor() as i64
    )
}

/// Whether the Backfill has reached a phase it does not leave.
pub fn finished(backfill: &Backfill) -> bool {
    matches!(
        backfill.status.as_ref().and_then(|s| s.phase),
        Some(BackfillPhase::Completed | BackfillPhase::Failed)
    )
}

/// One screen of the Backfill: name and phase, progress, rate, ETA, lag and
/// the Ready condition's reason and message.
pub fn render(backfill: &Backfill) -> String {
    let name = backfill.metadata.name.as_deref().unwrap_or_default();
    let status = backfill.status.clone().unwrap_or_default();
    let phase = status
        .phase
        .map_or_else(|| "-".to_string(), |p| format!("{p:?}"));
    let spec = &backfill.spec;
    let mut lines = vec![format!(
        "{name} (Pipeline {}, {} to {}): {phase}",
        spec.pipeline_ref, spec.from.0, spec.to.0
    )];
    match &status.progress {
        Some(progress) => {
            lines.push(format!(
                "replayed {} {} of {} records",
                bar(progress.records_replayed, progress.records_total),
                progress.records_replayed,
                progress.records_total
            ));
            let rate = progress
                .rate
                .map_or_else(|| "-".to_string(), |r| format!("{r:.0} records/s"));
            let eta = progress.eta.as_deref().unwrap_or("-");
            let lag = progress
                .lag
                .map_or_else(|| "-".to_string(), |l| l.to_string());
            lines.push(format!("rate {rate}, ETA {eta}, backfill job lag {lag}"));
            if let Some(bytes) = progress.bytes_replayed {
                let per_second = progress
                    .bytes_per_second
                    .map_or_else(|| "-".to_string(), |b| format!("{:.2}", b / MB));
                lines.push(format!(
                    "replayed {:.2} MB, {per_second} MB/s",
                    bytes as f64 / MB
                ));
            }
        }
        None => lines.push("no progress reported yet".to_string()),
    }
    if !status.clusters.is_empty() {
        lines.push(format!("extra clusters: {}", status.clusters.join(", ")));
    }
    if let Some(ready) = status.common.conditions.iter().find(|c| c.type_ == READY) {
        lines.push(format!(
            "Ready={} {}: {}",
            ready.status, ready.reason, ready.message
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backfill::{BackfillSpec, BackfillStatus, Progress};

    #[test]
    fn the_bar_fills_with_the_share_replayed() {
        assert_eq!(bar(0, 10), format!("[{}]   0%", ".".repeat(30)));
        assert_eq!(
            bar(6, 10),
            format!("[{}{}]  60%", "#".repeat(18), ".".repeat(12))
        );
        assert_eq!(bar(12, 10), format!("[{}] 100%", "#".repeat(30)));
        assert!(bar(5, 0).ends_with("?%"));
    }

    #[test]
    fn a_backfill_shows_its_phase_progress_rate_and_eta() {
        let spec: BackfillSpec = serde_json::from_value(serde_json::json!({
            "pipelineRef": "totals",
            "from": "2026-11-01T00:00:00Z",
            "to": "2026-11-02T00:00:00Z",
        }))
        .expect("a spec");
        let mut backfill = Backfill::new("november", spec);
        assert!(render(&backfill).contains("no progress reported yet"));
        backfill.status = Some(BackfillStatus {
            phase: Some(BackfillPhase::Replaying),
            clusters: vec!["backfill-1".into()],
            progress: Some(Progress {
                records_replayed: 250,
                records_total: 1000,
                percent: Some("25%".into()),
                lag: None,
                rate: Some(1200.4),
                eta: Some("1m".into()),
                bytes_replayed: Some(25_000),
                bytes_per_second: Some(120_040.0),
            }),
            ..BackfillStatus::default()
        });
        let shown = render(&backfill);
        assert!(shown.contains("november"), "{shown}");
        assert!(shown.contains("Replaying"), "{shown}");
        assert!(shown.contains("]  25% 250 of 1000 records"), "{shown}");
        assert!(shown.contains("rate 1200 records/s, ETA 1m"), "{shown}");
        assert!(shown.contains("replayed 0.03 MB, 0.12 MB/s"), "{shown}");
        assert!(shown.contains("extra clusters: backfill-1"), "{shown}");
        assert!(!finished(&backfill));
    }
}
