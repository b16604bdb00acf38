//! The gateway: media engine, signaling API and embedded TURN relay in one process.
#![forbid(unsafe_code)]

pub mod advertise;
pub mod app;
pub mod bind_hint;
pub mod config;
pub mod doctor;
pub mod http;
pub mod ice_url;
pub mod media;
pub mod media_source;
pub mod metrics;
pub mod own_addrs;
pub mod reload;
pub mod run;
pub mod session;
pub mod shortcut;
pub mod shutdown;
pub mod signaling;
pub mod streams;
pub mod tls;
pub mod web;
