//! End-to-end tests: a real Envoy, the real filter module, real certificates and real
//! TLS clients. One binary; each module is one policy scenario with its own Envoy.

mod audit;
mod baseline;
mod common;
mod fail_closed;
mod feed;
mod http;
mod istio;
mod network;
mod revocation;
mod server_first;
mod validate;
