//! Where artifacts live: a path on this machine, or an object in S3-compatible storage (or GCS,
//! Azure) through `object_store`, behind one blocking API that the stage binaries and the runner
//! share.
//!
//! A stage never writes into the bucket directly: it writes its outputs into a local staging
//! folder through the same atomic, schema-checked writers as always, and [`Output::publish`]
//! then uploads each file as one object (a single PUT, or a multipart upload completed only
//! after its last part), so a stage killed at any moment leaves no object at a final key. Every
//! object carries its artifact kind and content hash as metadata (`privynet-kind`,
//! `privynet-blake3`). Reads go through a local cache keyed by the object's ETag, which uploads
//! seed, so a stage reading what another stage on this machine just uploaded fetches nothing.
//! A local-zone artifact is refused at a remote place before anything is written.
//!
//! Credentials and endpoints come from the environment only (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AWS_REGION`, ...; `GOOGLE_*`, `AZURE_*`), never
//! from manifests, and are never logged.

mod cache;
mod interrupt;
mod location;
mod transfer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use location::{Remote, is_remote};
use object_store::ObjectStore;
use privynet_core::{ArtifactKind, Zone};

/// Why a store operation failed; each names the place it was about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url}: {reason}")]
    Url { url: String, reason: String },
    #[error("{url}: {source}")]
    Object {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to write {file} ({kind} artifact, {zone} zone) to {url}: local artifacts never leave this machine; give a local path"
    )]
    LocalToCloud {
        file: String,
        kind: String,
        zone: Zone,
        url: String,
    },
    #[error("{url}: upload aborted on signal {signal}; no object was written")]
    Interrupted { url: String, signal: i32 },
    #[error("the stage did not write {file}, which it was to upload to {url}")]
    NotWritten { file: String, url: String },
    #[error(transparent)]
    Core(#[from] privynet_core::CoreError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One file a stage writes: its name in the output folder, its kind (written as the object's
/// `privynet-kind` metadata) and its zone.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub file: String,
    pub kind: String,
    pub zone: Zone,
}

impl Artifact {
    /// A table artifact, its kind and zone from its schema.
    pub fn table(file: &str, kind: ArtifactKind) -> Result<Self> {
        Ok(Artifact {
            file: file.to_string(),
            kind: kind.name().to_string(),
            zone: kind.zone()?,
        })
    }

    /// A file that is not a table (a model, a configuration, a picture).
    pub fn file(file: &str, kind: &str, zone: Zone) -> Self {
        Artifact {
            file: file.to_string(),
            kind: kind.to_string(),
            zone,
        }
    }
}

/// What a remote object is: its size and ETag, which the lock file's stat cache keys on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub etag: String,
}

/// One object of a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub url: String,
    pub size: u64,
    /// The `privynet-kind` metadata, if the object has it.
    pub kind: Option<String>,
    /// The `privynet-blake3` metadata (the content hash), if the object has it.
    pub hash: Option<String>,
}

/// How many requests of each kind this process made, for the run's summary and the tests
/// that check a rerun fetches nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub heads: u64,
    pub gets: u64,
    pub puts: u64,
    pub bytes_down: u64,
    pub bytes_up: u64,
    /// Seconds spent waiting on requests (and writing what they brought into the cache).
    pub seconds: f64,
}

#[derive(Debug, Default)]
struct Counters {
    heads: AtomicU64,
    gets: AtomicU64,
    puts: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    micros: AtomicU64,
}

/// The stores this process talks to, a runtime to drive them and the local cache.
#[derive(Debug)]
pub struct Store {
    rt: tokio::runtime::Runtime,
    clients: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    cache: PathBuf,
    /// Settings over the environment's (`AWS_ENDPOINT_URL`, ...), for tests.
    settings: Vec<(String, String)>,
    counters: Counters,
}

/// The cache folder: `PRIVYNET_STORE_CACHE`, else `.cache/store` under the working folder.
pub fn default_cache() -> PathBuf {
    std::env::var_os("PRIVYNET_STORE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache").join("store"))
}

impl Store {
    /// A store whose downloads and staged outputs live under `cache`.
    pub fn new(cache: PathBuf) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread tokio runtime should start");
        Store {
            rt,
            clients: Mutex::new(HashMap::new()),
            cache,
            settings: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// The same store with `settings` over the environment's, e.g. `AWS_ENDPOINT_URL`.
    pub fn with_settings(mut self, settings: Vec<(String, String)>) -> Self {
        self.settings = settings;
        self
    }

    /// A store with the [`default_cache`].
    pub fn from_env() -> Self {
        Self::new(default_cache())
    }

    /// The requests made so far.
    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        Counts {
            heads: c.heads.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            seconds: c.micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// A local path for reading `p`: `p` itself when it is local, else the cached copy of the
    /// object, downloaded unless the cache holds its current ETag.
    pub fn fetch(&self, p: &Path) -> Result<PathBuf> {
        match Remote::parse(p)? {
            None => Ok(p.to_path_buf()),
            Some(r) => self.fetch_remote(&r),
        }
    }

    /// Like [`Store::fetch`] for a remote `p` whose [`Store::stat`] the caller has just taken:
    /// no second HEAD. A local `p` is returned as it is.
    pub fn fetch_stat(&self, p: &Path, stat: &Stat) -> Result<PathBuf> {
        match Remote::parse(p)? {
            None => Ok(p.to_path_buf()),
            Some(r) => self.fetch_at(&r, stat),
        }
    }

    /// Like [`Store::fetch`] for an optional argument.
    pub fn fetch_opt(&self, p: Option<&Path>) -> Result<Option<PathBuf>> {
        p.map(|p| self.fetch(p)).transpose()
    }

    /// The size and ETag of a remote object, `None` if there is none at that key (or `p` is
    /// local: the caller stats local files itself).
    pub fn stat(&self, p: &Path) -> Result<Option<Stat>> {
        match Remote::parse(p)? {
            None => Ok(None),
            Some(r) => Ok(self.head(&r)?.map(|m| Stat {
                size: m.size,
                etag: m.e_tag.unwrap_or_default(),
            })),
        }
    }

    /// Where a stage writes the files of `artifacts` that belong at the folder `target`: the
    /// folder itself when it is local, else a staging folder that [`Output::publish`] uploads.
    /// A local-zone artifact at a remote target is refused here, before the stage runs.
    pub fn output_dir(&self, target: &Path, artifacts: Vec<Artifact>) -> Result<Output<'_>> {
        self.output(target, artifacts, None)
    }

    /// Like [`Store::output_dir`] for a single file `target`: [`Output::path`] is where the
    /// stage writes it.
    pub fn output_file(&self, target: &Path, kind: &str, zone: Zone) -> Result<Output<'_>> {
        let (parent, name) = split_file(target)?;
        self.output(
            &parent,
            vec![Artifact::file(&name, kind, zone)],
            Some(&name),
        )
    }

