//! Bad input from the network (unparseable STUN, framing errors, streams that are not
//! TURN, UDP datagrams that are not STUN): counted in [`super::Stats`] and logged at most
//! once per source and reason per interval, with the number dropped meanwhile.
//!
//! A flood of garbage must not turn into a flood of log lines (it used to be one WARN per
//! message). The limiter keeps a small table keyed by (source, reason), where a source is
//! an IPv4 address or an IPv6 /64 ([`source_prefix`]); the table has a cap and evicts its
//! oldest entry when full, and the lines written per interval have a cap as well. What is
//! not logged individually is summed into one line per interval.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one (source, reason) may be logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Most (source, reason) pairs remembered by the limiter.
pub const MAX_LOGGED_SOURCES: usize = 1024;
/// Most lines written per [`LOG_INTERVAL`] (plus one summary of the rest).
pub const MAX_LINES_PER_INTERVAL: u32 = 50;

/// Why input was dropped as bad (`turn_bad_input_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadInput {
    /// A STUN or ChannelData message that does not parse.
    Malformed,
    /// A stream whose bytes cannot be split into STUN / ChannelData frames.
    Framing,
    /// A stream that starts with neither TLS, STUN nor HTTP.
    UnknownProtocol,
    /// A UDP datagram from a new source that is not a STUN request.
    UdpNotStun,
}

impl BadInput {
    /// All values, in label order.
    pub const ALL: [BadInput; 4] = [
        BadInput::Malformed,
        BadInput::Framing,
        BadInput::UnknownProtocol,
        BadInput::UdpNotStun,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BadInput::Malformed => "malformed",
            BadInput::Framing => "framing",
            BadInput::UnknownProtocol => "unknown_protocol",
            BadInput::UdpNotStun => "udp_not_stun",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            BadInput::Malformed => 0,
            BadInput::Framing => 1,
            BadInput::UnknownProtocol => 2,
            BadInput::UdpNotStun => 3,
        }
    }
}

/// The source a client counts as for per-source limits: an IPv4 address (IPv4-mapped IPv6
/// included) or the /64 of an IPv6 address (one host typically holds a whole /64).
pub fn source_prefix(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// A source for log lines: `192.0.2.1` or `2001:db8::/64`.
pub fn display_source(source: IpAddr) -> String {
    match source {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("{a}/64"),
    }
}

/// A line the limiter lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The first bad input from `source` for `reason` in an interval.
    First {
        /// The client address (an IPv6 address stands for its /64).
        source: IpAddr,
        /// What was wrong with the input.
        reason: BadInput,
    },
    /// `count` more from `source` for `reason` since its first line, `over` that long.
    Repeated {
        /// The client address (an IPv6 address stands for its /64).
        source: IpAddr,
        /// What was wrong with the input.
        reason: BadInput,
        /// Bad inputs since the first line, not counting it.
        count: u64,
        /// Time since the first line.
        over: Duration,
    },
    /// `count` bad inputs not logged individually (line cap reached, or their source was
    /// evicted from the table).
    Others {
        /// How many.
        count: u64,
    },
}

impl Line {
    fn count(&self) -> u64 {
        match self {
            Line::First { .. } => 1,
            Line::Repeated { count, .. } | Line::Others { count } => *count,
        }
    }

    /// Writes the line to the log.
    pub fn log(&self) {
        match self {
            Line::First { source, reason } => tracing::info!(
                source = %display_source(*source),
                reason = reason.as_str(),
                "bad input dropped; more from this source are counted and summarized every {}s",
                LOG_INTERVAL.as_secs()
            ),
            Line::Repeated {
                source,
                reason,
                count,
                over,
            } => tracing::info!(
                source = %display_source(*source),
                reason = reason.as_str(),
                count,
                "bad input dropped: {count} more in the last {}s",
                over.as_secs().max(1)
            ),
            Line::Others { count } => tracing::info!(
                count,
                "bad input dropped: {count} more from other sources, not logged one by one"
            ),
        }
    }
}

type Key = (IpAddr, BadInput);

#[derive(Debug)]
struct Entry {
    start: Instant,
    suppressed: u64,
}

/// The rate limiter (sans-I/O: time comes in, lines go out through a callback).
#[derive(Debug)]
pub struct BadInputLog {
    interval: Duration,
    max_sources: usize,
    max_lines: u32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were inserted, which is the order of their `start`: the
    /// front expires (or is evicted) first. Every key in `entries` is here exactly once.
    order: VecDeque<Key>,
    window_start: Option<Instant>,
    lines: u32,
    unlogged: u64,
}

impl Default for BadInputLog {
    fn default() -> Self {
        Self::new(LOG_INTERVAL, MAX_LOGGED_SOURCES, MAX_LINES_PER_INTERVAL)
    }
}

impl BadInputLog {
    /// A limiter with its own interval and caps.
    pub fn new(interval: Duration, max_sources: usize, max_lines: u32) -> Self {
        Self {
            interval,
            max_sources: max_sources.max(1),
            max_lines,
            state: Mutex::new(State::default()),
        }
    }

