//! The cache's history: a sample of its running totals every
//! [`PERIOD`], the last [`CAPACITY`] kept (three hours), so the status page
//! can draw the hit ratio and the bytes saved over time. Pure: the sampler
//! task hands it totals and times.

use std::collections::VecDeque;
use std::time::Duration;

/// How often a sample is taken.
pub const PERIOD: Duration = Duration::from_secs(10);

/// How many samples are kept: three hours.
pub const CAPACITY: usize = 1080;

/// The cache's running totals over every domain at one time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub time: i64,
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
    pub revalidations: u64,
    pub bypasses: u64,
    /// Body bytes sent from the cache: bytes no origin had to send.
    pub bytes_from_cache: u64,
    pub bytes_from_origin: u64,
}

impl Sample {
    /// The share of cacheable requests answered from the cache (hits and
    /// revalidations, whose body came from the cache) among those and
    /// misses; `None` before any.
    pub fn hit_ratio(&self) -> Option<f64> {
        ratio(self.hits + self.revalidations, self.misses)
    }
}

/// `served / (served + missed)`, `None` when both are 0.
pub fn ratio(served: u64, missed: u64) -> Option<f64> {
    let all = served + missed;
    (all > 0).then(|| served as f64 / all as f64)
}

/// The last [`CAPACITY`] samples, oldest first.
#[derive(Debug)]
pub struct History {
    samples: VecDeque<Sample>,
    capacity: usize,
}

impl Default for History {
    fn default() -> Self {
        History::with_capacity(CAPACITY)
    }
}

impl History {
    pub fn with_capacity(capacity: usize) -> Self {
        History {
            samples: VecDeque::with_capacity(capacity.min(CAPACITY)),
            capacity: capacity.max(1),
        }
    }

    /// Adds a sample, dropping the oldest when full.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_keeps_the_latest_samples_oldest_first() {
        let mut h = History::with_capacity(3);
        for time in 0..5 {
            h.push(Sample {
                time,
                ..Sample::default()
            });
        }
        let times: Vec<i64> = h.samples().map(|s| s.time).collect();
        assert_eq!(times, [2, 3, 4]);
        assert_eq!(CAPACITY as u64 * PERIOD.as_secs(), 3 * 3600);
    }

    #[test]
    fn the_hit_ratio_counts_revalidations_as_served_and_ignores_bypasses() {
        let s = Sample {
            hits: 6,
            revalidations: 2,
            misses: 2,
            bypasses: 100,
            ..Sample::default()
        };
        assert_eq!(s.hit_ratio(), Some(0.8));
        assert_eq!(Sample::default().hit_ratio(), None);
    }
}
