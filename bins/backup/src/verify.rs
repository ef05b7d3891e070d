//! `backup verify`: checks an artifact against its manifest without a
//! database. [`CheckedRead`] is the same check as a stream of sections, so
//! `restore` verifies while it restores and commits only a backup that
//! checked out.

use object_store::ObjectMeta;
use object_store::buffered::BufReader;
use tokio::io::AsyncReadExt as _;

use crate::archive::{
    ArchiveError, Decompressed, Event, Parser, SharedTally, TallyReader, count_rows, decompress,
};
use crate::destination::{Destination, Listed};
use crate::manifest::{BackupName, FORMAT, Manifest, TableEntry};
use crate::outcome::Failure;
use crate::progress::Progress;

/// An artifact read section by section and checked against its manifest:
/// every table as it ends, sizes and checksums at the end. Any mismatch is
/// a [`Failure::Damaged`] naming what is wrong.
pub struct CheckedRead<'a> {
    destination: &'a Destination,
    name: BackupName,
    meta: ObjectMeta,
    manifest: Manifest,
    parser: Parser<Decompressed<BufReader>>,
    raw: SharedTally,
    sql: SharedTally,
    seen: Vec<String>,
    done: bool,
}

impl<'a> CheckedRead<'a> {
    /// Starts reading `backup`, whose manifest is `manifest`.
    pub fn open(
        destination: &'a Destination,
        backup: &Listed,
        manifest: Manifest,
    ) -> anyhow::Result<Self> {
        let name = backup.name.clone();
        if manifest.format != FORMAT || manifest.compression != "gzip" {
            return Err(Failure::Refused(format!(
                "backup {name} is in format {} ({}); this program reads format {FORMAT} (gzip): use a newer release",
                manifest.format, manifest.compression
            ))
            .into());
        }
        let Some(meta) = backup.artifact.clone() else {
            return Err(Failure::Damaged(format!(
                "backup {name} is damaged: its artifact {} is missing",
                name.artifact()
            ))
            .into());
        };
        // Cheap and exact: a truncated upload shows in the size.
        if meta.size != manifest.artifact_bytes {
            return Err(
                Failure::Damaged(size_mismatch(&name, meta.size, manifest.artifact_bytes)).into(),
            );
        }
        let raw = SharedTally::default();
        let sql = SharedTally::default();
        let reader = decompress(destination.artifact_reader(&meta), raw.clone(), sql.clone());
        Ok(Self {
            destination,
            name,
            meta,
            manifest,
            parser: Parser::new(reader),
            raw,
            sql,
            seen: Vec::new(),
            done: false,
        })
    }

    /// The backup's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Compressed bytes read so far.
    pub fn compressed_bytes(&self) -> u64 {
        self.raw.get().bytes()
    }

