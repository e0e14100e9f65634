//! Base64 of image bytes, the largest transforms on the hot path (a megabyte image is 1.4 MB
//! of it, decoded from an upstream's JSON and encoded into the answer's): SIMD through
//! `base64-simd`, with the CPU's instructions detected at run time. Small values (secrets,
//! signatures) keep the `base64` crate.

/// `bytes` as standard, padded base64.
pub fn encode(bytes: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(bytes)
}

/// Where [`decode`]d bytes start: on a page boundary, so that the image store can hand a
/// decoded image to the disk as it is (direct I/O reads only aligned buffers) instead of
/// copying it into an aligned one first.
pub const DECODED_ALIGNMENT: usize = 4096;

/// The bytes of standard, padded base64 `text` (a `&str` or its bytes), starting at a multiple of
/// [`DECODED_ALIGNMENT`] in memory.
pub fn decode(text: impl AsRef<[u8]>) -> Result<bytes::Bytes, base64_simd::Error> {
    let text = text.as_ref();
    let length = base64_simd::STANDARD.decoded_length(text)?;
    let mut buffer: Vec<u8> = Vec::with_capacity(length + DECODED_ALIGNMENT - 1);
    let start = buffer.as_ptr().align_offset(DECODED_ALIGNMENT);
    // Only the bytes before the boundary are zeroed: the decoder appends into the capacity
    // reserved above (no reallocation, so the boundary stays put) without zeroing it first,
    // which for a megabyte image cost a pass over memory of its own.
    buffer.resize(start, 0);
    base64_simd::STANDARD.decode_append(text, &mut buffer)?;
    Ok(bytes::Bytes::from(buffer).slice(start..))
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
        assert!(super::decode("QUJD").is_ok_and(|b| b == b"ABC"[..]));
        for length in [0, 1, 2, 3, 4095, 4096, 4097, 100_003] {
            let encoded = super::encode(&bytes[..length]);
            let decoded = super::decode(&encoded).unwrap();
            assert_eq!(decoded, bytes[..length]);
            if length > 0 {
                assert_eq!(
                    decoded.as_ptr() as usize % super::DECODED_ALIGNMENT,
                    0,
                    "{length}"
                );
            }
        }
    }
}
