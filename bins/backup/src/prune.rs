//! `backup prune`: retention by count and by age, never removing the
//! newest backup that verifies, and clean-up after interrupted backups.

use std::time::Duration;

use time::OffsetDateTime;

use crate::destination::Destination;
use crate::manifest::BackupName;
use crate::outcome::Failure;
use crate::verify::verify_listed;

/// An artifact without a manifest this much older than its name says is
/// abandoned: a live backup writes its manifest right after its artifact,
/// and keeps a volume's temporary file fresh while it writes.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(60 * 60);

/// Retention limits; zero means no limit.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Keep at most this many backups.
    pub count: u32,
    /// Keep no backup older than this.
    pub age: Duration,
}

/// Why a backup is kept or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limits.
    Keep,
    /// The newest backup that verifies: kept whatever the limits say.
    KeepNewestVerified,
    /// Beyond the count limit.
    RemoveCount,
    /// Older than the age limit.
    RemoveAge,
}

impl Verdict {
    /// Whether the backup stays.
    pub fn keeps(&self) -> bool {
        matches!(self, Verdict::Keep | Verdict::KeepNewestVerified)
    }
}

/// Decides for each of `backups` (newest first).
pub fn decide(
    backups: &[BackupName],
    retention: Retention,
    protected: Option<&BackupName>,
    now: OffsetDateTime,
) -> Vec<(BackupName, Verdict)> {
    backups
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let too_many = retention.count > 0 && index >= retention.count as usize;
            let age = now - name.time();
            let too_old = !retention.age.is_zero() && age > retention.age;
            let verdict = if Some(name) == protected {
                Verdict::KeepNewestVerified
            } else if too_many {
                Verdict::RemoveCount
            } else if too_old {
                Verdict::RemoveAge
            } else {
                Verdict::Keep
            };
            (name.clone(), verdict)
        })
        .collect()
}

/// What prune did (or would do, with `dry_run`).
#[derive(Debug, Default)]
pub struct Pruned {
    /// Every backup with its verdict, newest first.
    pub verdicts: Vec<(BackupName, Verdict)>,
    /// Abandoned artifacts and temporary files removed.
    pub abandoned: Vec<String>,
}

/// Applies `retention` at `destination`.
pub async fn prune(
    destination: &Destination,
    retention: Retention,
    dry_run: bool,
) -> anyhow::Result<Pruned> {
    let listing = destination.list().await?;
    let mut protected = None;
    for backup in &listing.backups {
        match verify_listed(destination, backup).await {
            Ok(_) => {
                protected = Some(backup.name.clone());
                break;
            }
            Err(error) if is_damaged(&error) => {
                tracing::warn!(backup = %backup.name, error = %format!("{error:#}"), "backup does not verify");
            }
            // Cannot tell (destination trouble): better to remove nothing.
            Err(error) => return Err(error),
        }
    }
    if protected.is_none() && !listing.backups.is_empty() {
        let url = destination.url();
        let problem = match listing.backups.len() {
            1 => format!("the only backup at {url} does not verify"),
            n => format!("none of the {n} backups at {url} verifies"),
        };
        return Err(Failure::Damaged(format!("{problem}; removing nothing")).into());
    }
    let names: Vec<BackupName> = listing.backups.iter().map(|b| b.name.clone()).collect();
    let now = OffsetDateTime::now_utc();
    let verdicts = decide(&names, retention, protected.as_ref(), now);
    let mut pruned = Pruned::default();
    for (name, verdict) in &verdicts {
        if !verdict.keeps() && !dry_run {
            destination.remove(name).await?;
            tracing::info!(backup = %name, reason = ?verdict, "removed backup");
        }
    }
    pruned.verdicts = verdicts;

    for (name, _) in &listing.incomplete {
        if now - name.time() > ABANDONED_AFTER {
            if !dry_run {
                destination.remove_artifact(name).await?;
            }
            pruned.abandoned.push(name.artifact());
        }
    }
    if !dry_run {
        pruned
            .abandoned
            .extend(destination.remove_stale_uploads(ABANDONED_AFTER)?);
    }
    Ok(pruned)
}

fn is_damaged(error: &anyhow::Error) -> bool {
    matches!(
        error.chain().find_map(|e| e.downcast_ref::<Failure>()),
        Some(Failure::Damaged(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn names(days_ago: &[i64], now: OffsetDateTime) -> Vec<BackupName> {
        days_ago
            .iter()
            .map(|d| BackupName::at(now - time::Duration::days(*d)))
            .collect()
    }

    fn kept(verdicts: &[(BackupName, Verdict)]) -> Vec<bool> {
        verdicts.iter().map(|(_, v)| v.keeps()).collect()
    }

    const NOW: OffsetDateTime = datetime!(2026-11-25 05:00:00 UTC);
    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    #[test]
    fn count_keeps_the_newest() {
        let backups = names(&[0, 1, 2, 3], NOW);
        let verdicts = decide(
            &backups,
            Retention {
                count: 2,
                age: Duration::ZERO,
            },
            Some(&backups[0]),
            NOW,
        );
        assert_eq!(kept(&verdicts), [true, true, false, false]);
        assert_eq!(verdicts[2].1, Verdict::RemoveCount);
    }

    #[test]
    fn age_removes_the_old() {
        let backups = names(&[0, 1, 5, 9], NOW);
        let verdicts = decide(
            &backups,
            Retention {
                count: 0,
                age: 3 * DAY,
            },
            Some(&backups[0]),
            NOW,
        );
        assert_eq!(kept(&verdicts), [true, true, false, false]);
        assert_eq!(verdicts[3].1, Verdict::RemoveAge);
    }

    #[test]
    fn both_limits_apply() {
        let backups = names(&[0, 1, 2, 5], NOW);
        let verdicts = decide(
            &backups,
            Retention {
                count: 2,
                age: 4 * DAY,
            },
            Some(&backups[0]),
            NOW,
        );
        assert_eq!(kept(&verdicts), [true, true, false, false]);
    }

    #[test]
    fn the_newest_verified_backup_survives_every_limit() {
        let backups = names(&[10, 20, 30], NOW);
        let verdicts = decide(
            &backups,
            Retention { count: 1, age: DAY },
            Some(&backups[1]),
            NOW,
        );
        assert_eq!(kept(&verdicts), [false, true, false]);
        assert_eq!(verdicts[1].1, Verdict::KeepNewestVerified);
    }

    #[test]
    fn no_limits_keep_everything() {
        let backups = names(&[0, 100, 1000], NOW);
        let verdicts = decide(
            &backups,
            Retention {
                count: 0,
                age: Duration::ZERO,
            },
            None,
            NOW,
        );
        assert_eq!(kept(&verdicts), [true, true, true]);
    }
}
