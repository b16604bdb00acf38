//! Counters for `/metrics`. Relaxed atomics: read by the metrics endpoint, updated in batches.

use std::sync::atomic::AtomicU64;

/// Relay counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Allocations created since start.
    pub allocations_created: AtomicU64,
}
