//! End-to-end tests: a real Envoy, the real filter module, real certificates and real
//! TLS clients. One binary; each module is one policy scenario with its own Envoy.

mod baseline;
mod common;
mod network;
