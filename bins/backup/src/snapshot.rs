//! `backup run`: one consistent snapshot of the order tables and the
//! migration history, streamed with `COPY ... TO STDOUT` through gzip to the
//! destination, then the manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use orders::config::Settings;
use orders::db::Database;
use orders::schema::{self, HISTORY_TABLE, quote_ident};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_postgres::{IsolationLevel, Transaction};
use tokio_util::sync::CancellationToken;

use crate::archive::{ArtifactWriter, quote_literal};
use crate::destination::{Destination, Upload};
use crate::manifest::{BackupName, FORMAT, Manifest, MigrationEntry, TableEntry};
use crate::outcome::Failure;
use crate::progress::Progress;
use crate::stall::bounded;

/// What the snapshot holds, read from the catalog inside it.
struct Source {
    database: String,
    server_version: String,
    schema: String,
    migrations: Vec<schema::Migration>,
    history: Vec<MigrationEntry>,
    history_ddl: String,
    /// History first, then parents before children.
    tables: Vec<Table>,
    /// `(table, column, last_value, is_called)` of identity/serial sequences.
    sequences: Vec<(String, String, i64, bool)>,
}

struct Table {
    name: String,
    columns: Vec<String>,
}

impl Table {
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Takes one backup to `destination` and returns its manifest.
pub async fn run(
    settings: &Settings,
    destination: &Destination,
    stop: &CancellationToken,
) -> anyhow::Result<Manifest> {
    let stall = settings.backup.stall_timeout;
    let database = Database::new(&settings.database, "backup")?;
    tracing::info!(target_db = %database.target(), destination = %destination.url(), "connecting to PostgreSQL");
    // A connection of our own, never a pooled one: one on which a COPY
    // failed may be left mid-protocol, and it is dropped with this client.
    let mut client = tokio::select! {
        client = database.connect_with_retry() => client?,
        () = stop.cancelled() => anyhow::bail!(crate::stall::Stalled::Interrupted {
            what: "waiting for PostgreSQL".into(),
        }),
    };
    // REPEATABLE READ: every COPY and count sees the same snapshot, so each
    // item's order is in the backup. (DEFERRABLE only matters for
    // SERIALIZABLE; it is stated for the reader's benefit.)
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .deferrable(true)
        .start()
        .await?;
    let started = OffsetDateTime::now_utc();
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '{}ms'",
        stall.as_millis()
    ))
    .await?;
    let source = inspect(&tx).await?;

    let name = BackupName::at(started);
    if destination.exists(&name).await? {
        return Err(Failure::Refused(format!(
            "a backup named {name} already exists at {}; try again in a second",
            destination.url()
        ))
        .into());
    }
    tracing::info!(backup = %name, schema_version = source.history.last().map_or(0, |m| m.version), "backup started");
    let upload = destination.start_upload(&name).await?;
    let mut writer = ArtifactWriter::new(upload, settings.backup.compression_level);
    let mut progress = Progress::new("backup");
    let tables = match write(&tx, &source, &name, &mut writer, &mut progress, stall, stop).await {
        Ok(tables) => tables,
        Err(error) => {
            abort(writer.into_sink(), &name).await;
            return Err(error);
        }
    };
    let finished = bounded(
        || "finishing the artifact".into(),
        stall,
        stop,
        writer.finish(),
    )
    .await;
    let digest = match finished {
        Ok(Ok(digest)) => digest,
        Ok(Err(error)) => {
            abort(writer.into_sink(), &name).await;
            return Err(error).context("cannot finish the artifact");
        }
        Err(error) => {
            abort(writer.into_sink(), &name).await;
            return Err(error.into());
        }
    };
    let upload = writer.into_sink();
    // The snapshot is no longer needed; a read-only transaction has nothing to keep.
    drop(tx.rollback().await);
    upload.complete().await?;
    progress.clear();

    let manifest = Manifest {
        format: FORMAT,
        name: name.to_string(),
        artifact: name.artifact(),
        compression: "gzip".into(),
        tool: env!("CARGO_PKG_NAME").into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        started_at: rfc3339(started),
        finished_at: rfc3339(OffsetDateTime::now_utc()),
        database: source.database,
        server_version: source.server_version,
        schema: source.schema,
        schema_version: source.history.last().map_or(0, |m| m.version),
        migrations: source.history,
        history_table: HISTORY_TABLE.into(),
        tables,
        artifact_bytes: digest.artifact.bytes(),
        artifact_sha256: digest.artifact.sha256(),
        sql_bytes: digest.sql.bytes(),
        sql_sha256: digest.sql.sha256(),
    };
    destination.put_manifest(&manifest, &name).await?;
    Ok(manifest)
}

