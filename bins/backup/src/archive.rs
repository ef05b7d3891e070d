//! The artifact: plain SQL, gzip-compressed, that `psql -v ON_ERROR_STOP=1`
//! alone restores into an empty database, and that `restore` and `verify`
//! read back section by section.
//!
//! Layout (one transaction, like `pg_dump --single-transaction`):
//!
//! ```text
//! -- boutique-orders backup orders-20261125T051900Z, format 1
//! -- (how to restore it)
//! SET client_encoding = 'UTF8';            preamble: SET statements only
//! ...
//! --@ begin
//! BEGIN;
//! --@ migration 1 0001_orders.sql          each applied migration's SQL
//! ...
//! ;
//! --@ end migration 1
//! --@ sql history                          the history table's DDL
//! CREATE TABLE IF NOT EXISTS schema_migrations (...);
//! --@ table schema_migrations              one COPY block per table,
//! COPY schema_migrations (...) FROM stdin; parents before children
//! 1    0001_orders.sql    ...
//! \.
//! --@ table orders
//! ...
//! --@ sql sequences                        identity sequences
//! SELECT pg_catalog.setval(...);
//! --@ commit
//! COMMIT;
//! --@ end
//! ```
//!
//! `--@` lines are SQL comments to psql and section markers to us. COPY data
//! is PostgreSQL's text format, in which a row never contains a raw newline
//! (it is escaped as `\n`) and never is `\.` (a backslash is `\\`).

use std::io;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use async_compression::tokio::bufread::GzipDecoder;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::manifest::{FORMAT, TableEntry};

/// First words of every artifact.
const HEADER: &str = "-- boutique-orders backup ";
const MARK: &str = "--@ ";
/// Data is handed on in batches of about this size.
const BATCH: usize = 64 * 1024;

/// Quotes an SQL string literal: `it's` becomes `'it''s'`.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

// ---------------------------------------------------------------------------
// Counting and hashing bytes as they pass

/// Bytes seen and their SHA-256.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    bytes: u64,
    sha256: Sha256,
}

impl Tally {
    fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.sha256.update(data);
    }

    /// Bytes seen so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Hex SHA-256 of the bytes seen so far.
    pub fn sha256(&self) -> String {
        hex::encode(self.sha256.clone().finalize())
    }
}

/// A [`Tally`] shared between a reader or writer and whoever asks for it.
#[derive(Debug, Clone, Default)]
pub struct SharedTally(Arc<Mutex<Tally>>);

impl SharedTally {
    fn update(&self, data: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(data);
    }

