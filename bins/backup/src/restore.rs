//! `backup restore`: a backup into the configured database, in one
//! transaction, checking the artifact against its manifest on the way; a
//! damaged backup, a refused target or any error leaves the database as it was.
//!
//! The target may be
//! - empty (no history table, none of the tables): the artifact's
//!   migrations create the schema, as `psql` would;
//! - migrated, with empty order tables (e.g. by the migrator, roles and
//!   grants included): migrations it already has are skipped, those it
//!   lacks are applied, then the rows are copied in. Its history must be a
//!   beginning of the backup's (same versions, same checksums);
//! - holding orders: refused, unless `--replace`, which empties the order
//!   tables (TRUNCATE, so grants stay) in the same transaction.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::SinkExt as _;
use orders::config::Settings;
use orders::db::Database;
use orders::schema::quote_ident;
use tokio_postgres::{CopyInSink, Transaction};
use tokio_util::sync::CancellationToken;

use crate::archive::{Event, count_rows};
use crate::destination::Destination;
use crate::manifest::Manifest;
use crate::outcome::Failure;
use crate::progress::Progress;
use crate::stall::bounded;
use crate::verify::CheckedRead;

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// Migrations applied from the backup (all of them into an empty database).
    pub migrations_applied: usize,
    /// Whether rows already there were replaced.
    pub replaced: bool,
}

/// Restores `wanted` (a name or `latest`) into the configured database.
pub async fn restore(
    settings: &Settings,
    destination: &Destination,
    wanted: &str,
    replace: bool,
    stop: &CancellationToken,
) -> anyhow::Result<Restored> {
    let stall = settings.backup.stall_timeout;
    let backup = destination.find(wanted).await?;
    let manifest = destination.manifest(&backup.name).await?;
    let mut read = CheckedRead::open(destination, &backup, manifest.clone())?;

    let database = Database::new(&settings.database, "backup")?;
    tracing::info!(backup = %backup.name, target_db = %database.target(), "restoring");
    // Our own connection: one on which a COPY failed is not reused.
    let mut client = tokio::select! {
        client = database.connect_with_retry() => client?,
        () = stop.cancelled() => anyhow::bail!(crate::stall::Stalled::Interrupted {
            what: "waiting for PostgreSQL".into(),
        }),
    };
    let tx = client.transaction().await?;

    let result = restore_in(&tx, &mut read, &manifest, replace, stall, stop).await;
    let (migrations_applied, replaced) = match result {
        Ok(done) => done,
        Err(error) => {
            // Dropping the transaction rolls it back. If the artifact did not
            // read or load, find out whether it is damaged: that is the news.
            if is_damaged(&error) || !read_failed(&error) {
                return Err(error);
            }
            return Err(match read.raw_mismatch().await {
                Some(diagnosis) if is_damaged(&diagnosis) => diagnosis,
                _ => error,
            });
        }
    };
    bounded(|| "committing".into(), stall, stop, tx.commit())
        .await?
        .context("cannot commit the restore")?;
    Ok(Restored {
        manifest,
        migrations_applied,
        replaced,
    })
}

fn is_damaged(error: &anyhow::Error) -> bool {
    matches!(
        error.chain().find_map(|e| e.downcast_ref::<Failure>()),
        Some(Failure::Damaged(_))
    )
}

/// Errors worth checking the artifact for: not refusals or timeouts.
fn read_failed(error: &anyhow::Error) -> bool {
    error.chain().all(|e| {
        e.downcast_ref::<Failure>().is_none() && e.downcast_ref::<crate::stall::Stalled>().is_none()
    })
}

/// The target as found, inside the restore's transaction.
struct Target {
    /// `(version, checksum)` of its history, in order.
    history: Vec<(i32, String)>,
    has_history: bool,
    /// The backup's data tables that exist in the target.
    existing: Vec<String>,
}

async fn inspect(tx: &Transaction<'_>, manifest: &Manifest) -> anyhow::Result<Target> {
    let exists = |name: &str| {
        let name = quote_ident(name);
        async move {
            tx.query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&name])
                .await
                .map(|row| row.get::<_, bool>(0))
        }
    };
    let has_history = exists(&manifest.history_table).await?;
    let history = if has_history {
        tx.query(
            &format!(
                "SELECT version, checksum FROM {} ORDER BY version",
                quote_ident(&manifest.history_table)
            ),
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
    } else {
        Vec::new()
    };
    let mut existing = Vec::new();
    for table in manifest.data_tables() {
        if exists(&table.name).await? {
            existing.push(table.name.clone());
        }
    }
    Ok(Target {
        history,
        has_history,
        existing,
    })
}