async fn abort(upload: Upload, name: &BackupName) {
    if let Err(error) = upload.abort().await {
        // The failure that got us here is what the operator must see; this
        // one only means an S3 lifecycle rule will have to clean up.
        tracing::warn!(backup = %name, error = %format!("{error:#}"), "could not abort the upload");
    }
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339)
        .unwrap_or_else(|_| time.unix_timestamp().to_string())
}

/// Streams everything into `writer`; the tables' row counts and checksums.
async fn write(
    tx: &Transaction<'_>,
    source: &Source,
    name: &BackupName,
    writer: &mut ArtifactWriter<Upload>,
    progress: &mut Progress,
    stall: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<TableEntry>> {
    let io = |e: std::io::Error| anyhow::Error::new(e).context("cannot write the artifact");
    writer
        .preamble(name.as_str(), &source.schema)
        .await
        .map_err(io)?;
    for migration in &source.migrations {
        writer
            .migration(
                migration.version,
                &migration.file,
                &restorable_sql(migration),
            )
            .await
            .map_err(io)?;
    }
    writer
        .sql("history", &source.history_ddl)
        .await
        .map_err(io)?;

    let mut entries = Vec::new();
    for table in &source.tables {
        progress.table(&table.name);
        let copy_out = format!(
            "COPY {}.{} ({}) TO STDOUT",
            quote_ident(&source.schema),
            quote_ident(&table.name),
            table.column_list()
        );
        let copy_in = format!(
            "COPY {} ({}) FROM stdin;",
            quote_ident(&table.name),
            table.column_list()
        );
        writer
            .begin_table(&table.name, &copy_in)
            .await
            .map_err(io)?;
        let waiting = || {
            format!(
                "waiting for PostgreSQL to start copying table {}",
                table.name
            )
        };
        let stream = bounded(waiting, stall, stop, tx.copy_out(&copy_out))
            .await?
            .with_context(|| format!("cannot start copying table {}", table.name))?;
        let mut stream = pin!(stream);
        loop {
            let reading = || format!("reading table {} from PostgreSQL", table.name);
            let Some(chunk) = bounded(reading, stall, stop, stream.next()).await? else {
                break;
            };
            let chunk = chunk.with_context(|| format!("COPY of table {} failed", table.name))?;
            let writing = || format!("writing table {} to the destination", table.name);
            let rows = bounded(writing, stall, stop, writer.rows(&chunk))
                .await?
                .map_err(io)?;
            progress.advance(rows, writer.compressed_bytes());
        }
        let entry = writer.end_table().await.map_err(io)?;
        progress.clear();
        tracing::info!(table = %entry.name, rows = entry.rows, "table copied");
        entries.push(entry);
    }

    let mut setval = String::new();
    for (table, column, last_value, is_called) in &source.sequences {
        setval.push_str(&format!(
            "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence({}, {}), {last_value}, {is_called});\n",
            quote_literal(&quote_ident(table)),
            quote_literal(column),
        ));
    }
    writer.sql("sequences", &setval).await.map_err(io)?;
    Ok(entries)
}

/// A migration's SQL as it can run inside the artifact's one transaction.
///
/// A `-- migrator: no-transaction` migration exists for `CREATE INDEX
/// CONCURRENTLY`, which is refused inside a transaction and pointless in a
/// database nobody else uses yet: restoring builds the index plainly.
fn restorable_sql(migration: &schema::Migration) -> String {
    if migration.transactional() {
        return migration.sql.clone();
    }
    without_word(&migration.sql, "CONCURRENTLY")
}

/// `sql` without the keyword `word` (any case, whole words only).
fn without_word(sql: &str, word: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    while let Some(at) = rest.to_ascii_uppercase().find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(is_ident) || after.is_some_and(is_ident) {
            out.push_str(&rest[at..at + word.len()]);
        } else if out.ends_with(' ') && after == Some(' ') {
            out.pop();
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Reads, inside the snapshot, what to back up.
async fn inspect(tx: &Transaction<'_>) -> anyhow::Result<Source> {
    let row = tx
        .query_one(
            "SELECT current_database(), current_setting('server_version'), \
             (SELECT n.nspname FROM pg_catalog.pg_class c \
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.oid = pg_catalog.to_regclass($1))",
            &[&HISTORY_TABLE],
        )
        .await?;
    let database: String = row.get(0);
    let server_version: String = row.get(1);
    let schema: String = row.get::<_, Option<String>>(2).ok_or_else(|| {
        Failure::Refused(format!(
            "database {database} has no {HISTORY_TABLE} table: it was never migrated (run the migrator first)"
        ))
    })?;

    let history: Vec<MigrationEntry> = tx
        .query(
            &format!(
                "SELECT version, file, checksum FROM {}.{} ORDER BY version",
                quote_ident(&schema),
                quote_ident(HISTORY_TABLE)
            ),
            &[],
        )
        .await?
        .iter()
        .map(|row| MigrationEntry {
            version: row.get(0),
            file: row.get(1),
            checksum: row.get(2),
        })
        .collect();
    let embedded = schema::embedded();
    let mut migrations = Vec::new();
    for applied in &history {
        let Some(known) = embedded.iter().find(|m| m.version == applied.version) else {
            return Err(Failure::Refused(format!(
                "the database has migration {} (version {}) that this backup binary does not know; use the backup of the same release as the migrator",
                applied.file, applied.version
            ))
            .into());
        };
        if known.checksum() != applied.checksum {
            return Err(Failure::Refused(format!(
                "migration {} was applied with checksum {} but this backup binary has {}; use the backup of the same release as the migrator",
                applied.file,
                applied.checksum,
                known.checksum()
            ))
            .into());
        }
        migrations.push(known.clone());
    }

    let tables = tables(tx, &schema).await?;
    let history_ddl = history_ddl(tx, &schema).await?;
    let sequences = sequences(tx, &schema, &tables).await?;
    Ok(Source {
        database,
        server_version,
        schema,
        migrations,
        history,
        history_ddl,
        tables,
        sequences,
    })
}

/// Every table of `schema`: the history first, then parents before the
/// tables whose foreign keys point at them, so a restore can check each key
/// as it goes.
async fn tables(tx: &Transaction<'_>, schema: &str) -> anyhow::Result<Vec<Table>> {
    let rows = tx
        .query(
            "SELECT c.relname, \
                    array(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                            AND a.attgenerated = '' ORDER BY a.attnum) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
             ORDER BY c.relname",
            &[&schema],
        )
        .await?;
    let mut columns: BTreeMap<String, Vec<String>> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let edges = tx
        .query(
            "SELECT child.relname, parent.relname \
             FROM pg_catalog.pg_constraint k \
             JOIN pg_catalog.pg_class child ON child.oid = k.conrelid \
             JOIN pg_catalog.pg_class parent ON parent.oid = k.confrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = child.relnamespace \
             WHERE k.contype = 'f' AND n.nspname = $1 AND k.conrelid <> k.confrelid",
            &[&schema],
        )
        .await?;
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for edge in &edges {
        let (child, parent): (String, String) = (edge.get(0), edge.get(1));
        if columns.contains_key(&parent) {
            parents.entry(child).or_default().insert(parent);
        }
    }

    let mut ordered = Vec::new();
    if let Some(history) = columns.remove(HISTORY_TABLE) {
        ordered.push(Table {
            name: HISTORY_TABLE.into(),
            columns: history,
        });
    }
    let mut done = BTreeSet::new();
    while !columns.is_empty() {
        // By name among the tables whose parents are all placed: stable output.
        let ready = columns.keys().find(|name| {
            parents
                .get(*name)
                .is_none_or(|ps| ps.iter().all(|p| done.contains(p) || p == HISTORY_TABLE))
        });
        let Some(name) = ready.cloned() else {
            let cycle = columns.keys().cloned().collect::<Vec<_>>().join(", ");
            anyhow::bail!(
                "the foreign keys between tables {cycle} form a cycle; cannot order them for restore"
            );
        };
        let columns = columns.remove(&name).unwrap_or_default();
        done.insert(name.clone());
        ordered.push(Table { name, columns });
    }
    Ok(ordered)
}

/// `CREATE TABLE IF NOT EXISTS` for the history table, from the catalog,
/// so the artifact follows whatever the migrator made of it.
async fn history_ddl(tx: &Transaction<'_>, schema: &str) -> anyhow::Result<String> {
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(HISTORY_TABLE));
    let columns = tx
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    pg_catalog.pg_get_expr(d.adbin, d.adrelid) \
             FROM pg_catalog.pg_attribute a \
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&qualified],
        )
        .await?;
    let constraints = tx
        .query(
            "SELECT conname::text, pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint \
             WHERE conrelid = pg_catalog.to_regclass($1) ORDER BY conname",
            &[&qualified],
        )
        .await?;
    let mut lines = Vec::new();
    for column in &columns {
        let (name, kind, not_null, default): (String, String, bool, Option<String>) =
            (column.get(0), column.get(1), column.get(2), column.get(3));
        let mut line = format!("    {} {kind}", quote_ident(&name));
        if not_null {
            line.push_str(" NOT NULL");
        }
        if let Some(default) = default {
            line.push_str(&format!(" DEFAULT {default}"));
        }
        lines.push(line);
    }
    for constraint in &constraints {
        let (name, definition): (String, String) = (constraint.get(0), constraint.get(1));
        lines.push(format!(
            "    CONSTRAINT {} {definition}",
            quote_ident(&name)
        ));
    }
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} (\n{}\n);\n",
        quote_ident(HISTORY_TABLE),
        lines.join(",\n")
    ))
}