    /// The next section; `None` once the whole artifact checked out.
    pub async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        if self.done {
            return Ok(None);
        }
        let event = match self.parser.next().await {
            Ok(event) => event,
            Err(error) => {
                let damaged = self.damaged(read_problem(&error));
                return Err(self.raw_mismatch().await.unwrap_or(damaged));
            }
        };
        match event {
            Some(Event::TableEnd(entry)) => {
                if let Err(error) = self.check_table(&entry) {
                    // Changed bytes explain a changed table best.
                    return Err(self.raw_mismatch().await.unwrap_or(error));
                }
                Ok(Some(Event::TableEnd(entry)))
            }
            Some(event) => Ok(Some(event)),
            None => {
                self.done = true;
                self.check_end()?;
                Ok(None)
            }
        }
    }

    fn damaged(&self, what: String) -> anyhow::Error {
        Failure::Damaged(format!("backup {} is damaged: {what}", self.name)).into()
    }

    fn check_table(&mut self, entry: &TableEntry) -> anyhow::Result<()> {
        let Some(expected) = self.manifest.tables.iter().find(|t| t.name == entry.name) else {
            return Err(self.damaged(format!(
                "the artifact has table {} that the manifest does not list",
                entry.name
            )));
        };
        if expected.rows != entry.rows {
            return Err(self.damaged(format!(
                "table {} has {} rows in the artifact, the manifest says {}",
                entry.name, entry.rows, expected.rows
            )));
        }
        if expected.sha256 != entry.sha256 {
            return Err(self.damaged(format!(
                "the rows of table {} have SHA-256 {}, the manifest says {}",
                entry.name, entry.sha256, expected.sha256
            )));
        }
        self.seen.push(entry.name.clone());
        Ok(())
    }

    fn check_end(&self) -> anyhow::Result<()> {
        let raw = self.raw.get();
        if raw.bytes() != self.manifest.artifact_bytes {
            return Err(Failure::Damaged(size_mismatch(
                &self.name,
                raw.bytes(),
                self.manifest.artifact_bytes,
            ))
            .into());
        }
        if raw.sha256() != self.manifest.artifact_sha256 {
            return Err(self.damaged(checksum_mismatch(
                &self.name,
                &raw.sha256(),
                &self.manifest.artifact_sha256,
            )));
        }
        let sql = self.sql.get();
        if sql.bytes() != self.manifest.sql_bytes || sql.sha256() != self.manifest.sql_sha256 {
            return Err(self.damaged(format!(
                "its SQL is {} bytes with SHA-256 {}, the manifest says {} bytes with {}",
                sql.bytes(),
                sql.sha256(),
                self.manifest.sql_bytes,
                self.manifest.sql_sha256
            )));
        }
        if let Some(missing) = self
            .manifest
            .tables
            .iter()
            .find(|t| !self.seen.contains(&t.name))
        {
            return Err(self.damaged(format!(
                "table {} of the manifest is not in the artifact",
                missing.name
            )));
        }
        Ok(())
    }

    /// Reads the artifact again, whole, and compares its size and checksum
    /// with the manifest: `Some` damage report when they differ (or it
    /// cannot be read). A failure in the middle of a read is explained
    /// best by this, when it applies.
    pub async fn raw_mismatch(&self) -> Option<anyhow::Error> {
        let tally = SharedTally::default();
        let mut reader =
            TallyReader::new(self.destination.artifact_reader(&self.meta), tally.clone());
        let mut buf = vec![0; 64 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    return Some(anyhow::Error::new(error).context(format!(
                        "cannot read {} again to check it",
                        self.name.artifact()
                    )));
                }
            }
        }
        let raw = tally.get();
        if raw.bytes() != self.manifest.artifact_bytes {
            return Some(
                Failure::Damaged(size_mismatch(
                    &self.name,
                    raw.bytes(),
                    self.manifest.artifact_bytes,
                ))
                .into(),
            );
        }
        if raw.sha256() != self.manifest.artifact_sha256 {
            return Some(self.damaged(checksum_mismatch(
                &self.name,
                &raw.sha256(),
                &self.manifest.artifact_sha256,
            )));
        }
        None
    }
}

/// What a failure to read an artifact as one says about it.
fn read_problem(error: &ArchiveError) -> String {
    match error {
        // Most often a corrupt gzip stream.
        ArchiveError::Io(error) => format!("it does not decompress: {error}"),
        error => error.to_string(),
    }
}

fn size_mismatch(name: &BackupName, actual: u64, expected: u64) -> String {
    let file = name.artifact();
    if actual < expected {
        format!(
            "backup {name} is damaged: artifact {file} is truncated: {actual} of {expected} bytes"
        )
    } else {
        format!(
            "backup {name} is damaged: artifact {file} is {actual} bytes, the manifest says {expected}"
        )
    }
}

fn checksum_mismatch(name: &BackupName, actual: &str, expected: &str) -> String {
    format!(
        "artifact {} has SHA-256 {actual}, the manifest says {expected} (bytes changed)",
        name.artifact()
    )
}

/// Verifies the backup `wanted` (a name or `latest`).
pub async fn verify(destination: &Destination, wanted: &str) -> anyhow::Result<Manifest> {
    let backup = destination.find(wanted).await?;
    verify_listed(destination, &backup).await
}

/// Verifies one listed backup.
pub async fn verify_listed(destination: &Destination, backup: &Listed) -> anyhow::Result<Manifest> {
    let manifest = destination.manifest(&backup.name).await?;
    let mut read = CheckedRead::open(destination, backup, manifest)?;
    let mut progress = Progress::new("verify");
    while let Some(event) = read.next().await? {
        match event {
            Event::TableStart { name, .. } => progress.table(&name),
            Event::Rows(rows) => progress.advance(count_rows(&rows), read.compressed_bytes()),
            _ => {}
        }
    }
    progress.clear();
    Ok(read.manifest().clone())
}