    /// A copy of the tally now.
    pub fn get(&self) -> Tally {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Tallies what is read through it.
pub struct TallyReader<R> {
    inner: R,
    tally: SharedTally,
}

impl<R> TallyReader<R> {
    /// Wraps `inner`; `tally` sees every byte read.
    pub fn new(inner: R, tally: SharedTally) -> Self {
        Self { inner, tally }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for TallyReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            self.tally.update(&buf.filled()[before..]);
        }
        result
    }
}

// ---------------------------------------------------------------------------
// Writing

/// Sizes and checksums of a finished artifact.
#[derive(Debug, Clone)]
pub struct Digest {
    /// Compressed bytes.
    pub artifact: Tally,
    /// Decompressed SQL bytes.
    pub sql: Tally,
}

/// Where compressed chunks go (an upload, or memory in tests).
pub trait ChunkSink {
    /// Takes the next chunk of the artifact; may wait for room.
    fn put(&mut self, chunk: Bytes) -> impl Future<Output = io::Result<()>>;
}

impl ChunkSink for Vec<u8> {
    async fn put(&mut self, chunk: Bytes) -> io::Result<()> {
        self.extend_from_slice(&chunk);
        Ok(())
    }
}

/// Compressed output is handed to the sink in chunks of about this size.
const CHUNK: usize = 256 * 1024;
/// Batches and chunks in flight between the writer and its compressor: with
/// [`BATCH`] and [`CHUNK`], at most about 1.3 MiB.
const IN_FLIGHT: usize = 4;

/// Writes an artifact: SQL text in, gzip chunks out to a [`ChunkSink`],
/// everything tallied.
///
/// Compression is most of a backup's CPU, so it runs on a thread of its own
/// (like `gzip` in `pg_dump | gzip`) while this side reads the COPY stream
/// and checksums it. SQL goes over in batches of about [`BATCH`] bytes;
/// compressed chunks come back and go to the sink. Both channels are
/// bounded, so memory stays at a few chunks whatever the table size.
pub struct ArtifactWriter<S: ChunkSink> {
    /// SQL not yet handed to the compressor.
    batch: Vec<u8>,
    /// To the compressor; `None` once finished.
    to_compressor: Option<mpsc::Sender<Vec<u8>>>,
    /// Compressed chunks, or the compressor's error, in order.
    from_compressor: mpsc::Receiver<io::Result<Vec<u8>>>,
    sink: S,
    compressed: Tally,
    sql: Tally,
    table: Option<(String, u64, Sha256)>,
}

/// What the writer got while waiting to hand over a batch.
enum Step<'a> {
    /// Room for the batch.
    Send(mpsc::Permit<'a, Vec<u8>>),
    /// A compressed chunk to pass on (`None`: the compressor is gone).
    Chunk(Option<io::Result<Vec<u8>>>),
}

impl<S: ChunkSink> ArtifactWriter<S> {
    /// Compresses into `sink` at gzip `level` (1..=9). Starts the compressor
    /// on Tokio's blocking pool: call it inside a runtime.
    pub fn new(sink: S, level: u32) -> Self {
        let (to_compressor, input) = mpsc::channel(IN_FLIGHT);
        let (output, from_compressor) = mpsc::channel(IN_FLIGHT);
        let level = Compression::new(level.clamp(1, 9));
        tokio::task::spawn_blocking(move || compress(level, input, output));
        Self {
            batch: Vec::with_capacity(BATCH),
            to_compressor: Some(to_compressor),
            from_compressor,
            sink,
            compressed: Tally::default(),
            sql: Tally::default(),
            table: None,
        }
    }

    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.sql.update(data);
        self.batch.extend_from_slice(data);
        if self.batch.len() >= BATCH {
            self.hand_over().await?;
        }
        Ok(())
    }

    /// Sends the batch to the compressor, passing compressed chunks on to
    /// the sink while the compressor has no room (it may be waiting for us
    /// to take them).
    async fn hand_over(&mut self) -> io::Result<()> {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let to_compressor = self.to_compressor.as_ref().ok_or_else(compressor_gone)?;
        loop {
            let step = tokio::select! {
                permit = to_compressor.reserve() => Step::Send(permit.map_err(|_| compressor_gone())?),
                chunk = self.from_compressor.recv() => Step::Chunk(chunk),
            };
            match step {
                Step::Send(permit) => {
                    permit.send(batch);
                    return Ok(());
                }
                Step::Chunk(Some(chunk)) => {
                    let chunk = chunk?;
                    self.compressed.update(&chunk);
                    self.sink.put(Bytes::from(chunk)).await?;
                }
                Step::Chunk(None) => return Err(compressor_gone()),
            }
        }
    }

    /// The first lines: what this is, how to restore it, session settings.
    pub async fn preamble(&mut self, name: &str, schema: &str) -> io::Result<()> {
        let text = format!(
            "{HEADER}{name}, format {FORMAT}\n\
             -- Restore into an EMPTY database with psql alone:\n\
             --   gunzip -c {name}.sql.gz | psql -v ON_ERROR_STOP=1 -d DBNAME\n\
             -- or with `backup restore {name}` (also into a migrated database).\n\
             -- Roles and grants are not included: run the migrator afterwards.\n\
             SET client_encoding = 'UTF8';\n\
             SET standard_conforming_strings = on;\n\
             SET statement_timeout = 0;\n\
             SET lock_timeout = 0;\n\
             SET idle_in_transaction_session_timeout = 0;\n\
             SET client_min_messages = warning;\n\
             SET search_path = {};\n\
             {MARK}begin\n\
             BEGIN;\n",
            orders::schema::quote_ident(schema)
        );
        self.write(text.as_bytes()).await
    }

    /// One migration's SQL.
    pub async fn migration(&mut self, version: i32, file: &str, sql: &str) -> io::Result<()> {
        let mut text = format!("{MARK}migration {version} {file}\n{sql}");
        if !sql.ends_with('\n') {
            text.push('\n');
        }
        // Ends a last statement that lacks its semicolon; psql skips an empty one.
        text.push_str(&format!(";\n{MARK}end migration {version}\n"));
        self.write(text.as_bytes()).await
    }

