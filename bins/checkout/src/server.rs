//! Wires the services onto one port and runs them until shutdown.
//!
//! On shutdown, health turns NOT_SERVING, the listener stops accepting, and
//! in-flight orders get `checkout.shutdown_grace` to finish before the
//! process gives up on them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use orders::config::{Persistence, Settings};
use orders::db::Database;
use orders::proto::boutique::orders::v1::order_history_server::OrderHistoryServer;
use orders::proto::hipstershop::checkout_service_server::CheckoutServiceServer;
use orders::store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::downstream::Downstream;
use crate::health::HealthWatch;
use crate::history::History;
use crate::place_order::PlaceOrder;

/// A checkout server running in the background.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Asks the server to shut down gracefully and waits until it has.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("the server task panicked")?
    }

    /// Waits until the server ends by itself (it only does on error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the server task panicked")?
    }

    /// A sender that triggers a graceful shutdown, for signal handlers.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Binds `checkout.listen_addr:checkout.port`.
pub async fn bind(settings: &Settings) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(settings.checkout.listen_addr, settings.checkout.port);
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (checkout.listen_addr, checkout.port / PORT)")
    })
}

/// Starts checkout on `listener` with `settings`.
pub async fn start(settings: &Settings, listener: TcpListener) -> anyhow::Result<Running> {
    let checkout = &settings.checkout;
    let store = match checkout.persistence {
        Persistence::Off => {
            tracing::warn!(
                "order persistence is off: orders are not stored (checkout.persistence = off)"
            );
            None
        }
        _ => {
            tracing::info!(
                target_db = %settings.database.host,
                persistence = ?checkout.persistence,
                "Database URL provided, initializing database connection"
            );
            let database = Database::new(&settings.database, "checkout")?;
            Some(Store::new(database.pool()))
        }
    };
    let downstream = Arc::new(Downstream::new(checkout)?);

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Arc::new(HealthWatch::new(
        reporter,
        store.clone(),
        checkout.persistence,
        checkout.health_check_interval,
    ));
    // Checked before serving, so a probe's first answer is already honest.
    health.check().await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(orders::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    let place_order = PlaceOrder::new(checkout, downstream, store.clone(), health.handle());
    let history = History::new(checkout, store);

    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let grace = checkout.shutdown_grace;
    let health_task = tokio::spawn(health.clone().run(stop.subscribe()));
    let task = tokio::spawn(async move {
        let shutdown = {
            let health = health.clone();
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
                health.report(ServingStatus::NotServing).await;
                tracing::info!(grace = ?grace, "shutting down: no new connections, finishing in-flight orders");
            }
        };
        let server = Server::builder()
            .add_service(CheckoutServiceServer::new(place_order))
            .add_service(OrderHistoryServer::new(history))
            .add_service(health_service)
            .add_service(reflection)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            );
        tokio::pin!(server);
        let result = tokio::select! {
            result = &mut server => result.map_err(anyhow::Error::from),
            _ = async { let _ = stopped.wait_for(|stop| *stop).await; tokio::time::sleep(grace).await } => {
                tracing::warn!("in-flight requests did not finish within checkout.shutdown_grace; stopping anyway");
                Ok(())
            }
        };
        health_task.abort();
        tracing::info!("checkout stopped");
        result
    });
    tracing::info!(%addr, "checkout listening");
    Ok(Running { addr, stop, task })
}
