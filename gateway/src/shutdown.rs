//! Graceful shutdown (SIGTERM, Ctrl-C): stop accepting everywhere, let every TURN
//! connection end politely (its allocation deleted, pending writes flushed, TLS
//! close_notify, TCP FIN), wait for that within SHUTDOWN_TIMEOUT, then return so the
//! process exits 0.

use std::time::{Duration, Instant};

use crate::run::Running;

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Allocations alive when the shutdown began.
    pub allocations_before: u32,
    /// Whether every connection ended before the deadline.
    pub drained: bool,
    /// Time taken.
    pub elapsed: Duration,
}

impl Running {
    /// Stops the gateway within `timeout`. Connections still open at the deadline are
    /// dropped with the process.
    pub async fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        let start = Instant::now();
        let allocations_before = self.app.relay_shared().allocations();
        tracing::info!(
            allocations = allocations_before,
            ?timeout,
            "shutting down: no new connections; ending TURN sessions"
        );
        self.http_accept.abort();
        if let Some(c) = &self.cluster {
            c.leave().await;
        }
        self.relay.begin_shutdown();
        let drained = tokio::time::timeout(timeout, self.relay.drained())
            .await
            .is_ok();
        let elapsed = start.elapsed();
        if drained {
            tracing::info!(?elapsed, "every TURN connection closed; exiting");
        } else {
            tracing::warn!(
                ?elapsed,
                allocations = self.app.relay_shared().allocations(),
                "SHUTDOWN_TIMEOUT reached with connections still open; exiting anyway"
            );
        }
        ShutdownReport {
            allocations_before,
            drained,
            elapsed,
        }
    }
}
