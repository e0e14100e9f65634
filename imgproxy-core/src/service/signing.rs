//! Signed URLs: an HMAC-SHA256 over a URL's path and its other query parameters, with an
//! expiry, so that a URL placed in public HTML (an `<img src>`) carries no API key and cannot
//! be altered or reused past its time. One mechanism for stored-image URLs and URL-API URLs.

use std::fmt;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The query parameter holding the signature.
pub const SIG: &str = "sig";
/// The query parameter holding the expiry (unix seconds).
pub const EXPIRES: &str = "exp";
/// The query parameter naming the API key a signed URL acts for (and bills).
pub const KEY_ID: &str = "kid";

/// Shortest accepted signing secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a URL's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `sig` or no `exp`.
    #[error("the URL is not signed")]
    Missing,
    /// `exp` is in the past.
    #[error("the signed URL has expired")]
    Expired,
    /// The signature does not match the URL (altered, or made with another secret).
    #[error("the URL's signature does not match")]
    Invalid,
}

/// Signs and verifies URLs with one deployment-wide secret. Instances that serve each other's
/// URLs must share it.
#[derive(Clone)]
pub struct UrlSigner {
    /// The MAC keyed with the secret, cloned for each URL.
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UrlSigner([redacted])")
    }
}

impl UrlSigner {
    /// A signer with `secret`; `None` if it is shorter than [`MIN_SECRET_BYTES`].
    pub fn new(secret: &[u8]) -> Option<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return None;
        }
        Hmac::<Sha256>::new_from_slice(secret)
            .ok()
            .map(|keyed| Self { keyed })
    }

    /// The query string (without `?`) that signs `path` with `params` until `expires_at`:
    /// `params` in order, then `exp` and `sig`.
    pub fn sign(&self, path: &str, params: &[(String, String)], expires_at: i64) -> String {
        let mut all: Vec<(String, String)> = params
            .iter()
            .filter(|(name, _)| name != SIG && name != EXPIRES)
            .cloned()
            .collect();
        all.push((EXPIRES.to_owned(), expires_at.to_string()));
        let sig = self.mac(path, &all);
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(all.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        query.append_pair(SIG, &sig);
        query.finish()
    }

    /// Checks the `sig` and `exp` among `params` (a URL's decoded query pairs) for `path` at
    /// unix time `now`.
    pub fn verify(
        &self,
        path: &str,
        params: &[(String, String)],
        now: i64,
    ) -> Result<(), SignatureError> {
        let find = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let (Some(sig), Some(expires)) = (find(SIG), find(EXPIRES)) else {
            return Err(SignatureError::Missing);
        };
        let Ok(given) = hex::decode(sig) else {
            return Err(SignatureError::Invalid);
        };
        let signed: Vec<(String, String)> =
            params.iter().filter(|(k, _)| k != SIG).cloned().collect();
        // Constant-time comparison, so timing does not reveal how much of a signature matched.
        self.hmac(path, &signed)
            .verify_slice(&given)
            .map_err(|_| SignatureError::Invalid)?;
        // Checked after the signature, so an attacker cannot learn anything from the order.
        match expires.parse::<i64>() {
            Ok(at) if at >= now => Ok(()),
            Ok(_) => Err(SignatureError::Expired),
            Err(_) => Err(SignatureError::Invalid),
        }
    }

    fn mac(&self, path: &str, params: &[(String, String)]) -> String {
        hex::encode(self.hmac(path, params).finalize().into_bytes())
    }

    /// The MAC over the canonical form: the path, then the pairs sorted and form-encoded, so
    /// that the order and the percent-encoding a client uses do not matter.
    fn hmac(&self, path: &str, params: &[(String, String)]) -> Hmac<Sha256> {
        let mut sorted: Vec<&(String, String)> = params.iter().collect();
        sorted.sort();
        let mut canonical = url::form_urlencoded::Serializer::new(String::new());
        canonical.extend_pairs(sorted.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut mac = self.keyed.clone();
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(canonical.finish().as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    fn signer() -> UrlSigner {
        UrlSigner::new(&[7; 32]).unwrap()
    }

    #[test]
    fn a_signed_url_verifies_until_it_expires() {
        let params = pairs("prompt=a+red+fox&model=placeholder");
        let query = signer().sign("/api/generate", &params, 1_000);
        let signed = pairs(&query);
        assert_eq!(signer().verify("/api/generate", &signed, 999), Ok(()));
        assert_eq!(signer().verify("/api/generate", &signed, 1_000), Ok(()));
        assert_eq!(
            signer().verify("/api/generate", &signed, 1_001),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn order_and_encoding_of_the_query_do_not_matter() {
        let query = signer().sign("/p", &pairs("b=2&a=1%201"), 50);
        let mut reordered = pairs(&query);
        reordered.reverse();
        assert_eq!(signer().verify("/p", &reordered, 0), Ok(()));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let query = signer().sign("/api/generate", &pairs("prompt=fox"), 50);
        let mut altered = pairs(&query);
        altered[0].1 = "wolf".into();
        assert_eq!(
            signer().verify("/api/generate", &altered, 0),
            Err(SignatureError::Invalid)
        );
        let mut added = pairs(&query);
        added.push(("model".into(), "ultra".into()));
        assert_eq!(
            signer().verify("/api/generate", &added, 0),
            Err(SignatureError::Invalid)
        );
        let mut later = pairs(&query);
        later.iter_mut().find(|(k, _)| k == EXPIRES).unwrap().1 = "99".into();
        assert_eq!(
            signer().verify("/api/generate", &later, 0),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            signer().verify("/other", &pairs(&query), 0),
            Err(SignatureError::Invalid)
        );
        let other = UrlSigner::new(&[8; 32]).unwrap();
        assert_eq!(
            other.verify("/api/generate", &pairs(&query), 0),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn unsigned_urls_and_short_secrets_are_refused() {
        assert_eq!(
            signer().verify("/p", &pairs("prompt=x"), 0),
            Err(SignatureError::Missing)
        );
        assert!(UrlSigner::new(&[1; 31]).is_none());
        assert!(!format!("{:?}", signer()).contains('7'));
    }
}
