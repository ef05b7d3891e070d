//! `orders`: everything checkout, migrator and backup share.
//!
//! - [`config`]: layered settings (files, secret files, environment, flags);
//! - [`db`]: a pool of PostgreSQL connections, [`tls`]: rustls with libpq's `sslmode`;
//! - [`schema`]: the migrations of `sql/`, embedded, and the runner that applies them;
//! - [`store`]: the order repository checkout and the history API use;
//! - [`money`]: exact arithmetic on Online Boutique's `Money`;
//! - [`proto`]: generated gRPC code for both protos, and `Money` conversions;
//! - [`telemetry`]: JSON logs and OpenTelemetry tracing;
//! - `testkit` (feature `testkit`): throwaway TLS PostgreSQL clusters for tests.

pub mod config;
pub mod db;
pub mod money;
pub mod proto;
pub mod schema;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;