/// Checks the target against the backup; the versions it already has.
fn plan(target: &Target, manifest: &Manifest) -> anyhow::Result<BTreeSet<i32>> {
    if !target.has_history {
        if let Some(table) = target.existing.first() {
            return Err(Failure::Refused(format!(
                "the target database has table {table} but no {} table: it was not made by the migrator; restore into an empty database",
                manifest.history_table
            ))
            .into());
        }
        return Ok(BTreeSet::new());
    }
    for (i, (version, checksum)) in target.history.iter().enumerate() {
        let matches = manifest
            .migrations
            .get(i)
            .is_some_and(|m| m.version == *version && m.checksum == *checksum);
        if !matches {
            let target_version = target.history.last().map_or(0, |(v, _)| *v);
            return Err(Failure::Refused(format!(
                "the target database's schema (version {target_version}) is not an earlier state of the backup's (version {}): migration {version} differs or is unknown to the backup; restore into an empty database, then run the migrator",
                manifest.schema_version
            ))
            .into());
        }
    }
    Ok(target.history.iter().map(|(v, _)| *v).collect())
}

async fn restore_in(
    tx: &Transaction<'_>,
    read: &mut CheckedRead<'_>,
    manifest: &Manifest,
    replace: bool,
    stall: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<(usize, bool)> {
    // The preamble's settings (search_path above all) before anything else.
    loop {
        match read.next().await? {
            Some(Event::Set(statement)) => tx.batch_execute(&statement).await?,
            Some(Event::Begin) => break,
            _ => return Err(Failure::Damaged("the artifact has no preamble".into()).into()),
        }
    }
    // Then ours: psql may wait for locks forever, we may not, or our place
    // in a lock queue would hold checkout up after we have given up.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '{}ms'",
        stall.as_millis()
    ))
    .await?;
    let target = inspect(tx, manifest).await?;
    let present = plan(&target, manifest)?;

    let mut replaced = false;
    if !target.existing.is_empty() {
        let list = target
            .existing
            .iter()
            .map(|t| quote_ident(t))
            .collect::<Vec<_>>()
            .join(", ");
        // Nobody adds rows between our look and our copy.
        let locking = || "waiting for a lock on the order tables (is checkout running?)".to_owned();
        bounded(
            locking,
            stall,
            stop,
            tx.batch_execute(&format!("LOCK TABLE {list} IN ACCESS EXCLUSIVE MODE")),
        )
        .await?
        .context("cannot lock the order tables")?;
        let mut filled = Vec::new();
        for table in &target.existing {
            let row = tx
                .query_one(
                    &format!("SELECT EXISTS (SELECT FROM {})", quote_ident(table)),
                    &[],
                )
                .await?;
            if row.get::<_, bool>(0) {
                filled.push(table.as_str());
            }
        }
        if !filled.is_empty() {
            if !replace {
                let (tables, have) = if filled.len() == 1 {
                    ("table", "has")
                } else {
                    ("tables", "have")
                };
                return Err(Failure::Refused(format!(
                    "the target database is not empty ({tables} {} {have} rows); nothing was changed; use --replace to replace everything",
                    filled.join(", ")
                ))
                .into());
            }
            tracing::warn!(tables = %filled.join(", "), "replacing the rows of the target database");
            tx.batch_execute(&format!("TRUNCATE TABLE {list}")).await?;
            replaced = true;
        }
    }

    let mut progress = Progress::new("restore");
    let mut applied = 0;
    let mut sink: Option<Pin<Box<CopyInSink<Bytes>>>> = None;
    while let Some(event) = read.next().await? {
        match event {
            Event::Migration { version, file, sql } => {
                if present.contains(&version) {
                    continue;
                }
                progress.clear();
                tracing::info!(%file, "applying migration from the backup");
                tx.batch_execute(&sql)
                    .await
                    .with_context(|| format!("migration {file} from the backup failed"))?;
                applied += 1;
            }
            Event::Sql { label, sql } => {
                tx.batch_execute(&sql)
                    .await
                    .with_context(|| format!("the {label} statements of the backup failed"))?;
            }
            Event::TableStart { name, copy } => {
                progress.table(&name);
                if name == manifest.history_table {
                    // Same versions and checksums (checked); the backup's
                    // rows also carry the original times.
                    tx.batch_execute(&format!("DELETE FROM {}", quote_ident(&name)))
                        .await?;
                }
                let opened = tx
                    .copy_in::<_, Bytes>(copy.as_str())
                    .await
                    .with_context(|| format!("cannot start copying into table {name}"))?;
                sink = Some(Box::pin(opened));
            }
            Event::Rows(rows) => {
                let count = count_rows(&rows);
                let Some(sink) = sink.as_mut() else {
                    return Err(
                        Failure::Damaged("the artifact has rows outside a table".into()).into(),
                    );
                };
                bounded(
                    || "sending rows to PostgreSQL".into(),
                    stall,
                    stop,
                    sink.send(rows),
                )
                .await?
                .context("copying rows into PostgreSQL failed")?;
                progress.advance(count, read.compressed_bytes());
            }
            Event::TableEnd(entry) => {
                let Some(mut open) = sink.take() else {
                    return Err(Failure::Damaged(
                        "the artifact ends a table it never started".into(),
                    )
                    .into());
                };
                let rows = bounded(
                    || format!("finishing the copy of table {}", entry.name),
                    stall,
                    stop,
                    open.as_mut().finish(),
                )
                .await?
                .with_context(|| format!("copying into table {} failed", entry.name))?;
                if rows != entry.rows {
                    return Err(Failure::Damaged(format!(
                        "PostgreSQL took {rows} rows of table {}, the artifact has {}",
                        entry.name, entry.rows
                    ))
                    .into());
                }
                progress.clear();
                tracing::info!(table = %entry.name, rows, "table restored");
            }
            Event::Set(_) | Event::Begin | Event::End => {}
        }
    }
    progress.clear();
    Ok((applied, replaced))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FORMAT, MigrationEntry};

    fn manifest(versions: &[(i32, &str)]) -> Manifest {
        Manifest {
            format: FORMAT,
            name: "orders-20261125T051900Z".into(),
            artifact: "orders-20261125T051900Z.sql.gz".into(),
            compression: "gzip".into(),
            tool: "backup".into(),
            tool_version: "0".into(),
            started_at: String::new(),
            finished_at: String::new(),
            database: "ordersdb".into(),
            server_version: "17".into(),
            schema: "public".into(),
            schema_version: versions.last().map_or(0, |(v, _)| *v),
            migrations: versions
                .iter()
                .map(|(version, checksum)| MigrationEntry {
                    version: *version,
                    file: format!("{version:04}_x.sql"),
                    checksum: (*checksum).into(),
                })
                .collect(),
            history_table: "schema_migrations".into(),
            tables: Vec::new(),
            artifact_bytes: 0,
            artifact_sha256: String::new(),
            sql_bytes: 0,
            sql_sha256: String::new(),
        }
    }

    fn target(history: &[(i32, &str)], existing: &[&str]) -> Target {
        Target {
            history: history.iter().map(|(v, c)| (*v, (*c).to_owned())).collect(),
            has_history: !history.is_empty(),
            existing: existing.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn refusal(result: anyhow::Result<BTreeSet<i32>>) -> String {
        let error = result.unwrap_err();
        assert!(
            matches!(error.downcast_ref::<Failure>(), Some(Failure::Refused(_))),
            "{error}"
        );
        error.to_string()
    }

    #[test]
    fn an_empty_database_gets_every_migration() {
        let present = plan(&target(&[], &[]), &manifest(&[(1, "a"), (2, "b")])).unwrap();
        assert!(present.is_empty());
    }

    #[test]
    fn a_database_behind_the_backup_gets_the_missing_migrations() {
        let backup = manifest(&[(1, "a"), (2, "b"), (3, "c")]);
        let present = plan(&target(&[(1, "a")], &["orders"]), &backup).unwrap();
        assert_eq!(present, BTreeSet::from([1]));
        let present = plan(
            &target(&[(1, "a"), (2, "b"), (3, "c")], &["orders"]),
            &backup,
        )
        .unwrap();
        assert_eq!(present, BTreeSet::from([1, 2, 3]));
    }

    #[test]
    fn a_newer_or_different_schema_is_refused() {
        let backup = manifest(&[(1, "a"), (2, "b")]);
        let newer = refusal(plan(&target(&[(1, "a"), (2, "b"), (3, "c")], &[]), &backup));
        assert!(newer.contains("version 3"), "{newer}");
        let changed = refusal(plan(&target(&[(1, "a"), (2, "X")], &[]), &backup));
        assert!(changed.contains("migration 2 differs"), "{changed}");
    }

    #[test]
    fn tables_without_a_history_are_refused() {
        let message = refusal(plan(&target(&[], &["orders"]), &manifest(&[(1, "a")])));
        assert!(
            message.contains("table orders but no schema_migrations"),
            "{message}"
        );
    }
}
