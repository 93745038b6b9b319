//! API keys: `hk_` + 32 random base62 characters (~190 bits). Only the SHA-256 of a key is
//! stored; a fast hash is right here because the secret is random and long, unlike a password.

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

pub const KEY_PREFIX: &str = "hk_";
const SECRET_LEN: usize = 32;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a key may do. Scopes nest: admin can do everything write can, write everything read can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Whether a key with this scope may use a route that needs `required`.
    pub fn allows(self, required: Scope) -> bool {
        self >= required
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope `{other}` (expected read, write or admin)"
            )),
        }
    }
}

/// A freshly made key. The clear text exists only in this value and on the caller's screen;
/// `Debug` never prints it.
pub struct NewKeySecret {
    pub secret: String,
    pub hash: String,
    /// The first characters, stored so people can tell their keys apart in a list.
    pub display_prefix: String,
}

impl fmt::Debug for NewKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKeySecret")
            .field("display_prefix", &self.display_prefix)
            .finish_non_exhaustive()
    }
}

pub fn generate() -> NewKeySecret {
    let mut rng = rand::rng();
    let mut secret = String::with_capacity(KEY_PREFIX.len() + SECRET_LEN);
    secret.push_str(KEY_PREFIX);
    for _ in 0..SECRET_LEN {
        secret.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    NewKeySecret {
        hash: hash(&secret),
        display_prefix: secret[..KEY_PREFIX.len() + 6].to_string(),
        secret,
    }
}

/// The stored form of a key.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether a presented token could be one of our keys at all; anything else is rejected
/// before it costs a hash and a lookup.
pub fn looks_like_key(token: &str) -> bool {
    token.len() == KEY_PREFIX.len() + SECRET_LEN
        && token.starts_with(KEY_PREFIX)
        && token[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_hashed() {
        let a = generate();
        let b = generate();
        assert_ne!(a.secret, b.secret);
        assert!(looks_like_key(&a.secret));
        assert_eq!(a.hash, hash(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(!format!("{a:?}").contains(&a.secret));
    }

    #[test]
    fn scopes_nest() {
        assert!(Scope::Admin.allows(Scope::Write));
        assert!(Scope::Write.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Write));
        assert!(!Scope::Write.allows(Scope::Admin));
    }
}
