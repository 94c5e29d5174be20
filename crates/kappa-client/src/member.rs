//! Which partitions one replica of a consumer application reads.
//!
//! The operator runs a consumer-engine pipeline as a StatefulSet: every pod
//! has a stable ordinal (the suffix of its name) and at most one pod holds
//! an ordinal at a time, even while pods are replaced. It tells each pod its
//! name (`KAPPA_POD_NAME`) and the number of replicas (`KAPPA_REPLICAS`), and
//! replica `i` of `n` reads every partition `p` with `p % n == i`, on every
//! cluster. So the replicas read disjoint shares, a partition keeps its
//! reader while the stream moves between clusters, and per-key order holds.

use super::ClientError;

/// Replica `index` of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    index: u32,
    of: u32,
}

impl Member {
    /// The only replica: it reads every partition.
    pub const ALL: Member = Member { index: 0, of: 1 };

    /// Replica `index` of `of`.
    pub fn new(index: u32, of: u32) -> Result<Self, ClientError> {
        if index >= of {
            return Err(ClientError::Malformed(format!(
                "replica {index} of {of}: a replica's ordinal must be below the number of replicas"
            )));
        }
        Ok(Self { index, of })
    }

    /// The member a pod named `pod` is among `replicas` (as the operator
    /// sets them in `KAPPA_POD_NAME` and `KAPPA_REPLICAS`); with neither,
    /// the only one.
    pub fn of_pod(pod: Option<&str>, replicas: Option<u32>) -> Result<Self, ClientError> {
        match (pod, replicas) {
            (_, None | Some(1)) => Ok(Self::ALL),
            (None, Some(of)) => Err(ClientError::Malformed(format!(
                "{of} replicas, but no pod name to take this replica's ordinal from"
            ))),
            (Some(pod), Some(of)) => {
                let ordinal = pod
                    .rsplit_once('-')
                    .and_then(|(_, suffix)| suffix.parse::<u32>().ok())
                    .ok_or_else(|| {
                        ClientError::Malformed(format!(
                            "pod name `{pod}` does not end in a StatefulSet ordinal (`-<number>`)"
                        ))
                    })?;
                Self::new(ordinal, of)
            }
        }
    }

    /// Whether this replica reads `partition`.
    pub fn reads(&self, partition: i32) -> bool {
        partition.rem_euclid(self.of as i32) as u32 == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_read_disjoint_shares_that_cover_every_partition() {
        let members: Vec<Member> = (0..3).map(|i| Member::new(i, 3).expect("member")).collect();
        for partition in 0..20 {
            let readers = members.iter().filter(|m| m.reads(partition)).count();
            assert_eq!(readers, 1, "partition {partition}");
        }
        assert!(Member::ALL.reads(7));
    }

    #[test]
    fn the_ordinal_is_the_pod_names_suffix() {
        assert_eq!(
            Member::of_pod(Some("order-totals-2"), Some(3)).expect("member"),
            Member { index: 2, of: 3 }
        );
        assert_eq!(Member::of_pod(None, None).expect("alone"), Member::ALL);
        assert_eq!(
            Member::of_pod(Some("app-7f9c"), Some(1)).expect("one"),
            Member::ALL
        );
        for (pod, replicas) in [
            (Some("order-totals-3"), Some(3)),
            (Some("order-totals-x"), Some(2)),
            (Some("totals"), Some(2)),
            (None, Some(2)),
        ] {
            assert!(
                Member::of_pod(pod, replicas).is_err(),
                "{pod:?} of {replicas:?}"
            );
        }
        assert!(Member::new(0, 0).is_err());
    }
}
