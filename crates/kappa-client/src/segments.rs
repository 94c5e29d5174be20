//! Which segment of a stream a consumer reads on each partition, derived
//! from the document's ordered segments and the consumer's positions alone,
//! so that a restarted consumer (positions from its committed offsets) and a
//! new document (a segment drained, a cluster gone) need no other state.

use std::collections::BTreeMap;

use crate::discovery::ReadSegment;

/// Where a consumer stands: the next offset to read, per cluster and partition.
pub type Positions = BTreeMap<(String, i32), i64>;

/// What a consumer does on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Reads `cluster`'s partition from `from`, up to `until` (exclusive)
    /// when the segment is drained.
    Segment {
        /// The segment's index in the stream's `read` list.
        index: usize,
        /// The cluster to read.
        cluster: String,
        /// The topic on it.
        topic: String,
        /// The first offset to read.
        from: i64,
        /// Where the segment ends, when it is drained.
        until: Option<i64>,
    },
    /// Every segment of the partition is read to its end; the last one is
    /// drained too (the stream's clusters are all retiring).
    Finished,
}

fn offset(offsets: Option<&BTreeMap<String, i64>>, partition: i32) -> Option<i64> {
    offsets?.get(&partition.to_string()).copied()
}

/// The segment to read on `partition`: the first one in order that the
/// consumer has not read to its end. A segment being drained (no end
/// offsets yet, not the last) holds the partition until it is drained.
pub fn reading(segments: &[ReadSegment], positions: &Positions, partition: i32) -> Reading {
    for (index, segment) in segments.iter().enumerate() {
        let start = offset(segment.start_offsets.as_ref(), partition).unwrap_or(0);
        let position = positions
            .get(&(segment.cluster.clone(), partition))
            .copied()
            .unwrap_or(start)
            .max(start);
        // A drained segment without this partition holds nothing of it.
        let until = segment
            .end_offsets
            .as_ref()
            .map(|ends| offset(Some(ends), partition).unwrap_or(start));
        if until.is_some_and(|end| position >= end) {
            continue;
        }
        return Reading::Segment {
            index,
            cluster: segment.cluster.clone(),
            topic: segment.topic.clone(),
            from: position,
            until,
        };
    }
    Reading::Finished
}

/// Records not yet read on one partition of one segment: offsets `from..to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    /// The cluster holding them.
    pub cluster: String,
    /// The topic on it.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first unread offset.
    pub from: i64,
    /// The offset after the last one.
    pub to: i64,
}

/// What is not yet read: on every segment, from the reader's position on
/// its cluster (or the segment's start) to the segment's end, or to the
/// cluster's high watermark for a segment still open, in segment order.
/// `highs` holds the high watermark of every partition of every cluster
/// read; a partition whose cluster did not answer counts for nothing.
pub fn unread(segments: &[ReadSegment], positions: &Positions, highs: &Positions) -> Vec<Unread> {
    let mut unread = Vec::new();
    for segment in segments {
        for ((cluster, partition), high) in
            highs.range((segment.cluster.clone(), i32::MIN)..=(segment.cluster.clone(), i32::MAX))
        {
            let start = offset(segment.start_offsets.as_ref(), *partition).unwrap_or(0);
            let end = match &segment.end_offsets {
                Some(ends) => offset(Some(ends), *partition).unwrap_or(start),
                None => *high,
            };
            let position = positions
                .get(&(cluster.clone(), *partition))
                .copied()
                .unwrap_or(start)
                .max(start);
            if end > position {
                unread.push(Unread {
                    cluster: cluster.clone(),
                    topic: segment.topic.clone(),
                    partition: *partition,
                    from: position,
                    to: end,
                });
            }
        }
    }
    unread
}

/// Records not yet read (see [`unread`]).
pub fn lag(segments: &[ReadSegment], positions: &Positions, highs: &Positions) -> i64 {
    unread(segments, positions, highs)
        .iter()
        .map(|u| u.to - u.from)
        .sum()
}

