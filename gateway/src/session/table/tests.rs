//! The table with a fake clock: binding, replacement, bounds and slot accounting on every
//! end path.

use std::net::IpAddr;

use super::*;

fn limits() -> Limits {
    Limits {
        max_viewers: 2,
        max_pending: 8,
        max_pending_per_source: 3,
        idle: Duration::from_secs(60),
    }
}

fn src(ip: &str) -> Option<Source> {
    Some(Source::from(ip.parse::<IpAddr>().unwrap()))
}

fn none(_: &str) -> bool {
    false
}

fn zero(_: &str) -> u32 {
    0
}

/// An offer the Geti UI makes: its own id, relay candidates of `users`.
fn geti<'a>(webrtc_id: &'a str, users: &[&str], source: &str) -> OfferRequest<'a> {
    OfferRequest {
        named: Some(webrtc_id),
        client_ids: true,
        candidate_users: users.iter().map(|u| u.to_string()).collect(),
        source: src(source),
        publisher: false,
    }
}

#[test]
fn an_offer_binds_to_the_session_whose_credential_made_its_relay_candidates() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    let (cfg, _) = t.hand_out(src("192.0.2.1"), t0, &none).unwrap();
    assert_eq!(
        (t.pending(), t.slots_used()),
        (1, 0),
        "config costs no slot"
    );
    let plan = t
        .begin_offer(&geti("uuid-1", &["unrelated", &cfg], "192.0.2.1"), t0)
        .unwrap();
    assert_eq!(plan.session, cfg);
    assert_eq!(plan.binding, Binding::Candidate);
    assert_eq!((t.pending(), t.slots_used()), (0, 1));
    assert_eq!(t.finish_offer(&plan.media, true, t0), None);
    // Long after the idle timeout, an offered session is not swept.
    let later = t0 + Duration::from_secs(3600);
    assert!(t.sweep(later, &zero).is_empty());
    assert!(t.contains(&cfg));
}

#[test]
fn a_pending_session_holding_allocations_is_not_idle_and_ends_with_its_last_one() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    let (cfg, _) = t.hand_out(src("192.0.2.1"), t0, &none).unwrap();
    let one = |_: &str| 1;
    assert!(t.sweep(t0 + Duration::from_secs(300), &one).is_empty());
    let ended = t.sweep(t0 + Duration::from_secs(301), &zero);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].id, cfg);
    assert_eq!(ended[0].reason, "its last TURN allocation closed");
    assert_eq!(t.pending(), 0);
}

#[test]
fn an_unoffered_session_without_allocations_idles_out() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    let (cfg, _) = t.hand_out(src("192.0.2.1"), t0, &none).unwrap();
    assert!(t.sweep(t0 + Duration::from_secs(59), &zero).is_empty());
    let e = t.sweep(t0 + Duration::from_secs(60), &zero);
    assert_eq!(e[0].id, cfg);
    assert_eq!(e[0].media, None);
    assert!(t.is_empty());
}

#[test]
fn a_reoffer_with_a_live_webrtc_id_replaces_the_old_session() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    let (a, _) = t.hand_out(src("192.0.2.1"), t0, &none).unwrap();
    let p1 = t
        .begin_offer(&geti("uuid", &[&a], "192.0.2.1"), t0)
        .unwrap();
    t.finish_offer(&p1.media, true, t0);
    // Stop -> Start: a new config session, same webrtc_id, from the same browser.
    let (b, _) = t.hand_out(src("192.0.2.1"), t0, &none).unwrap();
    let p2 = t
        .begin_offer(&geti("uuid", &[&b], "192.0.2.1"), t0)
        .unwrap();
    assert_eq!(p2.session, b);
    assert_eq!(p2.ended.len(), 1);
    assert_eq!(p2.ended[0].id, a);
    assert_eq!(p2.ended[0].media.as_deref(), Some(p1.media.as_str()));
    assert!(!t.contains(&a));
    assert_eq!(t.slots_used(), 1, "the old slot was given back");
    // The old media ending later is no news.
    assert_eq!(t.media_ended(&p1.media, "ice"), None);
    // Without relay candidates (no config fetched): a new session, the old one replaced.
    t.finish_offer(&p2.media, true, t0);
    let p3 = t.begin_offer(&geti("uuid", &[], "192.0.2.1"), t0).unwrap();
    assert_eq!(p3.binding, Binding::New);
    assert_eq!(p3.ended[0].id, b);
    assert_eq!(t.slots_used(), 1);
}

