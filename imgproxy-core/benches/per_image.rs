//! The gateway's work on one generated image, step by step, so that each step's cost is known
//! (issue 18): what a miss does between the upstream's answer and the client's, for one
//! 1024x1024 PNG of about 1 MB (a gradient with seeded noise, compressible like a photograph),
//! inline in OpenAI's JSON as about 1.4 MB of base64.
//!
//! Steps, each its own benchmark, in the order a `b64_json` miss runs them:
//! - `parse_upstream_json`: the upstream's JSON read with serde_json into a struct of OpenAI's
//!   shape (the kernel's `ImageResponse`, one owned `String` per `b64_json`; the OpenAI
//!   adapter's wire type decodes the base64 where it lies in the body instead, saving that
//!   copy, so this and the next step bound its parse from above);
//! - `base64_decode`: that string to bytes;
//! - `probe_format_and_size`: the MIME type sniffed from the bytes and the size read from the
//!   header, as the provider and the gateway's delivery do;
//! - `content_hash_blake3`: the content hash that names the image in the store;
//! - `sha256`: for comparison, the content hash it replaced (SHA-256, at the CPU's SHA
//!   extensions where it has them);
//! - `store_write`: `ImageStore::put` into a local folder (a temporary one), hash included,
//!   every iteration a new image (a new image is what a miss writes), deleted again untimed;
//! - `base64_encode`: the bytes to the answer's `b64_json` (`ImageData::inline`);
//! - `response_json_parts`: the answer's `ImageResponse` to the JSON body the server writes
//!   (`ImageResponse::into_json_parts`: the base64 checked, not escaped);
//! - `serialize_response_serde_json`: for comparison, the same answer through
//!   `serde_json::to_vec`, as the server wrote it before (escaping every byte).
//!
//! Throughput is given in the bytes each step is handed. Run:
//! `cargo bench -p imgproxy-core --bench per_image` (criterion's options after `--`, e.g.
//! `-- content_hash`). On a shared machine compare steps within one run, not runs.

#![expect(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use image::{
    codecs::png::{CompressionType, FilterType, PngEncoder},
    RgbImage,
};
use imgproxy_core::{
    convert,
    provider::{image_mime, ImageMeta},
    service::ImageStore,
    ImageData, ImageResponse,
};
use sha2::{Digest as _, Sha256};

const SIDE: u32 = 1024;

/// A 1024x1024 PNG like tests/bench/gateway.sh's fake upstream sends: a vertical gradient
/// plus noise of 4 levels (5 on every fourth row) from a fixed xorshift sequence, so that it
/// compresses to about a third of its raw size.
fn test_png() -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut noise = move |levels: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        u8::try_from(state % levels).unwrap()
    };
    let image = RgbImage::from_fn(SIDE, SIDE, |_, y| {
        let base = u8::try_from(y * 200 / SIDE).unwrap();
        let levels = if y % 4 == 0 { 5 } else { 4 };
        image::Rgb([
            base + noise(levels),
            base + noise(levels),
            base + noise(levels),
        ])
    });
    // Unfiltered rows at zlib's level 6, as the fake upstream's (Python's zlib) are.
    let mut png = Vec::new();
    let encoder =
        PngEncoder::new_with_quality(&mut png, CompressionType::Level(6), FilterType::NoFilter);
    image.write_with_encoder(encoder).unwrap();
    png
}

/// OpenAI's answer to `POST /v1/images/generations` carrying `png` inline.
fn upstream_json(png: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "created": 1_767_225_600,
        "background": "opaque",
        "data": [{"b64_json": base64::engine::general_purpose::STANDARD.encode(png)}],
        "output_format": "png",
        "quality": "low",
        "size": "1024x1024",
        "usage": {
            "input_tokens": 50,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
            "output_tokens": 272,
            "total_tokens": 322
        }
    }))
    .unwrap()
}

fn per_image(c: &mut Criterion) {
    let png = test_png();
    let body = upstream_json(&png);
    let parsed: ImageResponse = serde_json::from_slice(&body).unwrap();
    let b64 = parsed.data[0].b64_json.clone().unwrap();
    let meta = ImageMeta {
        background: Some("opaque".into()),
        output_format: Some("png".into()),
        quality: Some("low".into()),
        size: Some("1024x1024".into()),
    };
    let answer = ImageResponse::new(vec![ImageData::inline(&png, None)], meta, None);
    let answer_bytes = serde_json::to_vec(&answer).unwrap().len();
    let image_bytes = png.len() as u64;
    eprintln!(
        "one {image_bytes}-byte PNG ({SIDE}x{SIDE}): {} bytes of upstream JSON, {} of base64, \
         {answer_bytes} of answer",
        body.len(),
        b64.len()
    );

    let mut group = c.benchmark_group("per_image");
    // The slowest steps take over a millisecond: 60 samples fit criterion's 5 s.
    group.sample_size(60);
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse_upstream_json", |b| {
        b.iter(|| serde_json::from_slice::<ImageResponse>(black_box(&body)).unwrap());
    });
    group.throughput(Throughput::Bytes(b64.len() as u64));
    group.bench_function("base64_decode", |b| {
        b.iter(|| imgproxy_core::b64::decode(black_box(b64.trim())).unwrap());
    });
    group.throughput(Throughput::Bytes(image_bytes));
    group.bench_function("probe_format_and_size", |b| {
        b.iter(|| {
            let bytes = black_box(png.as_slice());
            (image_mime(bytes, &[]), convert::dimensions(bytes))
        });
    });
    group.bench_function("content_hash_blake3", |b| {
        b.iter(|| blake3::hash(black_box(&png)).to_hex());
    });
    group.bench_function("sha256", |b| {
        b.iter(|| hex::encode(Sha256::digest(black_box(&png))));
    });
    store_write(&mut group, &png);
    group.bench_function("base64_encode", |b| {
        b.iter(|| ImageData::inline(black_box(&png), None));
    });
    group.throughput(Throughput::Bytes(answer_bytes as u64));
    group.bench_function("response_json_parts", |b| {
        b.iter_batched(
            || answer.clone(),
            |answer| answer.into_json_parts().unwrap(),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("serialize_response_serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&answer)).unwrap());
    });
    group.finish();
}

/// `ImageStore::put` of a new image each time (its last 8 bytes a counter: the store does not
/// look inside), timed alone; each is deleted after, untimed, so the folder stays small.
fn store_write(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    png: &[u8],
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let folder = tempfile::tempdir().unwrap();
    let store = ImageStore::local(folder.path()).unwrap();
    let mut image = png.to_vec();
    let mut counter = 0_u64;
    group.bench_function("store_write", |b| {
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            for _ in 0..iterations {
                counter += 1;
                let at = image.len() - 8;
                image[at..].copy_from_slice(&counter.to_le_bytes());
                let bytes = Bytes::copy_from_slice(&image);
                let started = Instant::now();
                let key = runtime.block_on(store.put(bytes, "image/png")).unwrap();
                spent += started.elapsed();
                let path = store.location(&key).unwrap();
                runtime.block_on(store.delete(&path)).unwrap();
            }
            spent
        });
    });
}

criterion_group!(benches, per_image);
criterion_main!(benches);