    /// Plain statements (`label` names them for readers).
    pub async fn sql(&mut self, label: &str, sql: &str) -> io::Result<()> {
        let mut text = format!("{MARK}sql {label}\n{sql}");
        if !sql.ends_with('\n') {
            text.push('\n');
        }
        self.write(text.as_bytes()).await
    }

    /// Starts a table's COPY block; `copy` is `COPY t (cols) FROM stdin;`.
    pub async fn begin_table(&mut self, name: &str, copy: &str) -> io::Result<()> {
        self.table = Some((name.to_owned(), 0, Sha256::new()));
        self.write(format!("{MARK}table {name}\n{copy}\n").as_bytes())
            .await
    }

    /// COPY text rows, as `COPY ... TO STDOUT` sent them (whole rows);
    /// returns how many rows `data` held.
    pub async fn rows(&mut self, data: &[u8]) -> io::Result<u64> {
        let rows = count_rows(data);
        if let Some((_, count, sha)) = &mut self.table {
            *count += rows;
            sha.update(data);
        }
        self.write(data).await?;
        Ok(rows)
    }

    /// Ends the COPY block; the table's row count and checksum.
    pub async fn end_table(&mut self) -> io::Result<TableEntry> {
        let (name, rows, sha) = self
            .table
            .take()
            .ok_or_else(|| io::Error::other("end_table without begin_table"))?;
        self.write(b"\\.\n").await?;
        Ok(TableEntry {
            name,
            rows,
            sha256: hex::encode(sha.finalize()),
        })
    }

    /// Writes the end, flushes the compressor and hands everything to the
    /// sink; the caller then completes (publishes) the upload, or aborts it
    /// on error, taking it back with [`ArtifactWriter::into_sink`].
    pub async fn finish(&mut self) -> io::Result<Digest> {
        self.write(format!("{MARK}commit\nCOMMIT;\n{MARK}end\n").as_bytes())
            .await?;
        self.hand_over().await?;
        // Closing the channel tells the compressor to write the gzip
        // trailer; it closes its side once everything is sent.
        self.to_compressor = None;
        while let Some(chunk) = self.from_compressor.recv().await {
            let chunk = chunk?;
            self.compressed.update(&chunk);
            self.sink.put(Bytes::from(chunk)).await?;
        }
        Ok(Digest {
            artifact: self.compressed.clone(),
            sql: self.sql.clone(),
        })
    }

    /// Compressed bytes handed to the sink so far.
    pub fn compressed_bytes(&self) -> u64 {
        self.compressed.bytes()
    }

    /// Gives the sink back, unfinished (to abort an upload).
    pub fn into_sink(self) -> S {
        self.sink
    }
}

/// The compressor thread: SQL batches in, gzip chunks of about [`CHUNK`]
/// bytes out, then the rest and the trailer once the input closes. Stops
/// early when the writer is gone (an aborted backup).
fn compress(
    level: Compression,
    mut input: mpsc::Receiver<Vec<u8>>,
    output: mpsc::Sender<io::Result<Vec<u8>>>,
) {
    let mut encoder = GzEncoder::new(Vec::with_capacity(CHUNK + BATCH), level);
    while let Some(batch) = input.blocking_recv() {
        // Into memory: fails only if zlib does.
        if let Err(error) = encoder.write_all(&batch) {
            let _ = output.blocking_send(Err(error));
            return;
        }
        if encoder.get_ref().len() >= CHUNK {
            let chunk = std::mem::replace(encoder.get_mut(), Vec::with_capacity(CHUNK + BATCH));
            if output.blocking_send(Ok(chunk)).is_err() {
                return;
            }
        }
    }
    let _ = output.blocking_send(encoder.finish());
}

fn compressor_gone() -> io::Error {
    io::Error::other("the compressor stopped")
}

/// Rows in COPY text data: one per newline.
pub fn count_rows(data: &[u8]) -> u64 {
    data.iter().filter(|&&b| b == b'\n').count() as u64
}

// ---------------------------------------------------------------------------
// Reading

/// Why an artifact could not be read as one.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or decompressing failed.
    #[error("cannot read the artifact: {0}")]
    Io(#[from] io::Error),
    /// The SQL ends early.
    #[error("the SQL ends early, {0}: the artifact is truncated")]
    Truncated(String),
    /// The SQL is not laid out as we write it.
    #[error("line {line} is not what a backup artifact has there: {problem}")]
    Malformed {
        /// 1-based line of the decompressed SQL.
        line: u64,
        /// What was expected.
        problem: String,
    },
}

