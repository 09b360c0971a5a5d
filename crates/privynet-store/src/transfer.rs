//! The requests: HEAD for a stat, GET into the cache, PUT (single or multipart) from a staged
//! file, LIST with each object's kind.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::StreamExt;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectMeta, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};

use crate::{Listed, Remote, Result, Store, StoreError, io_err};

/// Files up to this size go up in one PUT; larger ones as a multipart upload of parts this
/// size (S3's parts must be at least 5 MiB), which the store shows only once completed.
const PART: usize = 16 << 20;

/// The metadata key of the artifact kind (`x-amz-meta-privynet-kind` on S3).
pub const KIND_KEY: &str = "privynet-kind";
/// The metadata key of the blake3 content hash.
pub const HASH_KEY: &str = "privynet-blake3";

fn object_err(r: &Remote) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
    move |source| StoreError::Object {
        url: r.url().to_string(),
        source,
    }
}

impl Store {
    /// Adds the time since `start` to the time spent on requests.
    fn spent(&self, start: Instant) {
        let micros = start.elapsed().as_micros() as u64;
        self.counters.micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The object's metadata, `None` if there is none at its key.
    pub(crate) fn head(&self, r: &Remote) -> Result<Option<ObjectMeta>> {
        let client = self.client(r)?;
        self.counters.heads.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let got = self.rt.block_on(client.head(r.key()));
        self.spent(start);
        match got {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(object_err(r)(e)),
        }
    }

    /// The cached copy of `r`, downloaded first unless the cache holds its current ETag.
    pub(crate) fn fetch_remote(&self, r: &Remote) -> Result<std::path::PathBuf> {
        let meta = self.head(r)?.ok_or_else(|| StoreError::Url {
            url: r.url().to_string(),
            reason: "no such object".into(),
        })?;
        let stat = crate::Stat {
            size: meta.size,
            etag: meta.e_tag.unwrap_or_default(),
        };
        self.fetch_at(r, &stat)
    }

    /// The cached copy of `r`, which a HEAD just found at `stat`: downloaded unless the cache
    /// holds that ETag. Callers that have the stat already save a request.
    pub(crate) fn fetch_at(&self, r: &Remote, stat: &crate::Stat) -> Result<std::path::PathBuf> {
        if let Some(hit) = self.cache_hit(r, &stat.etag, stat.size) {
            privynet_core::provenance::note_origin(&hit, r.url());
            return Ok(hit);
        }
        tracing::info!("fetching {} ({} bytes)", r.url(), stat.size);
        self.forget(r)?;
        let path = self.cached_path(r);
        let got = self.download(r, &path)?;
        self.remember(r, &got)?;
        privynet_core::provenance::note_origin(&path, r.url());
        Ok(path)
    }

    /// Streams `r` into `dest` atomically; returns the ETag of what it read.
    fn download(&self, r: &Remote, dest: &Path) -> Result<String> {
        let client = self.client(r)?;
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        let mut file = privynet_core::io::AtomicFile::create(dest)?;
        let start = Instant::now();
        let etag = self.rt.block_on(async {
            let got = client.get(r.key()).await.map_err(object_err(r))?;
            let etag = got.meta.e_tag.clone().unwrap_or_default();
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(object_err(r))?;
                self.counters
                    .bytes_down
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                file.file().write_all(&chunk).map_err(|e| io_err(dest, e))?;
            }
            Ok::<_, StoreError>(etag)
        })?;
        file.commit()?;
        self.spent(start);
        Ok(etag)
    }

