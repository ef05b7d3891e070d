//! Where backups are kept: a directory (a PersistentVolumeClaim) or
//! S3-compatible object storage, both through `object_store`.
//!
//! Atomic publication comes from the stores themselves: on a volume an
//! object is written under a temporary name (`NAME#1`) and renamed into
//! place when complete; on S3 a large artifact is a multipart upload that
//! becomes visible only when it is completed, a small one a single PUT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufReader;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    ClientConfigKey, ObjectMeta, ObjectStore, ObjectStoreExt as _, PutPayload, RetryConfig,
    WriteMultipart,
};
use orders::config::BackupSettings;
use secrecy::ExposeSecret as _;

use crate::archive::ChunkSink;
use crate::manifest::{BackupName, Manifest, ObjectKind};
use crate::outcome::Failure;

/// Parts of a multipart upload: S3 wants at least 5 MiB but the last.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once: memory is about `PART_SIZE * (1 + this)`.
const PARTS_IN_FLIGHT: usize = 2;
/// Bytes fetched per request when reading an artifact.
const READ_CHUNK: usize = 8 * 1024 * 1024;
/// Longest one S3 request may take (a part, a ranged read, a listing).
const REQUEST_TIMEOUT: &str = "300s";

/// A backup destination.
pub struct Destination {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    /// The directory, for a `file://` destination.
    directory: Option<PathBuf>,
}

/// One backup at the destination that has a manifest.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its name.
    pub name: BackupName,
    /// The artifact, when present.
    pub artifact: Option<ObjectMeta>,
}

/// What [`Destination::list`] found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Backups with a manifest, newest first.
    pub backups: Vec<Listed>,
    /// Artifacts without a manifest (unfinished or abandoned), newest first.
    pub incomplete: Vec<(BackupName, ObjectMeta)>,
}

