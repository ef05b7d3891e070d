//! The subcommands, and the one place that maps outcomes to exit codes and
//! prints the one error line.

use std::process::ExitCode;

use anyhow::Context as _;
use orders::config::{ConfigArgs, Settings};
use secrecy::ExposeSecret as _;
use tokio_util::sync::CancellationToken;

use crate::Command;
use crate::destination::Destination;
use crate::manifest::Manifest;
use crate::outcome::{Failure, code, exit_code};
use crate::progress::human_bytes;
use crate::prune::{Retention, prune};
use crate::restore::restore;
use crate::snapshot;
use crate::verify::verify;

/// Loads configuration, runs `command`, and turns the outcome into an exit
/// code with at most one readable error line on stderr.
pub fn run(args: &ConfigArgs, destination: Option<&str>, command: &Command) -> ExitCode {
    let settings = match Settings::load(args) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("backup: configuration error: {error}");
            return ExitCode::from(code::USAGE);
        }
    };
    if let Command::Config = command {
        print!("{}", settings.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    let telemetry = match orders::telemetry::init(&settings.telemetry, "backup") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("backup: configuration error: {error}");
            return ExitCode::from(code::USAGE);
        }
    };
    // The S3 client's TLS uses the process-wide rustls provider: ours (ring).
    orders::tls::crypto_provider();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(execute(&settings, destination, command)));
    let code = match outcome {
        Ok(()) => ExitCode::from(code::OK),
        Err(error) => {
            let line = one_line(&error, &secrets(&settings));
            tracing::error!("{line}");
            eprintln!("backup: {line}");
            exit_code(&error)
        }
    };
    if let Err(error) = telemetry.shutdown() {
        eprintln!("backup: {error}");
    }
    code
}

/// The error and its causes on one line, each cause once, without any
/// secret we know of (a server's or store's message might quote one back).
fn one_line(error: &anyhow::Error, secrets: &[String]) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = tidy(&cause.to_string());
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    for secret in secrets {
        line = line.replace(secret.as_str(), orders::config::REDACTED);
    }
    line
}

/// One line, and an S3 error document (`<?xml ...><Error>...`) reduced to
/// its code and message.
fn tidy(text: &str) -> String {
    let mut text = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    while let Some(start) = text.find("<?xml") {
        let end = text[start..]
            .find("</Error>")
            .map_or(text.len(), |e| start + e + "</Error>".len());
        let element = |name: &str| {
            let open = format!("<{name}>");
            let close = format!("</{name}>");
            let from = text[start..end].find(&open)? + start + open.len();
            let to = text[from..end].find(&close)? + from;
            Some(text[from..to].to_owned())
        };
        let summary = match (element("Code"), element("Message")) {
            (Some(code), Some(message)) => format!("{code} ({message})"),
            (Some(code), None) => code,
            _ => "an error document".to_owned(),
        };
        text.replace_range(start..end, &summary);
    }
    text
}

fn secrets(settings: &Settings) -> Vec<String> {
    let configured = [
        &settings.database.password,
        &settings.backup.s3_access_key_id,
        &settings.backup.s3_secret_access_key,
    ];
    let mut secrets: Vec<String> = configured
        .into_iter()
        .flatten()
        .map(|s| s.expose_secret().to_owned())
        .collect();
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        if let Ok(value) = std::env::var(name) {
            secrets.push(value);
        }
    }
    // Too short to replace without mangling the message.
    secrets.retain(|s| s.len() >= 4);
    secrets
}

/// Stops the work on SIGTERM (a pod being deleted) or Ctrl-C, so an upload
/// is aborted rather than left behind.
fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::warn!("signal received, stopping");
        token.cancel();
    });
    stop
}

