//! Yuntiao server: every I/O edge of the cloud-mediation service.
//!
//! The rules of a mediation live in the `yuntiao-signaling` crate, which does no I/O; this crate
//! is the imperative shell around it:
//!
//! * [`config`]: command line and environment options.
//! * [`secrets`]: signing keys and the admin token (generated and kept in dev mode).
//! * [`auth`]: invite tokens (JWT with a pinned algorithm) and the admin-token check.
//! * [`store`]: the case event log, on Redis or on the embedded redb store.
//! * [`rooms`]: one task per active case, driving the signaling room: decide, store, then
//!   acknowledge and fan out.
//! * [`ws`]: the signaling websocket, one per participant.
//! * [`docs`]: shared documents (agreement draft, caucus notes) over the y-websocket protocol
//!   on `yrs`, stored before broadcast.
//! * [`media`]: the SFU on str0m: one UDP port, forwarding by the room's media plan.
//! * [`export`]: the printable, self-contained HTML case record.
//! * [`metrics`]: Prometheus text on `/metrics`.
//! * [`http`]: health checks, the websocket route and the admin API.
//! * [`server`]: wiring it together and serving until shutdown.
//! * [`web`]: the built web client (`web-client/dist`), embedded in release builds.

pub mod auth;
pub mod config;
pub mod docs;
pub mod export;
pub mod http;
pub mod ids;
pub mod media;
pub mod metrics;
pub mod rooms;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod web;
pub mod ws;