/// Where the oldest unread record of each partition is: its first unread
/// range, segments being in the order they were written.
pub fn oldest_unread(unread: &[Unread]) -> Vec<&Unread> {
    let mut seen = std::collections::BTreeSet::new();
    unread.iter().filter(|u| seen.insert(u.partition)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(cluster: &str, start: Option<i64>, end: Option<i64>) -> ReadSegment {
        let at = |offset: Option<i64>| offset.map(|o| BTreeMap::from([("0".to_string(), o)]));
        ReadSegment {
            cluster: cluster.into(),
            topic: "orders".into(),
            start_offsets: at(start),
            end_offsets: at(end),
        }
    }

    fn at(entries: &[(&str, i64)]) -> Positions {
        entries
            .iter()
            .map(|(cluster, offset)| ((cluster.to_string(), 0), *offset))
            .collect()
    }

    fn cluster_of(reading: &Reading) -> Option<(&str, i64)> {
        match reading {
            Reading::Segment { cluster, from, .. } => Some((cluster.as_str(), *from)),
            Reading::Finished => None,
        }
    }

    #[test]
    fn drained_segments_are_read_to_their_end_before_the_next() {
        let segments = [
            segment("blue", None, Some(5)),
            segment("green", None, Some(3)),
            segment("blue", Some(5), None),
        ];
        let read = |positions: &[(&str, i64)]| reading(&segments, &at(positions), 0);
        assert_eq!(cluster_of(&read(&[])), Some(("blue", 0)));
        assert_eq!(cluster_of(&read(&[("blue", 4)])), Some(("blue", 4)));
        assert_eq!(cluster_of(&read(&[("blue", 5)])), Some(("green", 0)));
        // Written again after green: blue continues where its first segment ended.
        assert_eq!(
            cluster_of(&read(&[("blue", 5), ("green", 3)])),
            Some(("blue", 5))
        );
        assert_eq!(
            cluster_of(&read(&[("blue", 9), ("green", 3)])),
            Some(("blue", 9))
        );
    }

    #[test]
    fn a_segment_being_drained_holds_the_partition() {
        let segments = [segment("blue", None, None), segment("green", None, None)];
        assert_eq!(
            cluster_of(&reading(&segments, &at(&[("blue", 100)]), 0)),
            Some(("blue", 100))
        );
    }

    #[test]
    fn empty_and_missing_partitions_are_skipped() {
        let segments = [segment("blue", None, Some(0)), segment("green", None, None)];
        assert_eq!(
            cluster_of(&reading(&segments, &Positions::new(), 0)),
            Some(("green", 0))
        );
        // Partition 1 is not in blue's end offsets: nothing of it is there.
        assert_eq!(
            cluster_of(&reading(&segments, &Positions::new(), 1)),
            Some(("green", 0))
        );
        let drained = [segment("blue", None, Some(2))];
        assert_eq!(reading(&drained, &at(&[("blue", 2)]), 0), Reading::Finished);
    }

    #[test]
    fn lag_counts_the_unread_part_of_every_segment() {
        let segments = vec![
            segment("blue", None, Some(10)),
            segment("green", None, Some(4)),
            segment("blue", Some(10), None),
        ];
        let highs = Positions::from([(("blue".into(), 0), 15), (("green".into(), 0), 4)]);
        // Nothing read: all of blue's first segment, green's, and blue's live tail.
        assert_eq!(lag(&segments, &Positions::new(), &highs), 10 + 4 + 5);
        // Blue read to 7, green not at all.
        let positions = Positions::from([(("blue".into(), 0), 7)]);
        assert_eq!(lag(&segments, &positions, &highs), 3 + 4 + 5);
        // Everything but two records of the live segment.
        let positions = Positions::from([(("blue".into(), 0), 13), (("green".into(), 0), 4)]);
        assert_eq!(lag(&segments, &positions, &highs), 2);
        // A cluster that did not answer counts for nothing.
        let highs = Positions::from([(("green".into(), 0), 4)]);
        assert_eq!(lag(&segments, &Positions::new(), &highs), 4);
    }

    #[test]
    fn the_oldest_unread_record_is_in_the_first_unread_segment() {
        let segments = vec![
            segment("blue", None, Some(10)),
            segment("green", None, Some(4)),
            segment("blue", Some(10), None),
        ];
        let highs = Positions::from([(("blue".into(), 0), 15), (("green".into(), 0), 4)]);
        let oldest = |positions: &Positions| {
            let unread = unread(&segments, positions, &highs);
            oldest_unread(&unread)
                .iter()
                .map(|u| (u.cluster.clone(), u.from))
                .collect::<Vec<_>>()
        };
        let positions = Positions::from([(("blue".into(), 0), 7)]);
        assert_eq!(oldest(&positions), [("blue".to_string(), 7)]);
        let positions = Positions::from([(("blue".into(), 0), 10)]);
        assert_eq!(oldest(&positions), [("green".to_string(), 0)]);
        let positions = Positions::from([(("blue".into(), 0), 15), (("green".into(), 0), 4)]);
        assert!(oldest(&positions).is_empty());
    }
}