/// One piece of an artifact, in order.
#[derive(Debug)]
pub enum Event {
    /// A `SET` of the preamble.
    Set(String),
    /// `--@ begin`: the transaction starts; the preamble is over.
    Begin,
    /// A migration's SQL.
    Migration {
        /// Its version.
        version: i32,
        /// Its file name.
        file: String,
        /// The SQL (ends with an empty statement `;`).
        sql: String,
    },
    /// Plain statements.
    Sql {
        /// `history` or `sequences`.
        label: String,
        /// The statements.
        sql: String,
    },
    /// A table's COPY block starts.
    TableStart {
        /// The table.
        name: String,
        /// `COPY t (cols) FROM stdin` without the semicolon.
        copy: String,
    },
    /// Whole rows of the current table.
    Rows(Bytes),
    /// The current table's COPY block ended.
    TableEnd(TableEntry),
    /// `COMMIT;` and the end marker: the artifact is complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Preamble,
    Body,
    Data,
    Done,
}

/// Reads an artifact's decompressed SQL as [`Event`]s.
pub struct Parser<R> {
    reader: R,
    state: State,
    line_no: u64,
    /// A marker line read ahead (it ended an `sql` section).
    pending: Option<String>,
    table: Option<(String, u64, Sha256)>,
    /// The current table's end was read with its last rows.
    table_ended: bool,
}

/// The decompressing reader of an artifact: raw bytes in, SQL out.
pub type Decompressed<R> =
    tokio::io::BufReader<TallyReader<GzipDecoder<tokio::io::BufReader<TallyReader<R>>>>>;

/// Wraps a reader of the compressed artifact: `raw` tallies what is read
/// from it, `sql` what it decompresses to.
pub fn decompress<R: AsyncRead + Unpin>(
    compressed: R,
    raw: SharedTally,
    sql: SharedTally,
) -> Decompressed<R> {
    let raw = tokio::io::BufReader::new(TallyReader::new(compressed, raw));
    // One gzip member is what we write; a second one would be appended data.
    let decoder = GzipDecoder::new(raw);
    tokio::io::BufReader::with_capacity(BATCH, TallyReader::new(decoder, sql))
}