    /// Notes one bad input from `ip` (any address; its [`source_prefix`] is the key) and
    /// hands the lines to write now, if any, to `emit`. Amortized O(1).
    pub fn note(&self, ip: IpAddr, reason: BadInput, now: Instant, mut emit: impl FnMut(Line)) {
        let key = (source_prefix(ip), reason);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *st;
        // A new global window: say what was not logged in the last one.
        if st
            .window_start
            .is_none_or(|w| now.saturating_duration_since(w) >= self.interval)
        {
            if st.unlogged > 0 {
                emit(Line::Others { count: st.unlogged });
            }
            st.window_start = Some(now);
            st.lines = 0;
            st.unlogged = 0;
        }
        // Entries whose interval is over: their summary, and they are forgotten.
        while let Some(front) = st.order.front().copied() {
            let Some(e) = st.entries.get(&front) else {
                st.order.pop_front();
                continue;
            };
            let over = now.saturating_duration_since(e.start);
            if over < self.interval {
                break;
            }
            let suppressed = e.suppressed;
            st.order.pop_front();
            st.entries.remove(&front);
            if suppressed > 0 {
                st.limited(
                    self.max_lines,
                    Line::Repeated {
                        source: front.0,
                        reason: front.1,
                        count: suppressed,
                        over,
                    },
                    &mut emit,
                );
            }
        }
        if let Some(e) = st.entries.get_mut(&key) {
            e.suppressed += 1;
            return;
        }
        while st.entries.len() >= self.max_sources {
            let Some(oldest) = st.order.pop_front() else {
                break;
            };
            if let Some(e) = st.entries.remove(&oldest) {
                st.unlogged += e.suppressed;
            }
        }
        st.entries.insert(
            key,
            Entry {
                start: now,
                suppressed: 0,
            },
        );
        st.order.push_back(key);
        st.limited(
            self.max_lines,
            Line::First {
                source: key.0,
                reason,
            },
            &mut emit,
        );
    }

    /// Sources remembered now.
    pub fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }
}

impl State {
    fn limited(&mut self, max_lines: u32, line: Line, emit: &mut impl FnMut(Line)) {
        if self.lines < max_lines {
            self.lines += 1;
            emit(line);
        } else {
            self.unlogged += line.count();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_are_ipv4_or_ipv6_64() {
        assert_eq!(source_prefix(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_prefix(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            source_prefix(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(display_source(ip("2001:db8:1:2::")), "2001:db8:1:2::/64");
    }

    /// 4,000 bad messages from one source over 2 s: one line, then one summary with the
    /// count once the interval is over.
    #[test]
    fn a_flood_from_one_source_is_one_line_per_interval() {
        let log = BadInputLog::default();
        let t0 = Instant::now();
        let mut lines = Vec::new();
        for i in 0..4_000u64 {
            let now = t0 + Duration::from_micros(500 * i);
            log.note(ip("192.0.2.7"), BadInput::Malformed, now, |l| lines.push(l));
        }
        assert_eq!(
            lines,
            vec![Line::First {
                source: ip("192.0.2.7"),
                reason: BadInput::Malformed
            }]
        );
        // After the interval, the next one brings the summary of the 3,999 and a new first.
        log.note(
            ip("192.0.2.7"),
            BadInput::Malformed,
            t0 + LOG_INTERVAL,
            |l| lines.push(l),
        );
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(matches!(
            lines[1],
            Line::Repeated {
                count: 3_999,
                reason: BadInput::Malformed,
                ..
            }
        ));
        assert!(matches!(lines[2], Line::First { .. }));
        // Another reason from the same source is its own line.
        log.note(ip("192.0.2.7"), BadInput::Framing, t0 + LOG_INTERVAL, |l| {
            lines.push(l)
        });
        assert_eq!(lines.len(), 4);
    }

    /// 4,000 sources (IPv6 hosts in 4,000 /64s) at once: the table stays at its cap and the
    /// lines at theirs; the rest is one summary line in the next interval.
    #[test]
    fn a_flood_from_many_sources_is_bounded_in_lines_and_memory() {
        let log = BadInputLog::new(LOG_INTERVAL, 256, 20);
        let t0 = Instant::now();
        let mut lines = Vec::new();
        for i in 0..4_000u128 {
            let a = IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 64) | 1));
            log.note(a, BadInput::Malformed, t0, |l| lines.push(l));
            assert!(log.tracked() <= 256);
        }
        assert_eq!(lines.len(), 20);
        log.note(
            ip("192.0.2.1"),
            BadInput::Malformed,
            t0 + LOG_INTERVAL,
            |l| lines.push(l),
        );
        assert_eq!(
            lines.get(20),
            Some(&Line::Others { count: 3_980 }),
            "{:?}",
            &lines[20..]
        );
        // Many hosts of one /64 are one source.
        let log = BadInputLog::default();
        let mut n = 0;
        for i in 0..4_000u128 {
            let a = IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | i));
            log.note(a, BadInput::UdpNotStun, t0, |_| n += 1);
        }
        assert_eq!((n, log.tracked()), (1, 1));
    }
}