/// The sequences behind identity and serial columns, and where they stand.
async fn sequences(
    tx: &Transaction<'_>,
    schema: &str,
    tables: &[Table],
) -> anyhow::Result<Vec<(String, String, i64, bool)>> {
    let mut found = Vec::new();
    for table in tables {
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(&table.name));
        for column in &table.columns {
            let row = tx
                .query_one(
                    "SELECT pg_catalog.pg_get_serial_sequence($1, $2)",
                    &[&qualified, column],
                )
                .await?;
            let Some(sequence) = row.get::<_, Option<String>>(0) else {
                continue;
            };
            // pg_get_serial_sequence returns the name already quoted.
            let state = tx
                .query_one(
                    &format!("SELECT last_value, is_called FROM {sequence}"),
                    &[],
                )
                .await
                .with_context(|| format!("cannot read sequence {sequence}"))?;
            found.push((
                table.name.clone(),
                column.clone(),
                state.get(0),
                state.get(1),
            ));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrently_is_dropped_as_a_keyword_only() {
        assert_eq!(
            without_word(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);",
                "CONCURRENTLY"
            ),
            "CREATE INDEX IF NOT EXISTS i ON t (a);"
        );
        assert_eq!(
            without_word(
                "create index concurrently i on concurrently_t (a)",
                "CONCURRENTLY"
            ),
            "create index i on concurrently_t (a)"
        );
    }

    #[test]
    fn transactional_migrations_are_kept_verbatim() {
        let m = schema::Migration::new(1, "0001_x.sql", "CREATE INDEX CONCURRENTLY i ON t (a);\n");
        assert_eq!(restorable_sql(&m), m.sql);
        let m = schema::Migration::new(
            2,
            "0002_x.sql",
            "-- migrator: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n",
        );
        assert_eq!(
            restorable_sql(&m),
            "-- migrator: no-transaction\nCREATE INDEX i ON t (a);\n"
        );
    }
}
