//! The cluster's three tasks, each holding the [`Cluster`] weakly and ending with it:
//! the heartbeat (this node's record and claims out, the others' in), the publisher of this
//! node's session messages, and the subscriber to the siblings' ones.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use super::store::{describe, HEARTBEAT, REDIS_TIMEOUT};
use super::{lock, sessions, Cluster};

/// Renews this node's record and claims, reads the others', until the cluster is dropped
/// or the node leaves.
pub(super) async fn heartbeat(weak: Weak<Cluster>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned_conflicts: BTreeSet<(String, String)> = BTreeSet::new();
    // Redis's loss is said once, not every heartbeat.
    let mut down_said = false;
    loop {
        {
            let Some(c) = weak.upgrade() else { return };
            tokio::select! {
                _ = tick.tick() => {}
                () = c.wake.notified() => {}
            }
        }
        let Some(c) = weak.upgrade() else { return };
        let Some(local) = c.local.get() else { return };
        let beat = c.beat.lock().await;
        if c.leaving.load(Ordering::SeqCst) {
            return;
        }
        let record = (local.record)();
        let keep = c.to_hold((local.origins)(), Instant::now());
        // The claims are this task's; a copy goes out so no lock is held across I/O.
        let mut claimed = lock(&c.claimed).clone();
        let result = tokio::time::timeout(
            HEARTBEAT + REDIS_TIMEOUT,
            c.store.heartbeat(&c.seal, &record, &keep, &mut claimed),
        )
        .await;
        *lock(&c.claimed) = claimed;
        drop(beat);
        match result {
            Ok(Ok(snapshot)) => {
                down_said = false;
                if !c.redis_up.swap(true, Ordering::SeqCst) {
                    tracing::info!(node = %record.id, nodes = snapshot.nodes.len(), "cluster: Redis reached; directory shared");
                    c.epoch.send_modify(|e| *e += 1);
                }
                for conflict in &snapshot.conflicts {
                    if warned_conflicts.insert(conflict.clone()) {
                        tracing::warn!(stream = %conflict.0, holder = %conflict.1, "cluster: this stream has a source here, but another node is its origin; viewers elsewhere are sent there");
                    }
                }
                let siblings = snapshot
                    .nodes
                    .iter()
                    .filter(|n| n.id != record.id)
                    .map(|n| relay::core::SiblingMedia {
                        ip: n.media_ip,
                        first: n.media_ports.0,
                        last: n.media_ports.1,
                    })
                    .collect();
                (local.set_siblings)(siblings);
                c.view()
                    .refresh(snapshot.nodes, snapshot.origins, Instant::now());
            }
            Ok(Err(_)) | Err(_) => {
                let why = match &result {
                    Ok(Err(e)) => describe(e),
                    _ => "timed out".to_owned(),
                };
                c.redis_up.store(false, Ordering::SeqCst);
                if !down_said {
                    down_said = true;
                    tracing::warn!(error = %why, "cluster: Redis unreachable; serving the sessions and streams this node has, cross-node pulls use the last directory; retrying every {}s", HEARTBEAT.as_secs());
                }
            }
        }
    }
}

/// Publishes this node's session messages (sealed), in order.
pub(super) async fn publish(
    weak: Weak<super::Cluster>,
    mut rx: tokio::sync::mpsc::Receiver<String>,
) {
    let mut down_said = false;
    while let Some(m) = rx.recv().await {
        let Some(c) = weak.upgrade() else { return };
        let sent =
            tokio::time::timeout(REDIS_TIMEOUT, c.store.publish(sessions::CHANNEL, &m)).await;
        match sent {
            Ok(Ok(())) => down_said = false,
            _ if !down_said => {
                down_said = true;
                tracing::warn!("cluster: a session message could not reach Redis; siblings learn of this node's session ends when Redis is back or from the media");
            }
            _ => {}
        }
    }
}

/// Hears the siblings' session messages: a session that ended elsewhere closes its
/// allocations here within the message's delivery. Subscribes anew after a loss, and
/// whenever the heartbeat reaches Redis again after one (a connection that died without a
/// word would otherwise be listened to forever).
pub(super) async fn subscribe(weak: Weak<super::Cluster>) {
    use futures_util::StreamExt as _;
    loop {
        let (subscribed, mut epoch) = {
            let Some(c) = weak.upgrade() else { return };
            let mut epoch = c.epoch.subscribe();
            epoch.borrow_and_update();
            let sub =
                tokio::time::timeout(REDIS_TIMEOUT, c.store.subscribe(sessions::CHANNEL)).await;
            (sub, epoch)
        };
        if let Ok(Ok(mut pubsub)) = subscribed {
            let mut messages = pubsub.on_message();
            loop {
                let msg = tokio::select! {
                    m = messages.next() => m,
                    _ = epoch.changed() => None,
                };
                let Some(msg) = msg else { break };
                let Some(c) = weak.upgrade() else { return };
                hear(&c, msg.get_payload_bytes());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One message from the channel: opened with the seal, parsed, and acted on when a
/// sibling sent it.
fn hear(c: &Cluster, payload: &[u8]) {
    let Some(local) = c.local.get() else { return };
    let parsed = std::str::from_utf8(payload)
        .ok()
        .filter(|p| p.len() <= 2 * sessions::MAX_MESSAGE)
        .and_then(|p| c.seal.open(p))
        .and_then(sessions::Message::parse);
    let Some(m) = parsed.filter(|m| m.node() != c.plan.node_id) else {
        return;
    };
    let heard = c.book().receive(m, &*local.session_live, Instant::now());
    if let Some(session) = heard.ended {
        (local.wake)(&session);
    }
    if heard.bound {
        c.allocations_heard.notify_waiters();
    }
}