#[test]
fn a_webrtc_id_named_from_elsewhere_does_not_end_the_session() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    let p1 = t.begin_offer(&geti("alice", &[], "192.0.2.1"), t0).unwrap();
    t.finish_offer(&p1.media, true, t0);
    let p2 = t
        .begin_offer(&geti("alice", &[], "198.51.100.9"), t0)
        .unwrap();
    assert!(p2.ended.is_empty());
    assert!(t.contains(&p1.session), "alice's session lives on");
    assert_eq!(t.slots_used(), 2);
    // The id now names the newer session.
    t.finish_offer(&p2.media, true, t0);
    assert_eq!(t.end(&p2.session, "test").unwrap().id, p2.session);
    assert_eq!(t.slots_used(), 1);
}

#[test]
fn a_reoffer_of_the_same_session_renews_its_media_and_keeps_its_slot() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    let (a, _) = t.hand_out(src("192.0.2.1"), t0, &none).unwrap();
    // Our own page echoes the session id as webrtc_id.
    let p1 = t.begin_offer(&geti(&a, &[], "192.0.2.1"), t0).unwrap();
    assert_eq!(p1.binding, Binding::Named);
    t.finish_offer(&p1.media, true, t0);
    let p2 = t.begin_offer(&geti(&a, &[&a], "192.0.2.1"), t0).unwrap();
    assert_eq!(p2.binding, Binding::Renewed);
    assert_eq!(p2.replaced_media.as_deref(), Some(p1.media.as_str()));
    assert!(p2.ended.is_empty());
    assert_eq!(t.slots_used(), 1);
    // A failed renewal ends the session (its old media is gone already).
    let e = t.finish_offer(&p2.media, false, t0).unwrap();
    assert_eq!(e.id, a);
    assert_eq!(t.slots_used(), 0);
}

#[test]
fn slots_come_back_on_every_end_path() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    // Offer made for a new session, then failed (or abandoned).
    let p = t.begin_offer(&geti("x", &[], "192.0.2.1"), t0).unwrap();
    assert_eq!(t.slots_used(), 1);
    assert!(t.finish_offer(&p.media, false, t0).is_some());
    assert_eq!((t.slots_used(), t.len()), (0, 0));
    // Offer of a pending session, failed: pending again, slot back.
    let (a, _) = t.hand_out(src("192.0.2.1"), t0, &none).unwrap();
    let p = t.begin_offer(&geti("y", &[&a], "192.0.2.1"), t0).unwrap();
    assert_eq!(t.finish_offer(&p.media, false, t0), None);
    assert_eq!((t.slots_used(), t.pending()), (0, 1));
    // ... and bindable again by the next offer.
    let p = t.begin_offer(&geti("y", &[&a], "192.0.2.1"), t0).unwrap();
    assert_eq!(p.session, a);
    t.finish_offer(&p.media, true, t0);
    // The engine reports its media ended (ICE failure, peer gone).
    assert_eq!(t.media_ended(&p.media, "ice").unwrap().id, a);
    assert_eq!(t.slots_used(), 0);
    // DELETE.
    let p = t.begin_offer(&geti("z", &[], "192.0.2.1"), t0).unwrap();
    t.finish_offer(&p.media, true, t0);
    assert!(t.end(&p.session, "delete").is_some());
    assert!(t.end(&p.session, "delete").is_none());
    assert_eq!((t.slots_used(), t.len(), t.pending()), (0, 0, 0));
}

#[test]
fn viewers_are_bounded_but_config_requests_are_not_slots() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    for ip in ["192.0.2.1", "192.0.2.2"] {
        let p = t.begin_offer(&geti(ip, &[], ip), t0).unwrap();
        t.finish_offer(&p.media, true, t0);
    }
    assert_eq!(
        t.begin_offer(&geti("c", &[], "192.0.2.3"), t0),
        Err(TableError::Full(2))
    );
    let (a, _) = t.hand_out(src("192.0.2.3"), t0, &none).unwrap();
    assert_eq!(
        t.begin_offer(&geti("c", &[&a], "192.0.2.3"), t0),
        Err(TableError::Full(2))
    );
    assert!(t.contains(&a), "still pending, may offer later");
    assert_eq!((t.slots_used(), t.pending()), (2, 1));
}