async fn execute(
    settings: &Settings,
    destination: Option<&str>,
    command: &Command,
) -> anyhow::Result<()> {
    let url = destination
        .map(str::to_owned)
        .or_else(|| settings.backup.destination.clone())
        .ok_or_else(|| {
            Failure::Usage(
                "no backup destination: set backup.destination (BOUTIQUE__BACKUP__DESTINATION) or --destination to file:///path or s3://bucket/prefix".into(),
            )
        })?;
    check(settings)?;
    let creating = matches!(command, Command::Run);
    let destination = Destination::open(&url, &settings.backup, creating)?;
    let stop = stop_on_signal();
    match command {
        Command::Run => {
            let manifest = snapshot::run(settings, &destination, &stop).await?;
            tracing::info!(
                backup = %manifest.name,
                bytes = manifest.artifact_bytes,
                rows = %rows_summary(&manifest),
                "backup {} complete", manifest.name
            );
            println!(
                "backup {} written to {}: {}, {}",
                manifest.name,
                destination.url(),
                human_bytes(manifest.artifact_bytes),
                rows_summary(&manifest)
            );
        }
        Command::List { json } => list(&destination, *json).await?,
        Command::Verify { name } => {
            let manifest = verify(&destination, name).await?;
            tracing::info!(backup = %manifest.name, "backup verifies");
            println!(
                "backup {} verifies: {}, {}, checksums match",
                manifest.name,
                human_bytes(manifest.artifact_bytes),
                rows_summary(&manifest)
            );
        }
        Command::Restore { name, replace } => {
            let restored = restore(settings, &destination, name, *replace, &stop).await?;
            let manifest = &restored.manifest;
            tracing::info!(
                backup = %manifest.name,
                migrations_applied = restored.migrations_applied,
                replaced = restored.replaced,
                "restore complete"
            );
            println!(
                "restored backup {} into database {}: {}{}",
                manifest.name,
                settings.database.name,
                rows_summary(manifest),
                if restored.replaced {
                    " (replacing the rows that were there)"
                } else {
                    ""
                }
            );
        }
        Command::Prune { dry_run } => {
            let retention = Retention {
                count: settings.backup.retention_count,
                age: settings.backup.retention_age,
            };
            let pruned = prune(&destination, retention, *dry_run).await?;
            let verb = if *dry_run { "would remove" } else { "removed" };
            for (name, verdict) in &pruned.verdicts {
                let what = match verdict {
                    crate::prune::Verdict::Keep => "keep".to_owned(),
                    crate::prune::Verdict::KeepNewestVerified => {
                        "keep (newest that verifies)".to_owned()
                    }
                    crate::prune::Verdict::RemoveCount => {
                        format!("{verb} (beyond backup.retention_count)")
                    }
                    crate::prune::Verdict::RemoveAge => {
                        format!("{verb} (older than backup.retention_age)")
                    }
                };
                println!("{name}  {what}");
            }
            for file in &pruned.abandoned {
                println!("{file}  {verb} (abandoned by an interrupted backup)");
            }
        }
        Command::Config => {}
    }
    Ok(())
}

/// Values the loader accepts by type but this program does not.
fn check(settings: &Settings) -> Result<(), Failure> {
    let backup = &settings.backup;
    if !(1..=9).contains(&backup.compression_level) {
        return Err(Failure::Usage(format!(
            "configuration error: invalid value {} for `backup.compression_level`; expected a gzip level 1..=9",
            backup.compression_level
        )));
    }
    if backup.stall_timeout.is_zero() {
        return Err(Failure::Usage(
            "configuration error: `backup.stall_timeout` must be more than 0s".into(),
        ));
    }
    Ok(())
}

/// `orders=3 order_items=7 order_events=9`: the data tables' rows.
fn rows_summary(manifest: &Manifest) -> String {
    let rows = manifest
        .data_tables()
        .map(|t| format!("{}={}", t.name, t.rows))
        .collect::<Vec<_>>()
        .join(" ");
    if rows.is_empty() {
        "no tables".into()
    } else {
        rows
    }
}

async fn list(destination: &Destination, json: bool) -> anyhow::Result<()> {
    let listing = destination.list().await?;
    if !json {
        if listing.backups.is_empty() {
            println!("no backups at {}", destination.url());
            return Ok(());
        }
        println!(
            "{:<24} {:<20} {:>10} {:>6}  ROWS",
            "NAME", "FINISHED (UTC)", "SIZE", "SCHEMA"
        );
    }
    for backup in &listing.backups {
        let size = backup.artifact.as_ref().map(|a| a.size);
        let manifest = match destination.manifest(&backup.name).await {
            Ok(manifest) => Some(manifest),
            Err(error) => {
                tracing::warn!(backup = %backup.name, error = %format!("{error:#}"), "unreadable manifest");
                None
            }
        };
        if json {
            let line = serde_json::json!({
                "name": backup.name.as_str(),
                "size": size,
                "manifest": manifest,
            });
            println!("{line}");
            continue;
        }
        let size = size.map_or_else(|| "missing".to_owned(), human_bytes);
        match manifest {
            Some(m) => println!(
                "{:<24} {:<20} {:>10} {:>6}  {}",
                backup.name,
                m.finished_at
                    .get(..19)
                    .unwrap_or(&m.finished_at)
                    .replace('T', " "),
                size,
                m.schema_version,
                rows_summary(&m)
            ),
            None => println!(
                "{:<24} {:<20} {:>10} {:>6}  (manifest unreadable)",
                backup.name, "?", size, "?"
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_one_line_without_repeats_or_secrets() {
        let error = anyhow::anyhow!("bad\nthing for s3cr3t-value")
            .context("inner: bad thing for s3cr3t-value")
            .context("outer");
        let line = one_line(&error, &["s3cr3t-value".to_owned()]);
        assert_eq!(line, "outer: inner: bad thing for [redacted]");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn s3_error_documents_are_reduced_to_code_and_message() {
        let text = "404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code>\
                    <Message>The specified bucket does not exist</Message><RequestId>x</RequestId></Error>";
        assert_eq!(
            tidy(text),
            "404 Not Found: NoSuchBucket (The specified bucket does not exist)"
        );
    }
}
