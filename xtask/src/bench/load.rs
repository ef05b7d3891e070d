//! A closed-loop load generator: N workers, each running one operation after
//! another, a warm-up phase (connections opened, caches filled) that is not
//! recorded, then a measured phase with client-side latencies.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::procstat::round3;

/// How long a measurement runs.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// For a time: the full benchmark.
    Timed {
        /// Not recorded.
        warmup: Duration,
        /// Recorded.
        measure: Duration,
    },
    /// For a number of operations: `--quick`.
    Count {
        /// Not recorded, per worker (so every worker's connection is open).
        warmup: u64,
        /// Recorded.
        measure: u64,
    },
}

impl Shape {
    /// For the JSON's `config`.
    pub fn to_json(self) -> Value {
        match self {
            Shape::Timed { warmup, measure } => json!({
                "warmup_s": warmup.as_secs_f64(), "measure_s": measure.as_secs_f64()
            }),
            Shape::Count { warmup, measure } => json!({
                "warmup_ops_per_worker": warmup, "measure_ops": measure
            }),
        }
    }
}

/// When a phase ends.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// No operation starts after this instant.
    At(Instant),
    /// Operations numbered below this run.
    Count(u64),
}

/// What the measured phase saw.
#[derive(Debug, Default)]
pub struct Measured {
    /// Latency of every successful operation.
    pub latencies: Latencies,
    /// Failed operations (warm-up included).
    pub errors: u64,
    /// A few error messages, for the report.
    pub first_errors: Vec<String>,
    /// Successful operations, warm-up included.
    pub ok_total: u64,
    /// From the first start to the last finish of the measured phase.
    pub elapsed: Duration,
}

impl Measured {
    /// Successful operations per second in the measured phase.
    pub fn per_second(&self) -> f64 {
        self.latencies.count() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `op(sequence_number)` from `workers` concurrent workers: first the
/// warm-up of `shape`, then (after `between_phases` runs) the measured
/// phase. `op` returns an error message on failure.
pub async fn drive<F, Fut>(
    workers: usize,
    shape: Shape,
    op: F,
    mut between_phases: impl FnMut(),
) -> anyhow::Result<Measured>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let (warmup_stop, measure) = match shape {
        Shape::Timed { warmup, .. } => (Stop::At(Instant::now() + warmup), None),
        Shape::Count { warmup, measure } => {
            let warmup = warmup * workers as u64;
            (Stop::Count(warmup), Some(warmup + measure))
        }
    };
    let warm = phase(workers, warmup_stop, &op, &next).await?;
    between_phases();
    let stop = match (shape, measure) {
        (Shape::Timed { measure, .. }, _) => Stop::At(Instant::now() + measure),
        (_, Some(end)) => Stop::Count(end),
        (_, None) => Stop::Count(0),
    };
    let started = Instant::now();
    let mut measured = phase(workers, stop, &op, &next).await?;
    measured.elapsed = started.elapsed();
    measured.errors += warm.errors;
    measured.ok_total += warm.ok_total;
    let mut errors = warm.first_errors;
    errors.append(&mut measured.first_errors);
    errors.truncate(5);
    measured.first_errors = errors;
    Ok(measured)
}

async fn phase<F, Fut>(
    workers: usize,
    stop: Stop,
    op: &Arc<F>,
    next: &Arc<AtomicU64>,
) -> anyhow::Result<Measured>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let op = op.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Measured::default();
            loop {
                let seq = match stop {
                    Stop::At(deadline) => {
                        if Instant::now() >= deadline {
                            break;
                        }
                        next.fetch_add(1, Ordering::Relaxed)
                    }
                    Stop::Count(end) => {
                        let seq = next.fetch_add(1, Ordering::Relaxed);
                        if seq >= end {
                            break;
                        }
                        seq
                    }
                };
                let started = Instant::now();
                match op(seq).await {
                    Ok(()) => {
                        seen.latencies.push(started.elapsed());
                        seen.ok_total += 1;
                    }
                    Err(message) => {
                        seen.errors += 1;
                        if seen.first_errors.len() < 5 {
                            seen.first_errors.push(message);
                        }
                    }
                }
            }
            seen
        }));
    }
    let mut all = Measured::default();
    for task in tasks {
        let seen = task.await.context("a load worker panicked")?;
        all.latencies.0.extend(seen.latencies.0);
        all.errors += seen.errors;
        all.ok_total += seen.ok_total;
        all.first_errors.extend(seen.first_errors);
    }
    if let Stop::Count(end) = stop {
        // Leave the counter at the phase's end for the next phase.
        next.store(end, Ordering::Relaxed);
    }
    Ok(all)
}

/// Latencies of successful operations.
#[derive(Debug, Default, Clone)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    /// Records one.
    pub fn push(&mut self, latency: Duration) {
        self.0.push(latency);
    }

    /// How many.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// Adds another set.
    pub fn extend(&mut self, other: &Latencies) {
        self.0.extend_from_slice(&other.0);
    }

    /// The `q` quantile (0..=1), nearest rank, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1].as_secs_f64() * 1000.0
    }

    /// Mean, in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / self.0.len() as f64
    }

    /// `{count, mean, p50, p90, p99, max}` in milliseconds.
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count(),
            "mean_ms": round3(self.mean_ms()),
            "p50_ms": round3(self.quantile_ms(0.50)),
            "p90_ms": round3(self.quantile_ms(0.90)),
            "p99_ms": round3(self.quantile_ms(0.99)),
            "max_ms": round3(self.quantile_ms(1.0)),
        })
    }
}
