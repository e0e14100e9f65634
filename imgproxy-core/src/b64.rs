//! Base64 of image bytes, the largest transforms on the hot path (a megabyte image is 1.4 MB
//! of it, decoded from an upstream's JSON and encoded into the answer's): SIMD through
//! `base64-simd`, with the CPU's instructions detected at run time. Small values (secrets,
//! signatures) keep the `base64` crate.

/// `bytes` as standard, padded base64.
pub fn encode(bytes: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(bytes)
}

/// The bytes of standard, padded base64 `text`.
pub fn decode(text: &str) -> Result<Vec<u8>, base64_simd::Error> {
    base64_simd::STANDARD.decode_to_vec(text)
}

/// Whether `text` is standard, padded base64 (and so a JSON string's contents as it is).
pub fn is_valid(text: &[u8]) -> bool {
    base64_simd::STANDARD.check(text).is_ok()
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    #[test]
    fn it_agrees_with_the_base64_crate() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(100_003).collect();
        let reference = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert_eq!(super::encode(&bytes), reference);
        assert_eq!(super::decode(&reference).unwrap(), bytes);
        assert!(super::decode("not base64!").is_err());
        assert!(super::is_valid(reference.as_bytes()));
        assert!(!super::is_valid(b"QUJD\""));
        assert!(super::decode("QUJD").is_ok_and(|b| b == b"ABC"));
    }
}
