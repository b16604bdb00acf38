//! The gateway: media engine, signaling API and embedded TURN relay in one process.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod advertise;
pub mod http;
pub mod media;
pub mod media_source;
pub mod run;
pub mod signaling;
pub mod tls;
pub mod web;
