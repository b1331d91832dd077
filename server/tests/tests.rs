//! The feed server's integration tests: a real server on a real socket in this process,
//! real clients, and the adversaries the feed must survive.

mod suite;
