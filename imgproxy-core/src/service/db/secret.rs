//! Random ids and secrets, and how a secret is hashed and compared. Nothing here touches the
//! database.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Error, Result};

/// Every secret starts with this, so a leaked one is recognisable (secret scanners) and a
/// master key or a stray string is told apart without a database look-up.
pub const SECRET_PREFIX: &str = "ipk_";
/// Base62 characters after the prefix: about 238 bits.
const SECRET_CHARS: usize = 40;
/// Base62 characters of a key id after `key_`: about 95 bits, so ids never collide.
const ID_CHARS: usize = 16;
/// Hex digits of the hash that locate a key's row. 64 bits: unique in practice, and still
/// useless to an attacker, who would need the secret behind it.
const LOOKUP_HEX: usize = 16;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new key id.
pub(super) fn new_key_id() -> Result<String> {
    Ok(format!("key_{}", random_base62(ID_CHARS)?))
}

/// A new uploaded file's id, in OpenAI's `file-...` form.
pub(super) fn new_file_id() -> Result<String> {
    Ok(format!("file-{}", random_base62(ID_CHARS + 8)?))
}

/// A random base62 token of `len` characters (ids of tasks and the like).
pub(super) fn new_token(len: usize) -> Result<String> {
    random_base62(len)
}

/// A new Standard Webhooks signing secret: `whsec_` and 24 random bytes in base64.
pub(super) fn new_webhook_secret() -> Result<String> {
    use base64::Engine as _;
    let mut bytes = [0_u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("random source: {e}")))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// A new secret.
pub(super) fn new_secret() -> Result<String> {
    Ok(format!("{SECRET_PREFIX}{}", random_base62(SECRET_CHARS)?))
}

/// The stored form of a secret. A plain SHA-256 suffices: secrets are long and random, so
/// there is nothing to brute-force and a slow password hash would only slow every request.
pub(super) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The indexed part of a hash that finds the candidate rows.
pub(super) fn lookup_prefix(hash: &str) -> &str {
    hash.get(..LOOKUP_HEX).unwrap_or(hash)
}

/// Compares two hashes in time independent of where they differ.
pub(super) fn hashes_match(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn random_base62(len: usize) -> Result<String> {
    let mut out = String::with_capacity(len);
    let mut buf = [0_u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| Error::Internal(format!("random source: {e}")))?;
        // 248 = 4 × 62: bytes above it are dropped so every character is equally likely.
        for &byte in buf.iter().filter(|&&b| b < 248) {
            out.push(char::from(BASE62[usize::from(byte % 62)]));
            if out.len() == len {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_ids_have_their_shape_and_differ() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), SECRET_PREFIX.len() + SECRET_CHARS);
        assert!(a[SECRET_PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric()));
        let id = new_key_id().unwrap();
        assert!(id.starts_with("key_") && id.len() == 4 + ID_CHARS);
    }

    #[test]
    fn hashes_compare_equal_only_when_equal() {
        let hash = hash_secret("ipk_x");
        assert_eq!(hash.len(), 64);
        assert_eq!(lookup_prefix(&hash).len(), LOOKUP_HEX);
        assert!(hashes_match(&hash, &hash_secret("ipk_x")));
        assert!(!hashes_match(&hash, &hash_secret("ipk_y")));
        assert!(!hashes_match(&hash, &hash[..63]));
    }
}
