//! Test harness for Yuntiao's integration tests.
//!
//! The tests in `tests/` drive the real `yuntiao` binary, never an in-process copy:
//!
//! * [`redis_server`]: a throwaway `redis-server` on a free port for each test.
//! * [`server`]: the `yuntiao` binary on a free port, embedded store or Redis, with kill -9 and
//!   restart.
//! * [`client`]: a protocol-v1 websocket client (tokio-tungstenite) with waiting helpers.
//! * [`ydoc`]: shared-document clients: a `yrs` client and the stock Yjs client in node.
//! * [`doc_session`]: a four-party case in session, for the document tests.

pub mod client;
pub mod doc_session;
pub mod peer;
pub mod redis_server;
pub mod server;
pub mod ydoc;

pub use client::Client;
pub use redis_server::RedisServer;
pub use server::{Case, Invite, Server, StoreKind};
