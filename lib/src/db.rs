//! PostgreSQL connections.
