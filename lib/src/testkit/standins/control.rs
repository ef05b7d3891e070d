//! Fault injection shared by every stand-in: failures, latency, call counts.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tonic::{Code, Status};

use super::Rpc;

/// What the tests told one RPC to do, and how often it was called.
#[derive(Debug, Default)]
struct RpcControl {
    failure: Option<Failure>,
    latency: Duration,
    calls: usize,
    /// The `traceparent` each call carried, in order.
    traceparents: Vec<Option<String>>,
}

/// An injected failure.
#[derive(Debug, Clone)]
struct Failure {
    code: Code,
    message: String,
    /// `None`: fail until healed; `Some(n)`: fail the next `n` calls only.
    remaining: Option<u32>,
}

/// Per-RPC controls, consulted at the start of every call.
#[derive(Debug, Default)]
pub(super) struct Control {
    rpcs: Mutex<HashMap<Rpc, RpcControl>>,
}

impl Control {
    /// Counts the call (and its trace context), waits the injected latency,
    /// then fails if told to.
    pub(super) async fn enter(
        &self,
        rpc: Rpc,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(), Status> {
        let (latency, failure) = {
            let mut rpcs = self.lock();
            let control = rpcs.entry(rpc).or_default();
            control.calls += 1;
            control.traceparents.push(
                metadata
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            );
            let failure = match &mut control.failure {
                Some(failure) => {
                    let status = Status::new(failure.code, failure.message.clone());
                    match &mut failure.remaining {
                        Some(0) => None,
                        Some(n) => {
                            *n -= 1;
                            Some(status)
                        }
                        None => Some(status),
                    }
                }
                None => None,
            };
            (control.latency, failure)
        };
        // Sleep outside the lock so other calls are not serialised behind it.
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        failure.map_or(Ok(()), Err)
    }

    pub(super) fn fail(&self, rpcs: &[Rpc], code: Code, message: &str, times: Option<u32>) {
        let mut controls = self.lock();
        for rpc in rpcs {
            controls.entry(*rpc).or_default().failure = Some(Failure {
                code,
                message: message.to_owned(),
                remaining: times,
            });
        }
    }

    pub(super) fn set_latency(&self, rpcs: &[Rpc], latency: Duration) {
        let mut controls = self.lock();
        for rpc in rpcs {
            controls.entry(*rpc).or_default().latency = latency;
        }
    }

    /// Removes failures and latency; call counts stay.
    pub(super) fn heal(&self, rpcs: &[Rpc]) {
        let mut controls = self.lock();
        for rpc in rpcs {
            let control = controls.entry(*rpc).or_default();
            control.failure = None;
            control.latency = Duration::ZERO;
        }
    }

    pub(super) fn calls(&self, rpc: Rpc) -> usize {
        self.lock().get(&rpc).map_or(0, |control| control.calls)
    }

    pub(super) fn traceparents(&self, rpc: Rpc) -> Vec<Option<String>> {
        self.lock()
            .get(&rpc)
            .map_or_else(Vec::new, |control| control.traceparents.clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Rpc, RpcControl>> {
        // A test that panicked while holding the lock left consistent data
        // (every update is a single assignment), so keep going.
        self.rpcs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Locks a stand-in's state, ignoring poisoning as [`Control`] does.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
