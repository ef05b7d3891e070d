//! Backup names and the manifest written next to every artifact.
//!
//! A backup is two objects: `orders-20261125T051900Z.sql.gz` (the artifact)
//! and `orders-20261125T051900Z.manifest.json`. The manifest is written
//! last, so a backup without one is incomplete and invisible to `list`,
//! `verify latest`, `restore latest` and retention.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// Every backup name starts with this.
pub const NAME_PREFIX: &str = "orders-";
/// The artifact's suffix: gzip-compressed plain SQL.
pub const ARTIFACT_SUFFIX: &str = ".sql.gz";
/// The manifest's suffix.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Version of the artifact layout and manifest; bumped on incompatible changes.
pub const FORMAT: u32 = 1;

/// A backup's name: `orders-YYYYMMDDTHHMMSSZ`, the UTC second it started.
/// Names sort as their times do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupName {
    text: String,
}

impl BackupName {
    /// The name of a backup started at `time` (rounded down to the second).
    pub fn at(time: OffsetDateTime) -> Self {
        let time = time.to_offset(time::UtcOffset::UTC);
        Self {
            text: format!(
                "{NAME_PREFIX}{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                time.year(),
                u8::from(time.month()),
                time.day(),
                time.hour(),
                time.minute(),
                time.second()
            ),
        }
    }

    /// Parses a name; `None` unless it is exactly of our form.
    pub fn parse(text: &str) -> Option<Self> {
        parse_time(text)?;
        Some(Self {
            text: text.to_owned(),
        })
    }

    /// The name and kind of an object, from its file name.
    pub fn from_object(file_name: &str) -> Option<(Self, ObjectKind)> {
        if let Some(name) = file_name.strip_suffix(ARTIFACT_SUFFIX) {
            return Some((Self::parse(name)?, ObjectKind::Artifact));
        }
        let name = file_name.strip_suffix(MANIFEST_SUFFIX)?;
        Some((Self::parse(name)?, ObjectKind::Manifest))
    }

    /// When the backup started.
    pub fn time(&self) -> OffsetDateTime {
        // Only parseable names are ever constructed.
        parse_time(&self.text).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// File name of the artifact.
    pub fn artifact(&self) -> String {
        format!("{}{ARTIFACT_SUFFIX}", self.text)
    }

    /// File name of the manifest.
    pub fn manifest(&self) -> String {
        format!("{}{MANIFEST_SUFFIX}", self.text)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for BackupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Which of a backup's two objects a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// The compressed SQL.
    Artifact,
    /// The JSON manifest.
    Manifest,
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    let stamp = text.strip_prefix(NAME_PREFIX)?.strip_suffix('Z')?;
    let (date, clock) = stamp.split_once('T')?;
    if date.len() != 8
        || clock.len() != 6
        || !(date.bytes().chain(clock.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let number = |s: &str| s.parse::<u16>().ok();
    let year = i32::from(number(&date[0..4])?);
    let month = Month::try_from(u8::try_from(number(&date[4..6])?).ok()?).ok()?;
    let day = u8::try_from(number(&date[6..8])?).ok()?;
    let hour = u8::try_from(number(&clock[0..2])?).ok()?;
    let minute = u8::try_from(number(&clock[2..4])?).ok()?;
    let second = u8::try_from(number(&clock[4..6])?).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms(hour, minute, second).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// What a backup holds and how to check it, written next to the artifact.
///
/// Holds no host, user or secret: only what identifies the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`] of the writer.
    pub format: u32,
    /// The backup's name.
    pub name: String,
    /// File name of the artifact.
    pub artifact: String,
    /// Compression of the artifact (`gzip`).
    pub compression: String,
    /// The program that wrote it.
    pub tool: String,
    /// Its version.
    pub tool_version: String,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub started_at: String,
    /// When the artifact was complete (RFC 3339, UTC).
    pub finished_at: String,
    /// Name of the database backed up.
    pub database: String,
    /// PostgreSQL version of the source (`server_version`).
    pub server_version: String,
    /// The schema (namespace) holding the tables.
    pub schema: String,
    /// Highest applied migration.
    pub schema_version: i32,
    /// The migrations applied to the source, as its history table records them.
    pub migrations: Vec<MigrationEntry>,
    /// The migration history table.
    pub history_table: String,
    /// Every table in the artifact, in restore order (history first).
    pub tables: Vec<TableEntry>,
    /// Size of the compressed artifact in bytes.
    pub artifact_bytes: u64,
    /// SHA-256 of the compressed artifact, hex.
    pub artifact_sha256: String,
    /// Size of the SQL once decompressed.
    pub sql_bytes: u64,
    /// SHA-256 of the decompressed SQL, hex.
    pub sql_sha256: String,
}

impl Manifest {
    /// The tables that hold data (every table but the history).
    pub fn data_tables(&self) -> impl Iterator<Item = &TableEntry> {
        self.tables.iter().filter(|t| t.name != self.history_table)
    }
}

/// One applied migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationEntry {
    /// Version (`NNNN` of the file name).
    pub version: i32,
    /// File name.
    pub file: String,
    /// SHA-256 of the file, as the history table records it.
    pub checksum: String,
}

/// One table of the artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Table name (unqualified, unquoted).
    pub name: String,
    /// Rows in the snapshot.
    pub rows: u64,
    /// SHA-256 of the table's COPY data in the artifact, hex.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn names_format_parse_and_sort_by_time() {
        let name = BackupName::at(datetime!(2026-11-25 05:19:00.987 UTC));
        assert_eq!(name.as_str(), "orders-20261125T051900Z");
        assert_eq!(name.artifact(), "orders-20261125T051900Z.sql.gz");
        assert_eq!(name.manifest(), "orders-20261125T051900Z.manifest.json");
        assert_eq!(name.time(), datetime!(2026-11-25 05:19:00 UTC));
        assert_eq!(BackupName::parse(name.as_str()), Some(name.clone()));
        let later = BackupName::at(datetime!(2026-12-01 00:00:00 +02:00));
        assert_eq!(later.as_str(), "orders-20261130T220000Z");
        assert!(later > name);
    }

    #[test]
    fn only_our_names_parse() {
        for bad in [
            "orders-20261125T051900",
            "orders-2026112T051900Z",
            "orders-20261325T051900Z",
            "orders-20261125T251900Z",
            "orders-2026112aT051900Z",
            "other-20261125T051900Z",
            "orders-20261125T051900Z.sql.gz",
            "orders-+0261125T051900Z",
        ] {
            assert_eq!(BackupName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn objects_are_recognised_by_suffix() {
        let (name, kind) = BackupName::from_object("orders-20261125T051900Z.sql.gz").unwrap();
        assert_eq!(
            (name.as_str(), kind),
            ("orders-20261125T051900Z", ObjectKind::Artifact)
        );
        let (_, kind) = BackupName::from_object("orders-20261125T051900Z.manifest.json").unwrap();
        assert_eq!(kind, ObjectKind::Manifest);
        assert!(BackupName::from_object("orders-20261125T051900Z.sql.gz#1").is_none());
        assert!(BackupName::from_object("notes.txt").is_none());
    }
}
