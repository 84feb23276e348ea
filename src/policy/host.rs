//! What the built-in resource limits are sized from: the RAM of the host
//! cistern runs on, read once from `/proc/meminfo` when the first policy is
//! validated (at startup).
//!
//! This is the daemon's host whenever cistern fronts a local daemon, the usual
//! set-up. In front of a remote daemon (`upstream.tcp`) the operator should set
//! `limits.memory` to a size rather than rely on the host-sized default.
//!
//! Validation takes a [`Host`] as a parameter, so tests size limits from a host
//! of their choosing without reading this machine.

use std::sync::OnceLock;

/// Facts about the host that limits are sized from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Host {
    /// Total RAM in bytes; `None` when it cannot be read.
    pub memory: Option<u64>,
}

impl Host {
    /// This host, read once per process.
    pub fn current() -> Host {
        static HOST: OnceLock<Host> = OnceLock::new();
        *HOST.get_or_init(|| Host {
            memory: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|text| mem_total(&text)),
        })
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes (the file says kB, meaning KiB).
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    kib.checked_mul(1024).filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemTotal:       24731400 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(text), Some(24731400 * 1024));
        for bad in [
            "",
            "MemFree: 1 kB",
            "MemTotal: lots kB",
            "MemTotal: 0 kB",
            "MemTotal: 12",
        ] {
            assert_eq!(mem_total(bad), None, "{bad}");
        }
    }

    #[test]
    fn this_host_has_some_memory() {
        assert!(Host::current().memory.is_some_and(|m| m > 1 << 20));
    }
}
