//! How many insert batches a restore keeps in flight: found by measuring,
//! because the right number depends on the server. A multi-core `mongod`
//! takes batches in parallel and gets faster with more; a server that
//! works on one core at a time gets slower (each batch waits, and the
//! switching costs). mongorestore picks a fixed number (4 collections at
//! once); cofre starts with one batch in flight, doubles it while that
//! makes the restore at least 25% faster, and settles on the best it saw.
//!
//! The policy is a pure function of what it is shown: bytes inserted and
//! the time (passed in), so it is tested with simulated servers.

use std::time::{Duration, Instant};

/// The most batches in flight.
pub const MAX_IN_FLIGHT: usize = 8;
/// A window is at least this long...
const WINDOW: Duration = Duration::from_secs(2);
/// ...and holds at least this many finished batches per batch in flight.
const WINDOW_BATCHES: u32 = 4;
/// More in flight is kept only when it is at least this much faster: a
/// server's own jitter from one window to the next is often 10 to 20%.
const GAIN: f64 = 1.25;

/// Where the search stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Measuring `limit` for the first time (the baseline).
    Baseline,
    /// Measuring `limit`, doubled from `previous` whose rate was `rate`.
    Trying { previous: usize, rate: f64 },
    /// Done: `limit` is the best seen.
    Settled,
}

/// The number of batches in flight, adjusted from measured throughput.
#[derive(Debug, Clone)]
pub struct Concurrency {
    limit: usize,
    max: usize,
    phase: Phase,
    window_start: Option<Instant>,
    window_bytes: u64,
    window_batches: u32,
}

impl Concurrency {
    /// Starts with one batch in flight, never more than `max`.
    pub fn new(max: usize) -> Concurrency {
        Concurrency {
            limit: 1,
            max: max.max(1),
            phase: if max <= 1 {
                Phase::Settled
            } else {
                Phase::Baseline
            },
            window_start: None,
            window_bytes: 0,
            window_batches: 0,
        }
    }

    /// Batches that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the search is over.
    #[cfg(test)]
    pub fn settled(&self) -> bool {
        self.phase == Phase::Settled
    }

    /// A batch was sent at `now` (the first one opens the first window).
    pub fn sent(&mut self, now: Instant) {
        self.window_start.get_or_insert(now);
    }

    /// A batch of `bytes` finished at `now`. Returns the new limit.
    pub fn finished(&mut self, bytes: u64, now: Instant) -> usize {
        if self.phase == Phase::Settled {
            return self.limit;
        }
        let start = *self.window_start.get_or_insert(now);
        self.window_bytes += bytes;
        self.window_batches += 1;
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW || self.window_batches < WINDOW_BATCHES * self.limit as u32 {
            return self.limit;
        }
        let rate = self.window_bytes as f64 / elapsed.as_secs_f64();
        let (next, phase) = decide(self.phase, self.limit, self.max, rate);
        tracing::debug!(
            "{:.1} MB/s with {} in flight over {:.2} s",
            rate / 1e6,
            self.limit,
            elapsed.as_secs_f64()
        );
        self.limit = next;
        self.phase = phase;
        self.window_start = Some(now);
        self.window_bytes = 0;
        self.window_batches = 0;
        self.limit
    }
}

/// The step of the search: after measuring `rate` at `limit` in `phase`,
/// the next limit and phase.
fn decide(phase: Phase, limit: usize, max: usize, rate: f64) -> (usize, Phase) {
    let double = |rate: f64| {
        if limit >= max {
            (limit, Phase::Settled)
        } else {
            (
                (limit * 2).min(max),
                Phase::Trying {
                    previous: limit,
                    rate,
                },
            )
        }
    };
    match phase {
        Phase::Settled => (limit, Phase::Settled),
        Phase::Baseline => double(rate),
        Phase::Trying {
            previous,
            rate: before,
        } => {
            if rate >= before * GAIN {
                double(rate)
            } else {
                (previous, Phase::Settled)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a simulated restore against a server whose throughput (bytes/s)
    /// at each number of batches in flight is `rate(n)`; returns the limit
    /// it settles on and the limits it went through.
    fn simulate(rate: impl Fn(usize) -> f64) -> (usize, Vec<usize>) {
        let mut c = Concurrency::new(MAX_IN_FLIGHT);
        let mut now = Instant::now();
        let batch = 1_000_000u64;
        let mut seen = vec![c.limit()];
        c.sent(now);
        for _ in 0..10_000 {
            // Batches finish at the server's rate for the current limit.
            now += Duration::from_secs_f64(batch as f64 / rate(c.limit()));
            let l = c.finished(batch, now);
            if seen.last() != Some(&l) {
                seen.push(l);
            }
            if c.settled() {
                break;
            }
        }
        assert!(c.settled(), "never settled: {seen:?}");
        (c.limit(), seen)
    }

    #[test]
    fn settles_where_the_server_stops_getting_faster() {
        type Server = Box<dyn Fn(usize) -> f64>;
        let cases: Vec<(&str, Server, usize)> = vec![
            // One core, switching costs: more in flight is slower.
            (
                "single-threaded",
                Box::new(|n| 10e6 / (1.0 + 0.1 * (n as f64 - 1.0))),
                1,
            ),
            // One core, no cost: no faster, so no more.
            ("flat", Box::new(|_| 10e6), 1),
            // Four cores: scales to four, not past.
            ("four cores", Box::new(|n| 10e6 * n.min(4) as f64), 4),
            // Scales a little (10% per doubling): not worth it.
            (
                "barely",
                Box::new(|n| 10e6 * (1.0 + 0.1 * (n as f64).log2())),
                1,
            ),
            // Many cores: stops at the cap.
            ("many cores", Box::new(|n| 10e6 * n as f64), MAX_IN_FLIGHT),
            // Two cores, then a cliff.
            (
                "two then worse",
                Box::new(|n| match n {
                    1 => 10e6,
                    2 => 19e6,
                    _ => 12e6,
                }),
                2,
            ),
        ];
        for (name, rate, want) in cases {
            let (got, seen) = simulate(rate);
            assert_eq!(got, want, "{name}: went through {seen:?}");
        }
    }

    #[test]
    fn a_window_needs_time_and_batches() {
        let mut c = Concurrency::new(4);
        let t0 = Instant::now();
        c.sent(t0);
        // Many batches in no time: no decision yet.
        for i in 1..=10 {
            assert_eq!(c.finished(1000, t0 + Duration::from_millis(i)), 1);
        }
        // Enough time and batches: decides.
        assert_eq!(c.finished(1000, t0 + Duration::from_millis(2100)), 2);
        // At 2 in flight, a window needs 8 batches.
        for i in 1..=7 {
            c.finished(1000, t0 + Duration::from_secs(5) + Duration::from_millis(i));
        }
        assert_eq!(c.limit(), 2);
        assert!(!c.settled());
    }

    #[test]
    fn a_limit_of_one_is_settled_from_the_start() {
        let mut c = Concurrency::new(1);
        assert!(c.settled());
        assert_eq!(c.finished(1, Instant::now() + Duration::from_secs(9)), 1);
    }
}
