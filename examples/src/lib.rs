//! Examples live in `examples/*.rs`; run with `cargo run -p imgproxy-examples --example embed`.
