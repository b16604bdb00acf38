//! The gateway: media engine, signaling API and embedded TURN relay in one process.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod http;
pub mod media;
pub mod run;
pub mod tls;
pub mod web;
