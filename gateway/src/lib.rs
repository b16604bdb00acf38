//! The gateway: media engine, signaling API and embedded TURN relay in one process.
#![forbid(unsafe_code)]
pub mod media;
