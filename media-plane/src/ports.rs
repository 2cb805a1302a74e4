//! Media port pools. A pool hands out even RTP ports (RTCP is port + 1) from a
//! configured range. Allocation is a pure function of the pool's history, so a
//! core replaying the same inputs allocates exactly the same ports.
//!
//! The cursor rotates through the range instead of reusing the lowest free
//! port: a port freed a moment ago is the last to be reused, so stray packets
//! of an ended call do not land in a new one.

use serde::{Deserialize, Serialize};

/// Why a pool could not be built or could not allocate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortPoolError {
    /// The configured range holds no even/odd port pair.
    #[error("port range {min}-{max} holds no RTP/RTCP pair (need min <= max-1, min >= 1024)")]
    BadRange {
        /// Configured lower bound.
        min: u16,
        /// Configured upper bound.
        max: u16,
    },
}

/// A pool of RTP/RTCP port pairs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPool {
    first: u16,
    pairs: u32,
    cursor: u32,
    used: Vec<u64>,
    in_use: u32,
}

impl PortPool {
    /// A pool over `[min, max]`; the first pair starts at the first even port.
    pub fn new(min: u16, max: u16) -> Result<Self, PortPoolError> {
        let first = if min % 2 == 0 {
            min
        } else {
            min.saturating_add(1)
        };
        if min < 1024 || first >= max {
            return Err(PortPoolError::BadRange { min, max });
        }
        let pairs = (u32::from(max) - u32::from(first)).div_ceil(2);
        Ok(PortPool {
            first,
            pairs,
            cursor: 0,
            used: vec![0; pairs.div_ceil(64) as usize],
            in_use: 0,
        })
    }

    /// Whether `other` covers the same range (its allocations may differ).
    pub fn same_range(&self, other: &PortPool) -> bool {
        self.first == other.first && self.pairs == other.pairs
    }

    /// Number of pairs in the pool.
    pub fn capacity(&self) -> u32 {
        self.pairs
    }

    /// Number of pairs handed out.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    fn bit(&self, i: u32) -> bool {
        self.used[(i / 64) as usize] & (1u64 << (i % 64)) != 0
    }

    fn set(&mut self, i: u32, v: bool) {
        let w = &mut self.used[(i / 64) as usize];
        if v {
            *w |= 1u64 << (i % 64);
        } else {
            *w &= !(1u64 << (i % 64));
        }
    }

    /// Allocate the next free pair; returns the even (RTP) port, or `None`
    /// when the pool is exhausted.
    pub fn allocate(&mut self) -> Option<u16> {
        if self.in_use >= self.pairs {
            return None;
        }
        for step in 0..self.pairs {
            let i = (self.cursor + step) % self.pairs;
            if !self.bit(i) {
                self.set(i, true);
                self.in_use += 1;
                self.cursor = (i + 1) % self.pairs;
                return Some(self.first + (i * 2) as u16);
            }
        }
        None
    }

    /// Return a pair to the pool. Returns `false` (and changes nothing) if the
    /// port is not an allocated RTP port of this pool.
    pub fn release(&mut self, port: u16) -> bool {
        if port < self.first || (port - self.first) % 2 != 0 {
            return false;
        }
        let i = u32::from(port - self.first) / 2;
        if i >= self.pairs || !self.bit(i) {
            return false;
        }
        self.set(i, false);
        self.in_use -= 1;
        true
    }

    /// Take a specific free pair (used to restore a stream after a failed
    /// re-offer). Returns `false` if it is not a free RTP port of this pool.
    pub fn reserve(&mut self, port: u16) -> bool {
        if port < self.first || (port - self.first) % 2 != 0 {
            return false;
        }
        let i = u32::from(port - self.first) / 2;
        if i >= self.pairs || self.bit(i) {
            return false;
        }
        self.set(i, true);
        self.in_use += 1;
        true
    }

    /// Whether `port` (RTP) is currently allocated.
    pub fn is_allocated(&self, port: u16) -> bool {
        if port < self.first || (port - self.first) % 2 != 0 {
            return false;
        }
        let i = u32::from(port - self.first) / 2;
        i < self.pairs && self.bit(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_even_ports_rotating_and_releases() {
        let mut p = PortPool::new(20001, 20010).unwrap();
        assert_eq!(p.capacity(), 4); // 20002,20004,20006,20008 (20010 has no +1 in range)
        assert_eq!(p.allocate(), Some(20002));
        assert_eq!(p.allocate(), Some(20004));
        assert!(p.release(20002));
        assert!(!p.release(20002), "double release is refused");
        assert!(!p.release(20003), "odd port is not an RTP port");
        // rotating cursor: freed 20002 is reused last
        assert_eq!(p.allocate(), Some(20006));
        assert_eq!(p.allocate(), Some(20008));
        assert_eq!(p.allocate(), Some(20002));
        assert_eq!(p.allocate(), None);
        assert_eq!(p.in_use(), 4);
    }

    #[test]
    fn rejects_bad_ranges() {
        assert!(PortPool::new(30000, 30000).is_err());
        assert!(PortPool::new(80, 2000).is_err());
        assert!(PortPool::new(30001, 30001).is_err());
    }

    #[test]
    fn same_history_same_ports() {
        let run = || {
            let mut p = PortPool::new(40000, 40100).unwrap();
            let mut out = vec![];
            for i in 0..30 {
                if i % 3 == 2 {
                    let port = out[out.len() - 2];
                    p.release(port);
                }
                out.push(p.allocate().unwrap());
            }
            out
        };
        assert_eq!(run(), run());
    }
}