impl<R: AsyncBufRead + Unpin> Parser<R> {
    /// Reads SQL from `reader`.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            state: State::Header,
            line_no: 0,
            pending: None,
            table: None,
            table_ended: false,
        }
    }

    fn malformed(&self, problem: impl Into<String>) -> ArchiveError {
        ArchiveError::Malformed {
            line: self.line_no,
            problem: problem.into(),
        }
    }

    /// A whole line, with its newline; `None` at the end of the input.
    async fn line(&mut self) -> Result<Option<String>, ArchiveError> {
        if let Some(line) = self.pending.take() {
            return Ok(Some(line));
        }
        let mut buf = Vec::new();
        let read = self.reader.read_until(b'\n', &mut buf).await?;
        if read == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if !buf.ends_with(b"\n") {
            return Err(ArchiveError::Truncated(format!(
                "in the middle of line {}",
                self.line_no
            )));
        }
        String::from_utf8(buf)
            .map(Some)
            .map_err(|_| self.malformed("it is not UTF-8"))
    }

    async fn required_line(&mut self, context: &str) -> Result<String, ArchiveError> {
        self.line()
            .await?
            .ok_or_else(|| ArchiveError::Truncated(context.to_owned()))
    }

    /// The next event; `None` after [`Event::End`] once the input is
    /// confirmed to end there.
    pub async fn next(&mut self) -> Result<Option<Event>, ArchiveError> {
        if self.table_ended {
            self.table_ended = false;
            return Ok(Some(self.end_table()));
        }
        loop {
            match self.state {
                State::Header => {
                    let line = self.required_line("before its first line").await?;
                    let expected = format!(", format {FORMAT}\n");
                    if !line.starts_with(HEADER) {
                        return Err(
                            self.malformed("the first line should name a boutique-orders backup")
                        );
                    }
                    if !line.ends_with(&expected) {
                        return Err(
                            self.malformed(format!("this program reads format {FORMAT} only"))
                        );
                    }
                    self.state = State::Preamble;
                }
                State::Preamble => {
                    let line = self.required_line("in the preamble").await?;
                    let text = line.trim_end();
                    if text == format!("{MARK}begin") {
                        let begin = self.required_line("after the begin marker").await?;
                        if begin.trim_end() != "BEGIN;" {
                            return Err(self.malformed("expected BEGIN;"));
                        }
                        self.state = State::Body;
                        return Ok(Some(Event::Begin));
                    }
                    if text.starts_with("SET ") && text.ends_with(';') {
                        return Ok(Some(Event::Set(text.to_owned())));
                    }
                    if !(text.is_empty() || text.starts_with("--")) {
                        return Err(
                            self.malformed("the preamble holds only comments and SET statements")
                        );
                    }
                }
                State::Body => return self.body().await.map(Some),
                State::Data => return self.data().await.map(Some),
                State::Done => {
                    return match self.line().await? {
                        None => Ok(None),
                        Some(_) => Err(self.malformed("data follows the end marker")),
                    };
                }
            }
        }
    }

    async fn body(&mut self) -> Result<Event, ArchiveError> {
        let line = self.required_line("before COMMIT").await?;
        let Some(marker) = line.trim_end().strip_prefix(MARK).map(str::to_owned) else {
            return Err(self.malformed("expected a --@ section marker"));
        };
        if let Some(rest) = marker.strip_prefix("migration ") {
            let (version, file) = rest
                .split_once(' ')
                .and_then(|(v, f)| Some((v.parse::<i32>().ok()?, f.to_owned())))
                .ok_or_else(|| self.malformed("expected --@ migration VERSION FILE"))?;
            let end = format!("{MARK}end migration {version}");
            let mut sql = String::new();
            loop {
                let line = self
                    .required_line(&format!("inside migration {file}"))
                    .await?;
                if line.trim_end() == end {
                    break;
                }
                sql.push_str(&line);
            }
            return Ok(Event::Migration { version, file, sql });
        }
        if let Some(label) = marker.strip_prefix("sql ") {
            let mut sql = String::new();
            loop {
                let line = self
                    .required_line(&format!("inside the {label} statements"))
                    .await?;
                if line.starts_with(MARK) {
                    self.pending = Some(line);
                    break;
                }
                sql.push_str(&line);
            }
            return Ok(Event::Sql {
                label: label.to_owned(),
                sql,
            });
        }
        if let Some(name) = marker.strip_prefix("table ") {
            let copy = self
                .required_line(&format!("at the start of table {name}"))
                .await?;
            let copy = copy.trim_end();
            let Some(copy) = copy
                .strip_suffix(" FROM stdin;")
                .filter(|c| c.starts_with("COPY "))
            else {
                return Err(self.malformed(format!("expected COPY {name} (...) FROM stdin;")));
            };
            self.table = Some((name.to_owned(), 0, Sha256::new()));
            self.state = State::Data;
            return Ok(Event::TableStart {
                name: name.to_owned(),
                copy: format!("{copy} FROM stdin"),
            });
        }
        if marker == "commit" {
            let commit = self.required_line("after the commit marker").await?;
            let end = self.required_line("before the end marker").await?;
            if commit.trim_end() != "COMMIT;" || end.trim_end() != format!("{MARK}end") {
                return Err(self.malformed("expected COMMIT; and the end marker"));
            }
            self.state = State::Done;
            return Ok(Event::End);
        }
        Err(self.malformed(format!("unknown section marker --@ {marker}")))
    }

    /// Rows until about [`BATCH`] bytes, or the table's end.
    async fn data(&mut self) -> Result<Event, ArchiveError> {
        let mut batch = Vec::with_capacity(BATCH);
        let name = self
            .table
            .as_ref()
            .map(|(name, _, _)| name.clone())
            .unwrap_or_default();
        loop {
            let start = batch.len();
            let read = self.reader.read_until(b'\n', &mut batch).await?;
            if read == 0 {
                return Err(ArchiveError::Truncated(format!(
                    "inside the rows of table {name}"
                )));
            }
            self.line_no += 1;
            if !batch.ends_with(b"\n") {
                return Err(ArchiveError::Truncated(format!(
                    "in the middle of a row of table {name}"
                )));
            }
            let ended = &batch[start..] == b"\\.\n";
            if ended {
                batch.truncate(start);
            }
            if let Some((_, rows, sha)) = &mut self.table {
                if !ended {
                    *rows += 1;
                }
                sha.update(&batch[start..]);
            }
            if ended {
                if !batch.is_empty() {
                    // Hand the rows on first; the end comes with the next call.
                    self.table_ended = true;
                    return Ok(Event::Rows(Bytes::from(batch)));
                }
                return Ok(self.end_table());
            }
            if batch.len() >= BATCH {
                return Ok(Event::Rows(Bytes::from(batch)));
            }
        }
    }

    fn end_table(&mut self) -> Event {
        self.state = State::Body;
        let (name, rows, sha) = self.table.take().unwrap_or_default();
        Event::TableEnd(TableEntry {
            name,
            rows,
            sha256: hex::encode(sha.finalize()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sample(rows: &[u8]) -> (Vec<u8>, Digest, TableEntry) {
        let mut writer = ArtifactWriter::new(Vec::new(), 6);
        writer
            .preamble("orders-20261125T051900Z", "public")
            .await
            .unwrap();
        writer
            .migration(1, "0001_orders.sql", "CREATE TABLE t (a text)")
            .await
            .unwrap();
        writer
            .sql("history", "CREATE TABLE IF NOT EXISTS h (v int);\n")
            .await
            .unwrap();
        writer
            .begin_table("t", "COPY t (a) FROM stdin;")
            .await
            .unwrap();
        writer.rows(rows).await.unwrap();
        let table = writer.end_table().await.unwrap();
        writer.sql("sequences", "SELECT 1;\n").await.unwrap();
        let digest = writer.finish().await.unwrap();
        (writer.into_sink(), digest, table)
    }

    async fn events(compressed: &[u8]) -> Result<Vec<Event>, ArchiveError> {
        let raw = SharedTally::default();
        let sql = SharedTally::default();
        let mut parser = Parser::new(decompress(compressed, raw, sql));
        let mut events = Vec::new();
        while let Some(event) = parser.next().await? {
            events.push(event);
        }
        Ok(events)
    }

    #[tokio::test]
    async fn what_is_written_reads_back_as_the_same_sections() {
        let rows = b"it's\\ta\\\\b\n\\N\n\\\\.\nlast\n";
        let (compressed, digest, table) = sample(rows).await;
        assert_eq!(table.rows, 4);
        assert_eq!(digest.artifact.bytes(), compressed.len() as u64);

        let raw = SharedTally::default();
        let sql = SharedTally::default();
        let mut parser = Parser::new(decompress(&compressed[..], raw.clone(), sql.clone()));
        let mut seen = Vec::new();
        let mut data = Vec::new();
        while let Some(event) = parser.next().await.unwrap() {
            match &event {
                Event::Rows(bytes) => data.extend_from_slice(bytes),
                Event::TableEnd(entry) => assert_eq!(entry, &table),
                Event::Migration { version, file, sql } => {
                    assert_eq!((*version, file.as_str()), (1, "0001_orders.sql"));
                    assert_eq!(sql, "CREATE TABLE t (a text)\n;\n");
                }
                Event::TableStart { copy, .. } => assert_eq!(copy, "COPY t (a) FROM stdin"),
                _ => {}
            }
            seen.push(
                format!("{event:?}")
                    .split([' ', '('])
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(data, rows);
        assert_eq!(seen.iter().filter(|e| *e == "Set").count(), 7);
        let seen: Vec<_> = seen.into_iter().filter(|e| e != "Set").collect();
        assert_eq!(
            seen,
            [
                "Begin",
                "Migration",
                "Sql",
                "TableStart",
                "Rows",
                "TableEnd",
                "Sql",
                "End"
            ]
        );
        assert_eq!(raw.get().sha256(), digest.artifact.sha256());
        assert_eq!(sql.get().sha256(), digest.sql.sha256());
        assert_eq!(sql.get().bytes(), digest.sql.bytes());
    }

    #[tokio::test]
    async fn a_truncated_artifact_is_reported_as_such() {
        let (compressed, _, _) = sample(b"a\nb\n").await;
        for cut in [10, compressed.len() / 2, compressed.len() - 4] {
            let error = events(&compressed[..cut]).await.unwrap_err();
            let text = error.to_string();
            assert!(
                text.contains("truncated")
                    || text.contains("unexpected end")
                    || text.contains("eof"),
                "cut at {cut}: {text}"
            );
        }
    }

    #[tokio::test]
    async fn sql_that_is_not_an_artifact_is_malformed() {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(b"SELECT 1;\n").unwrap();
        let error = events(&encoder.finish().unwrap()).await.unwrap_err();
        assert!(
            matches!(error, ArchiveError::Malformed { line: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
