//! The release `checkout` binary as a process of its own, configured the
//! way the Helm chart configures it: a TOML file, a password file, the
//! Online Boutique environment variables.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::Bench;
use super::pg::Role;
use super::procstat::{self, Usage};

/// A running checkout; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct CheckoutProcess {
    child: Child,
    started: Instant,
    /// Its gRPC port on 127.0.0.1.
    pub port: u16,
}

impl CheckoutProcess {
    /// Starts checkout on database `db` with `checkout.persistence` =
    /// `persistence`, logging to `target/bench/logs/<log_name>.log`.
    pub fn spawn(
        bench: &Bench,
        db: &str,
        persistence: &str,
        log_name: &str,
    ) -> anyhow::Result<CheckoutProcess> {
        Self::spawn_binary(
            bench,
            &bench.bin.join("checkout"),
            db,
            persistence,
            log_name,
        )
    }

    /// Like [`CheckoutProcess::spawn`], with another checkout binary.
    pub fn spawn_binary(
        bench: &Bench,
        binary: &Path,
        db: &str,
        persistence: &str,
        log_name: &str,
    ) -> anyhow::Result<CheckoutProcess> {
        let config = bench.pg.config_file(db, Role::Checkout, "")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log_path = bench.out.join("logs").join(format!("{log_name}.log"));
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let started = Instant::now();
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .env("BOUTIQUE__CHECKOUT__LISTEN_ADDR", "127.0.0.1")
            .env("BOUTIQUE__CHECKOUT__PERSISTENCE", persistence)
            .env("PORT", port.to_string())
            .envs(bench.downstream.addrs())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start checkout")?;
        Ok(CheckoutProcess {
            child,
            started,
            port,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until health says SERVING, polling every `poll`; returns a
    /// channel to it and the time from spawn to the first SERVING answer.
    pub async fn wait_serving(&mut self, poll: Duration) -> anyhow::Result<(Channel, Duration)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let endpoint =
            Channel::from_shared(format!("http://127.0.0.1:{}", self.port))?.tcp_nodelay(true);
        loop {
            if let Ok(channel) = endpoint.connect().await {
                let status = HealthClient::new(channel.clone())
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().status);
                if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
                    return Ok((channel, self.started.elapsed()));
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("checkout exited before it was SERVING ({status}); see target/bench/logs");
            }
            if Instant::now() > deadline {
                bail!("checkout did not become SERVING within 30 s; see target/bench/logs");
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Memory and CPU now.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        procstat::read(self.pid())
    }

    /// SIGTERM (as Kubernetes sends), then waits for the exit.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Ok(self.child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for CheckoutProcess {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}
