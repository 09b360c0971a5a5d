//! Object-store URLs (`s3://bucket/key`, `gs://`, `az://`), carried through the pipeline as
//! paths so the DAG, the lock file and the command lines stay one type, and the clients built
//! for them from the environment.

use std::path::Path;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use url::Url;

use crate::{Result, StoreError};

/// The schemes this build reaches, as `object_store` names them.
const SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "azure"];

pub use privynet_core::manifest::is_url as is_remote;

/// An object (or a prefix) in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// `scheme://bucket/key`, without a trailing slash.
    url: String,
    /// `scheme://bucket`: one client per bucket.
    bucket_url: String,
    key: ObjectPath,
}

impl Remote {
    /// The remote place `p` names, `None` if it is a local path, an error naming it if it is a
    /// URL this build cannot reach.
    pub fn parse(p: &Path) -> Result<Option<Remote>> {
        if !is_remote(p) {
            return Ok(None);
        }
        let text = p.to_str().expect("is_remote saw valid UTF-8");
        let bad = |reason: String| StoreError::Url {
            url: text.to_string(),
            reason,
        };
        let url = Url::parse(text).map_err(|e| bad(format!("not a valid URL ({e})")))?;
        if !SCHEMES.contains(&url.scheme()) {
            return Err(bad(format!(
                "unsupported scheme `{}`; expected one of {}",
                url.scheme(),
                SCHEMES.join(", ")
            )));
        }
        let bucket = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no bucket (expected scheme://bucket/prefix)".into()))?;
        let key = ObjectPath::parse(url.path().trim_start_matches('/'))
            .map_err(|e| bad(format!("not a valid object key ({e})")))?;
        let bucket_url = format!("{}://{bucket}", url.scheme());
        Ok(Some(Remote::at(bucket_url, key)))
    }

    /// The object at `key` in the bucket `bucket_url` (`scheme://bucket`).
    pub(crate) fn at(bucket_url: String, key: ObjectPath) -> Remote {
        let url = if key.as_ref().is_empty() {
            bucket_url.clone()
        } else {
            format!("{bucket_url}/{key}")
        };
        Remote {
            url,
            bucket_url,
            key,
        }
    }

    /// `scheme://bucket/key`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn bucket_url(&self) -> &str {
        &self.bucket_url
    }

    /// The key inside the bucket.
    pub fn key(&self) -> &ObjectPath {
        &self.key
    }

    /// The object `rel` (a relative path, `/`-separated) under this prefix.
    pub fn join(&self, rel: &str) -> Remote {
        let parts = self.key.parts().chain(
            rel.split('/')
                .filter(|s| !s.is_empty())
                .map(object_store::path::PathPart::from),
        );
        Remote::at(self.bucket_url.clone(), ObjectPath::from_iter(parts))
    }

    /// The URL's scheme and bucket as folder names (for the cache).
    pub(crate) fn cache_rel(&self) -> std::path::PathBuf {
        let (scheme, bucket) = self
            .bucket_url
            .split_once("://")
            .expect("a bucket URL has a scheme");
        let mut p = std::path::PathBuf::from(scheme);
        p.push(bucket);
        for part in self.key.parts() {
            p.push(part.as_ref());
        }
        p
    }
}

/// A client for the bucket of `r`, configured from the environment, then `settings` (the same
/// keys, e.g. `AWS_ENDPOINT_URL`; the tests use them instead of changing their own
/// environment). For S3, a plain-HTTP endpoint (a self-hosted store) is allowed because the
/// user named it, and requests are path-style unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` says
/// otherwise (object_store's default), which self-hosted stores need.
pub(crate) fn build_client(
    r: &Remote,
    settings: &[(String, String)],
) -> Result<Arc<dyn ObjectStore>> {
    let err = |source| StoreError::Object {
        url: r.bucket_url.clone(),
        source,
    };
    let vars: Vec<(String, String)> = std::env::vars().chain(settings.iter().cloned()).collect();
    let get = |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let scheme = r.bucket_url.split_once("://").map_or("", |(s, _)| s);
    if scheme == "s3" || scheme == "s3a" {
        let mut b = AmazonS3Builder::new().with_url(r.bucket_url.clone());
        for (k, v) in vars.iter().filter(|(k, _)| k.starts_with("AWS_")) {
            if let Ok(key) = k.to_ascii_lowercase().parse() {
                b = b.with_config(key, v.clone());
            }
        }
        let endpoint = get("AWS_ENDPOINT_URL")
            .or(get("AWS_ENDPOINT"))
            .unwrap_or("");
        if endpoint.starts_with("http://") {
            b = b.with_allow_http(true);
        }
        if get("AWS_REGION").is_none() && get("AWS_DEFAULT_REGION").is_none() {
            b = b.with_region("us-east-1");
        }
        return Ok(Arc::new(b.build().map_err(err)?));
    }
    let url = Url::parse(&r.bucket_url).expect("a parsed remote's bucket URL is a URL");
    let (store, _) = object_store::parse_url_opts(&url, vars).map_err(err)?;
    Ok(Arc::from(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart() {
        assert!(is_remote(Path::new("s3://b/p")));
        assert!(is_remote(Path::new("gs://b")));
        assert!(!is_remote(Path::new("runs/smoke")));
        assert!(!is_remote(Path::new("/abs/path:with://colon")));
        assert!(!is_remote(Path::new("://x")));
    }

    #[test]
    fn a_remote_joins_and_names_its_bucket() {
        let r = Remote::parse(Path::new("s3://bucket/runs/smoke/"))
            .unwrap()
            .unwrap();
        assert_eq!(r.url(), "s3://bucket/runs/smoke");
        let f = r.join("fire3-d8/features.parquet");
        assert_eq!(f.url(), "s3://bucket/runs/smoke/fire3-d8/features.parquet");
        assert_eq!(f.key().as_ref(), "runs/smoke/fire3-d8/features.parquet");
        assert_eq!(
            f.cache_rel(),
            Path::new("s3/bucket/runs/smoke/fire3-d8/features.parquet")
        );
        let root = Remote::parse(Path::new("s3://bucket")).unwrap().unwrap();
        assert_eq!(root.join("x").url(), "s3://bucket/x");
    }

    #[test]
    fn bad_urls_are_named() {
        let e = Remote::parse(Path::new("ftp://b/k"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ftp://b/k") && e.contains("unsupported scheme"),
            "{e}"
        );
        let e = Remote::parse(Path::new("s3:///k")).unwrap_err().to_string();
        assert!(e.contains("no bucket"), "{e}");
    }
}