#[test]
fn a_flood_of_config_requests_evicts_only_unused_pending_sessions() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    // A real viewer's config session, whose user holds an allocation.
    let (viewer, _) = t.hand_out(src("192.0.2.1"), t0, &none).unwrap();
    let holds = |u: &str| u == viewer;
    let mut evicted = 0;
    for _ in 0..1000 {
        let (_, e) = t.hand_out(src("192.0.2.1"), t0, &holds).unwrap();
        evicted += e.len();
    }
    assert_eq!(t.pending(), 3, "per-source bound");
    assert!(t.contains(&viewer));
    assert_eq!(evicted, 998);
    // From many sources: the total bound holds, the viewer survives.
    for i in 0..1000u32 {
        let ip = format!("198.51.{}.{}", i / 250, i % 250 + 1);
        t.hand_out(src(&ip), t0, &holds).unwrap();
    }
    assert_eq!(t.pending(), 8);
    assert!(t.contains(&viewer));
    assert!(
        t.pending_order.len() <= 2 * 8 + 64 + 1,
        "order queue stays bounded"
    );
    // The viewer's offer still binds, and a slot is free.
    let p = t
        .begin_offer(&geti("v", &[&viewer], "192.0.2.1"), t0)
        .unwrap();
    assert_eq!(p.session, viewer);
}

#[test]
fn when_every_pending_session_holds_allocations_a_source_is_refused() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    let all = |_: &str| true;
    for _ in 0..3 {
        t.hand_out(src("192.0.2.1"), t0, &all).unwrap();
    }
    assert_eq!(
        t.hand_out(src("192.0.2.1"), t0, &all),
        Err(TableError::SourceBusy(3))
    );
}

#[test]
fn whep_may_name_only_our_sessions() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    let req = OfferRequest {
        named: Some("alice"),
        client_ids: false,
        ..OfferRequest::default()
    };
    assert_eq!(t.begin_offer(&req, t0), Err(TableError::Unknown));
    assert_eq!(t.slots_used(), 0);
}

#[test]
fn a_publisher_takes_no_viewer_slot_on_any_path() {
    let mut t = SessionTable::new(limits());
    let t0 = Instant::now();
    let whip = |users: &[&str]| OfferRequest {
        candidate_users: users.iter().map(|u| u.to_string()).collect(),
        source: src("192.0.2.9"),
        publisher: true,
        ..OfferRequest::default()
    };
    // Every viewer slot taken: a publisher still gets in.
    for ip in ["192.0.2.1", "192.0.2.2"] {
        let p = t.begin_offer(&geti(ip, &[], ip), t0).unwrap();
        t.finish_offer(&p.media, true, t0);
    }
    let p = t.begin_offer(&whip(&[]), t0).unwrap();
    assert_eq!(p.binding, Binding::New);
    t.finish_offer(&p.media, true, t0);
    assert_eq!((t.slots_used(), t.len()), (2, 3));
    assert!(t.end(&p.session, "WHIP DELETE").is_some());
    assert_eq!(t.slots_used(), 2, "its end gives back no viewer's slot");
    // Through the relay: bound to its OPTIONS session by its relay candidates; a failed
    // offer returns it to pending without touching the slots.
    let (a, _) = t.hand_out(src("192.0.2.9"), t0, &none).unwrap();
    let p = t.begin_offer(&whip(&[&a]), t0).unwrap();
    assert_eq!(
        (p.session.as_str(), p.binding),
        (a.as_str(), Binding::Candidate)
    );
    assert_eq!(t.finish_offer(&p.media, false, t0), None);
    assert_eq!((t.slots_used(), t.pending()), (2, 1));
    let p = t.begin_offer(&whip(&[&a]), t0).unwrap();
    t.finish_offer(&p.media, true, t0);
    assert_eq!(t.media_ended(&p.media, "ice").unwrap().id, a);
    assert_eq!((t.slots_used(), t.len(), t.pending()), (2, 2, 0));
}
