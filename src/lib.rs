//! loggate: a Kafka-protocol log ingestion gateway.
//!
//! A record's path: [`server`] (listener, TLS, frames) -> [`kafka`] (one handler per
//! API) -> [`ingest`] (auth, topic model, routing, conversion to logs) -> the storage
//! trait of `loggate-storage`. Record bytes are decoded by the pure `loggate-records`
//! crate. See ARCHITECTURE.md.

pub mod cluster;
pub mod config;
pub mod ingest;
pub mod kafka;
pub mod logs;
pub mod metrics;
pub mod reload;
pub mod server;
