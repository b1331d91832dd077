//! End-to-end tests: a real Envoy, the real filter module, real certificates and real
//! TLS clients. One binary; each module is one policy scenario with its own Envoy.

mod audit;
mod baseline;
mod common;
mod crl_urls;
mod delta;
mod fail_closed;
mod feed;
mod feed_memory;
mod http;
mod image;
mod istio;
mod lifecycle;
mod longpoll;
mod network;
mod oci;
mod prometheus;
mod proxies;
mod revocation;
mod server_first;
mod validate;
