//! `grpc.health.v1.Health`, honestly: in persistence `required`, checkout is
//! NOT_SERVING while the database is unreachable or its schema is older than
//! this binary needs, because every order would fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orders::config::Persistence;
use orders::db;
use orders::schema::{self, REQUIRED_VERSION};
use orders::store::Store;
use tokio::sync::{Notify, watch};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The service names health reports on; "" is the whole server, which
/// Kubernetes gRPC probes ask about.
pub const SERVICES: [&str; 3] = [
    "",
    "hipstershop.CheckoutService",
    "boutique.orders.v1.OrderHistory",
];

/// Lets request handlers ask for an immediate re-check after a database error.
#[derive(Clone, Default)]
pub struct HealthHandle {
    recheck: Arc<Notify>,
}

impl HealthHandle {
    /// The database just failed: check now instead of at the next interval.
    pub fn database_failed(&self) {
        self.recheck.notify_one();
    }
}

/// Watches the database and sets the serving status.
pub struct HealthWatch {
    reporter: HealthReporter,
    store: Option<Store>,
    persistence: Persistence,
    interval: Duration,
    handle: HealthHandle,
    /// Whether "Successfully connected" was logged already (logged once).
    connected_once: AtomicBool,
    last: std::sync::Mutex<Option<ServingStatus>>,
}

impl HealthWatch {
    /// A watcher reporting through `reporter`.
    pub fn new(
        reporter: HealthReporter,
        store: Option<Store>,
        persistence: Persistence,
        interval: Duration,
    ) -> Self {
        Self {
            reporter,
            store,
            persistence,
            interval,
            handle: HealthHandle::default(),
            connected_once: AtomicBool::new(false),
            last: std::sync::Mutex::new(None),
        }
    }

    /// A handle for request handlers.
    pub fn handle(&self) -> HealthHandle {
        self.handle.clone()
    }

    /// Checks once and reports the result.
    pub async fn check(&self) {
        let database_ok = self.database_ok().await;
        let status = if database_ok || self.persistence != Persistence::Required {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.report(status).await;
    }

    /// Reports `status` for every service, logging changes.
    pub async fn report(&self, status: ServingStatus) {
        let changed = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let changed = *last != Some(status);
            *last = Some(status);
            changed
        };
        if changed {
            tracing::info!(status = ?status, "health status changed");
        }
        for service in SERVICES {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Re-checks every interval, or at once after [`HealthHandle::database_failed`],
    /// until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.handle.recheck.notified() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            self.check().await;
        }
    }

    async fn database_ok(&self) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let version = async {
            let conn = db::checkout(store.pool())
                .await
                .map_err(|e| e.to_string())?;
            schema::current_version(&conn)
                .await
                .map_err(|e| e.to_string())
        };
        match version.await {
            Ok(Some(version)) if version >= REQUIRED_VERSION => {
                if !self.connected_once.swap(true, Ordering::Relaxed) {
                    tracing::info!("Successfully connected to PostgreSQL database");
                    tracing::info!(
                        schema_version = version,
                        "Database connection established successfully"
                    );
                }
                true
            }
            Ok(version) => {
                tracing::warn!(
                    schema_version = version.unwrap_or(0),
                    required = REQUIRED_VERSION,
                    "database schema is older than this checkout needs; run the migrator"
                );
                false
            }
            Err(error) => {
                tracing::warn!(%error, "database unavailable");
                false
            }
        }
    }
}
