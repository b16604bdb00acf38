//! The TURN relay.
#![forbid(unsafe_code)]
