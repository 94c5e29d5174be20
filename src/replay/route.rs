//! Where a replayed record goes. Pure: the same record always goes to the
//! same destination, so a worker that starts again makes the same choices.
//!
//! Source partition `p` of `P` goes to backfill cluster `p % C` and, on that
//! cluster, to the `m` partitions `(p / C) * m .. (p / C) * m + m` (`m` the
//! partition multiplier), spread by a hash of the key. Every destination
//! partition thus receives records of one source partition only, and a key
//! stays in one destination partition, so per-key order survives.

/// One destination partition: a backfill cluster (index in the plan) and a
/// partition of the destination topic there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    /// Index of the backfill cluster.
    pub cluster: usize,
    /// Partition of the destination topic on that cluster.
    pub partition: i32,
}

/// The spread of a stream over the backfill clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Partitions of the source topic.
    pub source_partitions: i32,
    /// Number of backfill clusters.
    pub clusters: i32,
    /// Destination partitions per source partition.
    pub multiplier: i32,
}

impl Layout {
    /// Partitions the destination topic needs on every backfill cluster.
    pub fn destination_partitions(&self) -> i32 {
        let per_cluster = (self.source_partitions + self.clusters - 1) / self.clusters;
        per_cluster.max(1) * self.multiplier
    }

    /// The destination partitions source partition `partition` writes to.
    pub fn destinations_of(&self, partition: i32) -> Vec<Destination> {
        let first = (partition / self.clusters) * self.multiplier;
        (first..first + self.multiplier)
            .map(|p| Destination {
                cluster: (partition % self.clusters) as usize,
                partition: p,
            })
            .collect()
    }

    /// Where the record at `offset` of source partition `partition`, with
    /// `key`, goes. A record without key is spread by its offset.
    pub fn route(&self, partition: i32, key: Option<&[u8]>, offset: i64) -> Destination {
        let spread = match key {
            Some(key) => fnv1a(key),
            None => offset as u64,
        };
        let first = (partition / self.clusters) * self.multiplier;
        Destination {
            cluster: (partition % self.clusters) as usize,
            partition: first + (spread % self.multiplier as u64) as i32,
        }
    }
}

/// 64-bit FNV-1a: small, stable across versions and platforms.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn every_destination_partition_has_one_source_partition() {
        let layout = Layout {
            source_partitions: 5,
            clusters: 2,
            multiplier: 3,
        };
        assert_eq!(layout.destination_partitions(), 9);
        let mut owner = BTreeMap::new();
        for p in 0..5 {
            for d in layout.destinations_of(p) {
                assert!(d.partition < layout.destination_partitions(), "{d:?}");
                assert_eq!(owner.insert(d, p), None, "{d:?} has two sources");
            }
        }
        assert_eq!(owner.len(), 15);
    }

    proptest! {
        #[test]
        fn a_record_goes_to_one_of_its_partitions_destinations(
            partitions in 1..40i32, clusters in 1..8i32, multiplier in 1..8i32,
            pick in 0..40i32, key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            offset in 0..1_000_000i64,
        ) {
            let layout = Layout { source_partitions: partitions, clusters, multiplier };
            let partition = pick % partitions;
            let routed = layout.route(partition, key.as_deref(), offset);
            prop_assert!(layout.destinations_of(partition).contains(&routed));
            prop_assert_eq!(routed, layout.route(partition, key.as_deref(), offset + if key.is_some() { 1 } else { 0 }));
        }
    }
}
