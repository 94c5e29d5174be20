//! What more than one kind's controller needs. A kind imports from here and
//! from the driver, never from another kind: the providers that run and
//! reach a set's clusters (a Backfill's extra clusters are run the same
//! way), a pipeline's names and pods, the read view of its committed
//! offsets (a Savepoint of a consumer pipeline is one) and the Savepoints
//! the operator registers for it (a Backfill's hand-off is one).

pub mod builtin;
pub mod offsets;
pub mod pipelines;
pub mod provider;
pub mod snapshots;
