//! Deterministic identifiers: Via branches, To-tags, registration tokens and
//! masked Call-IDs are keyed pseudo-random functions of the inputs that
//! caused them, so a standby replaying the same inputs with the same config
//! generates the same values — nothing to log, nothing random.
//!
//! The PRF is SipHash-2-4 under a 128-bit [`Key`] derived from the instance
//! secret (SHA-256 of a domain label and the secret, truncated). SipHash is a
//! PRF: its outputs reveal nothing usable about the key, so the secret cannot
//! be recovered from branches or tags seen on the wire (the FNV-1a hash used
//! before was invertible). Inputs are length-delimited, so `["ab","c"]` and
//! `["a","bc"]` differ.
//!
//! This module owns the PRF and the identifier formats; it does not decide
//! which inputs feed which identifier (the core does).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use siphasher::sip::SipHasher24;
use std::fmt;
use std::hash::Hasher;

/// The 128-bit key of the core's PRF. Its `Debug` never shows the bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key(pub [u8; 16]);

impl Key {
    /// The key an instance secret (as written in the config) gives: the
    /// first 16 bytes of SHA-256("bgf-core-prf-v1\0" ‖ secret). An active and
    /// its standby read the same file and derive the same key.
    pub fn derive(secret: &[u8]) -> Key {
        let mut h = Sha256::new();
        h.update(b"bgf-core-prf-v1\0");
        h.update(secret);
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        Key(k)
    }

    /// A fixed key for tests, examples and benchmarks.
    pub const fn test(n: u8) -> Key {
        Key([
            0x5e, 0xed, 0xb9, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x0f, 0x1e,
            0x2d, n,
        ])
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// SipHash-2-4 of `parts` (order-sensitive, length-delimited) under `key`.
pub fn prf(key: &Key, parts: &[&[u8]]) -> u64 {
    let mut h = SipHasher24::new_with_key(&key.0);
    for p in parts {
        h.write(&(p.len() as u32).to_le_bytes());
        h.write(p);
    }
    h.finish()
}

/// A Via branch for a request we forward or originate (RFC 3261 magic cookie).
pub fn branch(key: &Key, parts: &[&[u8]]) -> String {
    format!("z9hG4bK-bgf-{:016x}", prf(key, parts))
}

/// A To-tag for a response we generate.
pub fn tag(key: &Key, parts: &[&[u8]]) -> String {
    format!("bgf{:012x}", prf(key, parts) >> 16)
}

/// A registration token: the user part of the Contact we give the core.
pub fn token(key: &Key, parts: &[&[u8]]) -> String {
    format!("r{:016x}", prf(key, parts))
}

/// Words that mark a placeholder or a human-chosen secret, not a random one.
const PLACEHOLDER_WORDS: &[&str] = &[
    "change", "replace", "secret", "password", "passwd", "example", "default", "sample", "dummy",
    "qwerty", "12345",
];

/// Estimated entropy of a secret as written, in bits: its length times the
/// bits per character of its alphabet — decimal (3.3), hex (4), or else the
/// character classes it uses (lower 26, upper 26, digits 10, other printable
/// ASCII 33; anything else 8 bits) — and zero for strings that are mostly one
/// character, use fewer than 8 distinct characters, or contain a placeholder
/// word such as "change" or "secret" (a pattern, not a secret).
pub fn secret_entropy_bits(secret: &str) -> f64 {
    let b = secret.as_bytes();
    if b.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for &c in b {
        counts[usize::from(c)] += 1;
    }
    let distinct = counts.iter().filter(|n| **n > 0).count();
    let most = counts.iter().copied().max().unwrap_or(0);
    let lower = secret.to_ascii_lowercase();
    if distinct < 8 || most * 3 > b.len() || PLACEHOLDER_WORDS.iter().any(|w| lower.contains(w)) {
        return 0.0;
    }
    let any = |f: fn(&u8) -> bool| b.iter().any(f);
    let all = |f: fn(&u8) -> bool| b.iter().all(f);
    let per_char = if all(u8::is_ascii_digit) {
        10f64.log2()
    } else if all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        || all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
    {
        4.0
    } else if !all(|c| c.is_ascii_graphic() || *c == b' ') {
        8.0
    } else {
        let mut n = 0.0;
        if any(u8::is_ascii_lowercase) {
            n += 26.0;
        }
        if any(u8::is_ascii_uppercase) {
            n += 26.0;
        }
        if any(u8::is_ascii_digit) {
            n += 10.0;
        }
        if any(|c| !c.is_ascii_alphanumeric()) {
            n += 33.0;
        }
        f64::log2(n)
    };
    per_char * b.len() as f64
}

/// Entropy an instance secret must have (threat model item 7).
pub const MIN_SECRET_BITS: f64 = 128.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sensitive() {
        let k = Key::test(1);
        let a = branch(&k, &[b"x", b"y"]);
        assert_eq!(a, branch(&k, &[b"x", b"y"]));
        assert_ne!(a, branch(&Key::test(2), &[b"x", b"y"]), "key matters");
        assert_ne!(a, branch(&k, &[b"xy"]), "parts are delimited");
        assert_ne!(branch(&k, &[b"ab", b"c"]), branch(&k, &[b"a", b"bc"]));
        assert!(a.starts_with("z9hG4bK"));
    }

    #[test]
    fn prf_is_siphash_2_4() {
        // Reference vector of the SipHash paper (key 00..0f, empty message,
        // 64-bit output 0x726fdb47dd0e0e31): with no parts nothing is written.
        let k = Key(core::array::from_fn(|i| i as u8));
        assert_eq!(prf(&k, &[]), 0x726f_db47_dd0e_0e31);
    }

    #[test]
    fn key_derivation_is_stable_and_hidden() {
        let k = Key::derive(b"change-me");
        assert_eq!(k, Key::derive(b"change-me"));
        assert_ne!(k, Key::derive(b"change-me2"));
        assert_eq!(format!("{k:?}"), "Key(..)");
    }

    #[test]
    fn entropy_estimates() {
        assert!(secret_entropy_bits("test-secret-123") < MIN_SECRET_BITS);
        assert!(secret_entropy_bits("change-me") < MIN_SECRET_BITS);
        assert_eq!(
            secret_entropy_bits("change-me-cluster-secret-0123456789"),
            0.0
        );
        // Lower case and digits only: 5.2 bits a character.
        assert!(secret_entropy_bits("k3j5h8g2f9d4s7a1q6w0e3r5") < MIN_SECRET_BITS);
        // `openssl rand -hex 16`: exactly 128 bits.
        assert!(secret_entropy_bits("3f9a0c1b7d2e4a65b8c90d1e2f3a4b5c") >= MIN_SECRET_BITS);
        // 22+ base64url characters.
        assert!(secret_entropy_bits("Qm9vL3Nlc3Npb24tSGlkZS1rZXk") >= MIN_SECRET_BITS);
        // Long but a pattern.
        assert_eq!(secret_entropy_bits(&"a".repeat(64)), 0.0);
        assert_eq!(secret_entropy_bits(&"ab".repeat(40)), 0.0);
        // 40 decimal digits: 132 bits.
        assert!(secret_entropy_bits("8203746519283746501928374650192837465019") >= 128.0);
        assert_eq!(secret_entropy_bits(""), 0.0);
    }
}
