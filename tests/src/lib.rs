//! Test harness for Yuntiao's integration tests.
pub mod redis_server;