    /// Uploads `staged` to `dest` as one object with its kind and content hash, then keeps the
    /// staged file as the cache's copy of it.
    pub(crate) fn upload(&self, staged: &Path, dest: &Remote, kind: &str) -> Result<()> {
        let hash = privynet_core::hash::hash_path(staged)?;
        let size = std::fs::metadata(staged)
            .map_err(|e| io_err(staged, e))?
            .len();
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(KIND_KEY.into()),
            kind.to_string().into(),
        );
        attributes.insert(Attribute::Metadata(HASH_KEY.into()), hash.into());
        attributes.insert(Attribute::ContentType, content_type(staged));
        tracing::info!("uploading {} ({size} bytes)", dest.url());
        let start = Instant::now();
        let etag = if size as usize <= PART {
            self.put_whole(staged, dest, attributes)?
        } else {
            self.put_parts(staged, dest, attributes)?
        };
        self.spent(start);
        self.counters.bytes_up.fetch_add(size, Ordering::Relaxed);
        self.forget(dest)?;
        let cached = self.cached_path(dest);
        if let Some(dir) = cached.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        std::fs::rename(staged, &cached).map_err(|e| io_err(&cached, e))?;
        self.remember(dest, &etag)
    }

    fn put_whole(&self, staged: &Path, dest: &Remote, attributes: Attributes) -> Result<String> {
        let bytes = std::fs::read(staged).map_err(|e| io_err(staged, e))?;
        let client = self.client(dest)?;
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        let opts = PutOptions {
            attributes,
            ..Default::default()
        };
        let put = client.put_opts(dest.key(), PutPayload::from(bytes), opts);
        let done = self.rt.block_on(put).map_err(object_err(dest))?;
        Ok(done.e_tag.unwrap_or_default())
    }

    /// A multipart upload; any error aborts it, and a killed process never completes it, so
    /// the key shows nothing until the last part is in. A termination signal aborts it too
    /// (see [`crate::interrupt`]), and the process then dies of the signal.
    fn put_parts(&self, staged: &Path, dest: &Remote, attributes: Attributes) -> Result<String> {
        let client = self.client(dest)?;
        let mut file = std::fs::File::open(staged).map_err(|e| io_err(staged, e))?;
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        let uploading = crate::interrupt::Uploading::begin();
        let etag = self.rt.block_on(async {
            let opts = PutMultipartOptions {
                attributes,
                ..Default::default()
            };
            let upload = client.put_multipart_opts(dest.key(), opts);
            let upload = upload.await.map_err(object_err(dest))?;
            let mut parts = WriteMultipart::new_with_chunk_size(upload, PART);
            let sent = send_parts(&mut file, &mut parts, staged, dest, &uploading).await;
            if let Err(e) = sent {
                let aborted = parts.abort().await;
                if let Err(a) = aborted {
                    tracing::warn!("{}: aborting the upload failed: {a}", dest.url());
                }
                return Err(e);
            }
            let done = parts.finish().await.map_err(object_err(dest))?;
            Ok::<_, StoreError>(done.e_tag.unwrap_or_default())
        })?;
        // What a completed multipart upload reports as its ETag need not be what HEAD says
        // (radosgw's differ); the cache is keyed by HEAD's, or the next reader would download
        // the object again.
        let head = self.head(dest)?.and_then(|m| m.e_tag);
        Ok(head.unwrap_or(etag))
    }

    /// Every object under `r` with its kind (one HEAD-like GET per object for the metadata).
    pub(crate) fn list_remote(&self, r: &Remote) -> Result<Vec<Listed>> {
        let client = self.client(r)?;
        let prefix = (!r.key().as_ref().is_empty()).then_some(r.key());
        let metas: Vec<ObjectMeta> = self
            .rt
            .block_on(async {
                let all: Vec<_> = client.list(prefix).collect().await;
                all.into_iter().collect::<Result<_, _>>()
            })
            .map_err(object_err(r))?;
        metas.into_iter().map(|m| self.listed(r, m)).collect()
    }

    fn listed(&self, r: &Remote, m: ObjectMeta) -> Result<Listed> {
        let object = Remote::at(r.bucket_url().to_string(), m.location.clone());
        let client = self.client(r)?;
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        self.counters.heads.fetch_add(1, Ordering::Relaxed);
        let got = self.rt.block_on(client.get_opts(&m.location, opts));
        let got = got.map_err(object_err(&object))?;
        let meta = |key: &'static str| {
            let v = got.attributes.get(&Attribute::Metadata(key.into()));
            v.map(|v| v.as_ref().to_string())
        };
        Ok(Listed {
            url: object.url().to_string(),
            size: m.size,
            kind: meta(KIND_KEY),
            hash: meta(HASH_KEY),
        })
    }
}

/// Reads `file` part by part into the upload, stopping between parts when a termination
/// signal has come.
async fn send_parts(
    file: &mut std::fs::File,
    parts: &mut WriteMultipart,
    staged: &Path,
    dest: &Remote,
    uploading: &crate::interrupt::Uploading,
) -> Result<()> {
    loop {
        if let Some(signal) = uploading.requested() {
            return Err(StoreError::Interrupted {
                url: dest.url().to_string(),
                signal,
            });
        }
        parts
            .wait_for_capacity(4)
            .await
            .map_err(|source| StoreError::Object {
                url: staged.display().to_string(),
                source,
            })?;
        let mut buf = vec![0u8; PART];
        let n = read_full(file, &mut buf).map_err(|e| io_err(staged, e))?;
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        parts.put(bytes::Bytes::from(buf));
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn content_type(p: &Path) -> AttributeValue {
    let t = match p.extension().and_then(|e| e.to_str()) {
        Some("parquet") => "application/vnd.apache.parquet",
        Some("arrow") => "application/vnd.apache.arrow.file",
        Some("json") => "application/json",
        Some("onnx") => "application/octet-stream",
        _ => "application/octet-stream",
    };
    t.into()
}
