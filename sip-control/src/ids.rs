//! Deterministic identifiers: Via branches, To-tags and registration tokens
//! are keyed hashes of the inputs that caused them (and the instance secret),
//! so a standby replaying the same inputs with the same config generates the
//! same values — nothing to log, nothing random.
//!
//! The hash is FNV-1a 64 over the secret and the parts, finished with a
//! SplitMix64 mix. It is not a MAC: it makes values unpredictable to peers
//! that do not know the secret, which is all RFC 3261 asks of branches and tags.

/// Keyed 64-bit hash of `parts` (order-sensitive, length-delimited).
pub fn keyed_hash(secret: u64, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ secret;
    for p in parts {
        for &b in (p.len() as u32).to_le_bytes().iter().chain(p.iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    // SplitMix64 finaliser
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A Via branch for a request we forward or originate (RFC 3261 magic cookie).
pub fn branch(secret: u64, parts: &[&[u8]]) -> String {
    format!("z9hG4bK-bgf-{:016x}", keyed_hash(secret, parts))
}

/// A To-tag for a response we generate.
pub fn tag(secret: u64, parts: &[&[u8]]) -> String {
    format!("bgf{:012x}", keyed_hash(secret, parts) >> 16)
}

/// A registration token: the user part of the Contact we give the core.
pub fn token(secret: u64, parts: &[&[u8]]) -> String {
    format!("r{:016x}", keyed_hash(secret, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sensitive() {
        let a = branch(1, &[b"x", b"y"]);
        assert_eq!(a, branch(1, &[b"x", b"y"]));
        assert_ne!(a, branch(2, &[b"x", b"y"]), "secret matters");
        assert_ne!(a, branch(1, &[b"xy"]), "parts are delimited");
        assert!(a.starts_with("z9hG4bK"));
    }
}
