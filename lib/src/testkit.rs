//! Real parts for tests and the demo (cargo feature `testkit`).
//!
//! - [`PgCluster`]: a throwaway PostgreSQL cluster from the machine's server
//!   binaries, TLS only (`hostssl`), SCRAM passwords, one per test binary via
//!   [`PgCluster::shared`], a fresh database per test via
//!   [`PgCluster::create_database`];
//! - [`TestCa`]: certificates generated at test time;
//! - [`otlp::OtlpReceiver`]: an OTLP trace collector stand-in that records spans;
//! - [`standins::Downstream`]: in-process stand-ins for the six Online Boutique services checkout calls.

pub mod otlp;
mod pki;
mod postgres;
pub mod standins;

pub use pki::{IssuedCert, TestCa};
pub use postgres::{CERT_HOST, PgCluster, SUPERUSER, TestDb, find_bin_dir};