impl Destination {
    /// Opens the destination at `url`; `create` makes a missing directory
    /// (for `run`), otherwise a missing directory is an error.
    pub fn open(url: &str, settings: &BackupSettings, create: bool) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).map_err(|error| {
            Failure::Usage(format!(
                "backup destination {url:?} is not a URL ({error}); expected file:///path or s3://bucket/prefix"
            ))
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            // Never echo it: it may hold a secret.
            return Err(Failure::Usage(
                "the backup destination URL must not hold credentials; use backup.s3_access_key_id_file and backup.s3_secret_access_key_file".into(),
            )
            .into());
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(Failure::Usage(format!(
                "backup destination {url:?} has a query or fragment; expected file:///path or s3://bucket/prefix"
            ))
            .into());
        }
        match parsed.scheme() {
            "file" => Self::open_directory(&parsed, create),
            "s3" => Self::open_s3(&parsed, settings),
            scheme => Err(Failure::Usage(format!(
                "backup destination scheme {scheme}: is not supported; expected file:///path or s3://bucket/prefix"
            ))
            .into()),
        }
    }

    fn open_directory(url: &url::Url, create: bool) -> anyhow::Result<Self> {
        if url.host_str().is_some_and(|h| !h.is_empty()) {
            return Err(Failure::Usage(format!(
                "backup destination {url} names a host; expected file:///absolute/path"
            ))
            .into());
        }
        let directory = url
            .to_file_path()
            .map_err(|()| Failure::Usage(format!("backup destination {url} is not a file path")))?;
        if create {
            std::fs::create_dir_all(&directory).with_context(|| {
                format!("cannot create the backup directory {}", directory.display())
            })?;
        } else if !directory.is_dir() {
            bail!(
                "the backup directory {} does not exist (is the volume mounted?)",
                directory.display()
            );
        }
        let store = LocalFileSystem::new_with_prefix(&directory)
            .with_context(|| format!("cannot open the backup directory {}", directory.display()))?
            // A backup is only as good as what survives a power cut.
            .with_fsync(true);
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::default(),
            url: url.to_string(),
            directory: Some(directory),
        })
    }

    fn open_s3(url: &url::Url, settings: &BackupSettings) -> anyhow::Result<Self> {
        let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
            Failure::Usage(format!(
                "backup destination {url} names no bucket; expected s3://bucket/prefix"
            ))
        })?;
        // The standard AWS_* variables first; configuration keys override them.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                REQUEST_TIMEOUT,
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout),
                format!("{}ms", settings.stall_timeout.as_millis().max(1)),
            );
        // object_store retries failed requests for up to 3 minutes by
        // default; the stall bound is the operator's word for how long.
        builder = builder.with_retry(RetryConfig {
            retry_timeout: settings.stall_timeout,
            ..RetryConfig::default()
        });
        if let Some(key) = &settings.s3_access_key_id {
            builder = builder.with_access_key_id(key.expose_secret());
        }
        if let Some(secret) = &settings.s3_secret_access_key {
            builder = builder.with_secret_access_key(secret.expose_secret());
        }
        if let Some(region) = &settings.s3_region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &settings.s3_endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if settings.s3_allow_http {
            builder = builder.with_allow_http(true);
        }
        let store = builder
            .build()
            .map_err(|error| Failure::Usage(format!("S3 destination {url}: {error}")))?;
        let prefix = Path::from(url.path().trim_matches('/'));
        Ok(Self {
            store: Arc::new(store),
            prefix,
            url: url.to_string(),
            directory: None,
        })
    }

    /// The destination as configured (holds no secret).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, file: &str) -> Path {
        self.prefix.clone().join(file)
    }

    /// The backups at the destination.
    pub async fn list(&self) -> anyhow::Result<Listing> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listed = self
            .store
            .list_with_delimiter(prefix)
            .await
            .with_context(|| format!("cannot list {}", self.url))?;
        let mut artifacts = std::collections::BTreeMap::new();
        let mut manifests = std::collections::BTreeSet::new();
        for object in listed.objects {
            let Some(file) = object.location.filename() else {
                continue;
            };
            match BackupName::from_object(file) {
                Some((name, ObjectKind::Artifact)) => {
                    artifacts.insert(name, object);
                }
                Some((name, ObjectKind::Manifest)) => {
                    manifests.insert(name);
                }
                None => {}
            }
        }
        let mut listing = Listing::default();
        for name in manifests.iter().rev() {
            listing.backups.push(Listed {
                name: name.clone(),
                artifact: artifacts.get(name).cloned(),
            });
        }
        for (name, meta) in artifacts.into_iter().rev() {
            if !manifests.contains(&name) {
                listing.incomplete.push((name, meta));
            }
        }
        Ok(listing)
    }

    /// Resolves `NAME` or `latest` to a backup that has a manifest.
    pub async fn find(&self, wanted: &str) -> anyhow::Result<Listed> {
        let listing = self.list().await?;
        if wanted == "latest" {
            return listing.backups.into_iter().next().ok_or_else(|| {
                Failure::Refused(format!("there are no complete backups at {}", self.url)).into()
            });
        }
        let name = BackupName::parse(wanted).ok_or_else(|| {
            Failure::Usage(format!(
                "{wanted:?} is not a backup name; expected latest or a name like orders-20261125T051900Z"
            ))
        })?;
        if let Some(found) = listing.backups.into_iter().find(|b| b.name == name) {
            return Ok(found);
        }
        if listing.incomplete.iter().any(|(n, _)| *n == name) {
            return Err(Failure::Damaged(format!(
                "backup {name} has no manifest {}: it is incomplete (interrupted) or its manifest was lost",
                name.manifest()
            ))
            .into());
        }
        Err(Failure::Refused(format!("there is no backup {name} at {}", self.url)).into())
    }

    /// Whether either object of `name` exists.
    pub async fn exists(&self, name: &BackupName) -> anyhow::Result<bool> {
        for file in [name.artifact(), name.manifest()] {
            match self.store.head(&self.path(&file)).await {
                Ok(_) => return Ok(true),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot read {}", self.url));
                }
            }
        }
        Ok(false)
    }

    /// Starts writing the artifact of `name`: nothing is visible until
    /// [`Upload::complete`], and [`Upload::abort`] discards what was sent.
    pub async fn start_upload(&self, name: &BackupName) -> anyhow::Result<Upload> {
        let file = name.artifact();
        let upload = self
            .store
            .put_multipart(&self.path(&file))
            .await
            .with_context(|| format!("cannot start writing {file} to {}", self.url))?;
        Ok(Upload {
            parts: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            what: format!("{file} at {}", self.url),
        })
    }

    /// A reader of the artifact `meta` (fetched in ranges).
    pub fn artifact_reader(&self, meta: &ObjectMeta) -> BufReader {
        BufReader::with_capacity(Arc::clone(&self.store), meta, READ_CHUNK)
    }

    /// Writes the manifest, which makes the backup visible.
    pub async fn put_manifest(&self, manifest: &Manifest, name: &BackupName) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(manifest).context("cannot serialize the manifest")?;
        self.store
            .put(&self.path(&name.manifest()), PutPayload::from(json))
            .await
            .with_context(|| format!("cannot write {} to {}", name.manifest(), self.url))?;
        Ok(())
    }

    /// Reads the manifest of `name`.
    pub async fn manifest(&self, name: &BackupName) -> anyhow::Result<Manifest> {
        let file = name.manifest();
        let bytes = match self.store.get(&self.path(&file)).await {
            Ok(result) => result.bytes().await,
            Err(error) => Err(error),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Failure::Damaged(format!(
                    "backup {name} has no manifest {file}: it is incomplete or its manifest was lost"
                ))
                .into());
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {file} from {}", self.url));
            }
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|error| Failure::Damaged(format!("manifest {file} is not valid: {error}")))?;
        if manifest.name != name.as_str() {
            return Err(Failure::Damaged(format!(
                "manifest {file} describes backup {}, not {name}",
                manifest.name
            ))
            .into());
        }
        Ok(manifest)
    }

    /// Removes a backup: the manifest first, so that an interruption leaves
    /// an invisible artifact rather than a visible backup without one.
    pub async fn remove(&self, name: &BackupName) -> anyhow::Result<()> {
        for file in [name.manifest(), name.artifact()] {
            match self.store.delete(&self.path(&file)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("cannot remove {file} from {}", self.url));
                }
            }
        }
        Ok(())
    }

    /// Removes the artifact of an incomplete backup.
    pub async fn remove_artifact(&self, name: &BackupName) -> anyhow::Result<()> {
        match self.store.delete(&self.path(&name.artifact())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error)
                .with_context(|| format!("cannot remove {} from {}", name.artifact(), self.url)),
        }
    }

    /// On a volume, removes the temporary files (`NAME#N`) of writers that
    /// died more than `older_than` ago. (On S3, the parts of an upload that
    /// was never completed or aborted are the bucket lifecycle rule's job.)
    pub fn remove_stale_uploads(&self, older_than: Duration) -> anyhow::Result<Vec<String>> {
        let Some(directory) = &self.directory else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        let now = SystemTime::now();
        for entry in std::fs::read_dir(directory)
            .with_context(|| format!("cannot list {}", directory.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", directory.display()))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some((object, suffix)) = file.rsplit_once('#') else {
                continue;
            };
            if suffix.is_empty()
                || !suffix.bytes().all(|b| b.is_ascii_digit())
                || BackupName::from_object(object).is_none()
            {
                continue;
            }
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(|e| anyhow!("cannot inspect {file}: {e}"))?;
            if now.duration_since(modified).unwrap_or_default() > older_than {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                removed.push(file);
            }
        }
        Ok(removed)
    }
}

/// An artifact being written: a multipart upload (on a volume, a
/// temporary file renamed into place on completion).
pub struct Upload {
    parts: WriteMultipart,
    what: String,
}

impl Upload {
    /// Publishes the artifact. On failure the upload is aborted.
    pub async fn complete(self) -> anyhow::Result<()> {
        self.parts
            .finish()
            .await
            .with_context(|| format!("cannot complete {}", self.what))?;
        Ok(())
    }

    /// Discards the parts sent so far (S3 keeps them otherwise, and bills them).
    pub async fn abort(self) -> anyhow::Result<()> {
        self.parts
            .abort()
            .await
            .with_context(|| format!("cannot abort the upload of {}", self.what))
    }
}

impl ChunkSink for Upload {
    async fn put(&mut self, chunk: Bytes) -> std::io::Result<()> {
        // Waits while PARTS_IN_FLIGHT parts are uploading: constant memory.
        self.parts
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|error| std::io::Error::other(format!("writing {}: {error}", self.what)))?;
        self.parts.put(chunk);
        Ok(())
    }
}
