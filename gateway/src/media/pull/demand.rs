//! When a pull runs: from the first viewer's request until [`PullDemand::idle`] after the
//! last viewer left; and what a viewer's request hears meanwhile (the upstream's first
//! frame, or its refusal, e.g. Geti's "No active pipeline.").
//!
//! The rule is a pure function of the clock, the viewer count and the last request
//! ([`PullDemand::wanted`]); the pull task and the signaling layer share it through a watch
//! channel of [`PullStatus`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::signal::UpstreamAnswer;

/// What the pull is doing, as the viewers' side sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullStatus {
    /// No session (nobody watches), or a session not yet delivering.
    Idle,
    /// A session is delivering frames.
    Live,
    /// The last attempt failed; the text is the upstream's reason (or ours). `attempt`
    /// counts attempts so a waiter can tell a fresh outcome from an old one.
    Failed {
        /// The attempt it ended.
        attempt: u64,
        /// Why.
        reason: String,
        /// The upstream's own answer, when it refused the offer with a 4xx.
        answer: Option<UpstreamAnswer>,
    },
}

/// Why a viewer's request gets no pulled stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRefusal {
    /// The upstream's reason (or ours).
    pub reason: String,
    /// The upstream's own answer, to pass on as is (a 4xx refusal of the offer).
    pub answer: Option<UpstreamAnswer>,
}

impl PullRefusal {
    fn ours(reason: &str) -> Self {
        Self {
            reason: reason.to_owned(),
            answer: None,
        }
    }
}

/// Shared between the pull task and the viewers' requests.
#[derive(Debug)]
pub struct PullDemand {
    /// How long the pull stays after the last viewer left (and after a request).
    idle: Duration,
    last_wanted: Mutex<Option<Instant>>,
    status: watch::Sender<PullStatus>,
    /// Attempts started (see [`PullStatus::Failed`]).
    attempts: Mutex<u64>,
}

impl PullDemand {
    /// A demand that keeps a pull `idle` after the last viewer.
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            last_wanted: Mutex::new(None),
            status: watch::Sender::new(PullStatus::Idle),
            attempts: Mutex::new(0),
        }
    }

    /// How long the pull stays after the last viewer left.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Whether the pull should run at `now` with `viewers` watching (which counts as a
    /// request).
    pub fn wanted(&self, now: Instant, viewers: usize) -> bool {
        let mut last = self.last_wanted.lock().unwrap_or_else(|p| p.into_inner());
        if viewers > 0 {
            *last = Some(now);
        }
        last.is_some_and(|t| now.saturating_duration_since(t) < self.idle)
    }

    /// A viewer asks for the stream: the pull starts (or stays) from `now`.
    pub fn request(&self, now: Instant) {
        *self.last_wanted.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        // Wakes the pull task (waiting for demand or in its backoff).
        self.status.send_modify(|_| {});
    }

    /// The pull task: a new attempt starts; returns its number.
    pub fn attempt_started(&self) -> u64 {
        let mut n = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n
    }

    /// The pull task reports.
    pub fn set(&self, status: PullStatus) {
        self.status.send_replace(status);
    }

    /// The current status.
    pub fn status(&self) -> PullStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes (and of requests, which wake it without a change).
    pub fn subscribe(&self) -> watch::Receiver<PullStatus> {
        self.status.subscribe()
    }

    /// For a viewer's request: asks for the stream and waits (at most `limit`) until the
    /// pull delivers (`Ok`) or an attempt made after this request fails.
    pub async fn ready(&self, limit: Duration) -> Result<(), PullRefusal> {
        let mut rx = self.subscribe();
        let asked_at = *self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        self.request(Instant::now());
        let wait = async {
            loop {
                match &*rx.borrow_and_update() {
                    PullStatus::Live => return Ok(()),
                    PullStatus::Failed {
                        attempt,
                        reason,
                        answer,
                    } if *attempt > asked_at => {
                        return Err(PullRefusal {
                            reason: reason.clone(),
                            answer: answer.clone(),
                        })
                    }
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err(PullRefusal::ours("the pull stopped"));
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .unwrap_or_else(|_| Err(PullRefusal::ours("the upstream sent nothing in time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_runs_from_a_request_until_idle_after_the_last_viewer() {
        let d = PullDemand::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(!d.wanted(t0, 0), "nobody asked");
        d.request(t0);
        assert!(
            d.wanted(t0 + Duration::from_secs(9), 0),
            "a request keeps it a while"
        );
        assert!(d.wanted(t0 + Duration::from_secs(30), 2), "viewers keep it");
        assert!(
            d.wanted(t0 + Duration::from_secs(39), 0),
            "the last viewer left at 30 s"
        );
        assert!(
            !d.wanted(t0 + Duration::from_secs(40), 0),
            "idle after the last viewer"
        );
    }

    #[tokio::test]
    async fn a_request_hears_the_next_outcome_not_an_old_one() {
        let d = std::sync::Arc::new(PullDemand::new(Duration::from_secs(10)));
        let a = d.attempt_started();
        d.set(PullStatus::Failed {
            attempt: a,
            reason: "old".into(),
            answer: None,
        });
        let waiter = {
            let d = d.clone();
            tokio::spawn(async move { d.ready(Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        let b = d.attempt_started();
        let answer = UpstreamAnswer {
            status: 400,
            content_type: Some("application/json".into()),
            body: r#"{"detail":"No active pipeline."}"#.into(),
        };
        d.set(PullStatus::Failed {
            attempt: b,
            reason: "No active pipeline.".into(),
            answer: Some(answer.clone()),
        });
        assert_eq!(
            waiter.await.unwrap(),
            Err(PullRefusal {
                reason: "No active pipeline.".into(),
                answer: Some(answer)
            })
        );
        d.set(PullStatus::Live);
        assert_eq!(d.ready(Duration::from_secs(1)).await, Ok(()));
        d.set(PullStatus::Idle);
        assert!(
            d.ready(Duration::from_millis(50)).await.is_err(),
            "times out"
        );
    }
}
