//! The allocator's side of a process that runs for months.
//!
//! glibc's malloc keeps the pages of memory that was freed, and the
//! operator's largest allocations grow a little with every write-cluster
//! move (the set's status and discovery document list each drained
//! segment): a freed copy leaves a hole the next, larger one does not fit.
//! In the soak benchmark (`e2e/bench/soak`, a move a minute), the memory in
//! use stayed at about 7 MiB while the resident memory grew 0.25 MiB a
//! minute, spread over up to eight arenas per core. Two arenas, and the
//! free pages handed back to the system once a minute, keep it flat.

use std::time::Duration;

use crate::shutdown::Shutdown;

/// How often free pages are handed back.
const RELEASE_EVERY: Duration = Duration::from_secs(60);

/// Arenas malloc may use; threads beyond that share them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Caps malloc's arenas; called first in `main`, before the runtime's
/// threads have allocated much.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator; glibc
    // serialises it with allocations.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Hands the allocator's free pages back to the system every
/// [`RELEASE_EVERY`] until `shutdown`.
pub async fn release_free_pages(shutdown: Shutdown) {
    let mut every =
        tokio::time::interval_at(tokio::time::Instant::now() + RELEASE_EVERY, RELEASE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopped = shutdown.signalled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = every.tick() => release(),
        }
    }
}

/// Hands free pages back once.
fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' locks itself and only returns
    // memory no allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn releasing_runs_until_the_shutdown() {
        let (trigger, shutdown) = crate::shutdown::channel();
        let releasing = tokio::spawn(release_free_pages(shutdown));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!releasing.is_finished(), "it runs until the shutdown");
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(5), releasing)
            .await
            .expect("it ends at the shutdown")
            .expect("it ends without panicking");
    }
}
