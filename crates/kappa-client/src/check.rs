//! Checking what consumers saw against what producers wrote, for records
//! numbered per key from 0: what was lost, read twice, or read out of order.

use std::collections::{BTreeMap, BTreeSet};

/// The counts a check ends with; all zero when nothing went wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Records read.
    pub read: u64,
    /// Records written and never read.
    pub lost: u64,
    /// Reads of a record already read.
    pub duplicated: u64,
    /// Reads of a record after a greater number of its key.
    pub out_of_order: u64,
}

impl Report {
    /// Whether every record was read once, in order.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {}, lost {}, duplicated {}, out of order {}",
            self.read, self.lost, self.duplicated, self.out_of_order
        )
    }
}

/// Records read so far, per key.
#[derive(Debug, Default)]
pub struct Check {
    seen: BTreeMap<String, BTreeSet<u64>>,
    highest: BTreeMap<String, u64>,
    report: Report,
}

impl Check {
    /// Notes that record `number` of `key` was read.
    pub fn read(&mut self, key: &str, number: u64) {
        self.report.read += 1;
        let seen = self.seen.entry(key.to_string()).or_default();
        if !seen.insert(number) {
            self.report.duplicated += 1;
            return;
        }
        let highest = self.highest.entry(key.to_string()).or_insert(number);
        if number < *highest {
            self.report.out_of_order += 1;
        }
        *highest = (*highest).max(number);
    }

    /// The report, given how many records of each key were written
    /// (numbered `0..count`).
    pub fn report(&self, written: &BTreeMap<String, u64>) -> Report {
        let mut report = self.report.clone();
        for (key, count) in written {
            let seen = self.seen.get(key);
            let found = seen.map_or(0, |s| s.range(..count).count() as u64);
            report.lost += count - found;
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_repeats_and_reorderings_are_counted() {
        let mut check = Check::default();
        for (key, number) in [("a", 0), ("a", 2), ("a", 1), ("a", 2), ("b", 0)] {
            check.read(key, number);
        }
        let written = BTreeMap::from([("a".to_string(), 4), ("b".to_string(), 1)]);
        let report = check.report(&written);
        assert_eq!(
            report,
            Report {
                read: 5,
                lost: 1,
                duplicated: 1,
                out_of_order: 1
            }
        );
        assert!(!report.clean());
        let mut clean = Check::default();
        clean.read("b", 0);
        assert!(clean
            .report(&BTreeMap::from([("b".to_string(), 1)]))
            .clean());
    }
}