    /// Like [`Store::output_file`] for a table artifact, its kind and zone from its schema.
    pub fn output_table(&self, target: &Path, kind: ArtifactKind) -> Result<Output<'_>> {
        let (parent, name) = split_file(target)?;
        self.output(&parent, vec![Artifact::table(&name, kind)?], Some(&name))
    }

    /// A single file's staging folder is named after the file, so that stages writing other
    /// files beside it never share (and never remove) one another's staging folders.
    fn output(
        &self,
        target: &Path,
        artifacts: Vec<Artifact>,
        file: Option<&str>,
    ) -> Result<Output<'_>> {
        let remote = Remote::parse(target)?;
        let Some(r) = remote else {
            return Ok(Output {
                store: self,
                remote: None,
                dir: target.to_path_buf(),
                artifacts,
            });
        };
        refuse_local(&r, &artifacts)?;
        let staging = self.staging_dir(&file.map_or_else(|| r.clone(), |f| r.join(f)));
        std::fs::create_dir_all(&staging).map_err(|e| io_err(&staging, e))?;
        Ok(Output {
            store: self,
            remote: Some(r),
            dir: staging,
            artifacts,
        })
    }

    /// Every object under the prefix `p`, with its kind metadata.
    pub fn list(&self, p: &Path) -> Result<Vec<Listed>> {
        let r = Remote::parse(p)?.ok_or_else(|| StoreError::Url {
            url: p.display().to_string(),
            reason: "not an object-store URL (s3://, gs://, az://)".into(),
        })?;
        self.list_remote(&r)
    }

    /// The client for a remote place, built once per bucket from the environment.
    fn client(&self, r: &Remote) -> Result<Arc<dyn ObjectStore>> {
        let mut clients = self
            .clients
            .lock()
            .expect("the client map is never poisoned");
        if let Some(c) = clients.get(r.bucket_url()) {
            return Ok(c.clone());
        }
        let c = location::build_client(r, &self.settings)?;
        clients.insert(r.bucket_url().to_string(), c.clone());
        Ok(c)
    }
}

/// Says at the end of every process that used a store what the store cost it, so a run's logs
/// tell how much of its time went to the cloud zone being remote.
impl Drop for Store {
    fn drop(&mut self) {
        let c = self.counts();
        if c.heads + c.gets + c.puts > 0 {
            tracing::info!(
                "object store: {} HEAD, {} GET ({} bytes), {} PUT ({} bytes), {:.2} s",
                c.heads,
                c.gets,
                c.bytes_down,
                c.puts,
                c.bytes_up,
                c.seconds
            );
        }
    }
}

/// The files a stage writes for one target, and where it writes them.
#[derive(Debug)]
pub struct Output<'a> {
    store: &'a Store,
    remote: Option<Remote>,
    dir: PathBuf,
    artifacts: Vec<Artifact>,
}

impl Output<'_> {
    /// The folder the stage writes into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the stage writes the first (for [`Store::output_file`], the only) artifact.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.artifacts[0].file)
    }

    /// Whether the target is remote (the files are staged and uploaded by `publish`).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Uploads every artifact to its key, each as one atomic object with its metadata, then
    /// moves the staged files into the cache and removes the staging folder. Nothing to do for
    /// a local target.
    pub fn publish(self) -> Result<()> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        for a in &self.artifacts {
            let staged = self.dir.join(&a.file);
            let dest = remote.join(&a.file);
            if !staged.is_file() {
                return Err(StoreError::NotWritten {
                    file: a.file.clone(),
                    url: dest.url().to_string(),
                });
            }
            self.store.upload(&staged, &dest, &a.kind)?;
        }
        std::fs::remove_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))
    }
}

fn refuse_local(r: &Remote, artifacts: &[Artifact]) -> Result<()> {
    match artifacts.iter().find(|a| a.zone == Zone::Local) {
        Some(a) => Err(StoreError::LocalToCloud {
            file: a.file.clone(),
            kind: a.kind.clone(),
            zone: a.zone,
            url: r.join(&a.file).url().to_string(),
        }),
        None => Ok(()),
    }
}

/// A file target's folder and name.
fn split_file(target: &Path) -> Result<(PathBuf, String)> {
    let name = target.file_name().and_then(|n| n.to_str());
    match (target.parent(), name) {
        (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name.to_string())),
        _ => Err(StoreError::Url {
            url: target.display().to_string(),
            reason: "expected a file path or object key".into(),
        }),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}
