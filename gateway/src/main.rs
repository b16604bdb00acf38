//! `gateway`: the binary.
#![forbid(unsafe_code)]

fn main() {}
