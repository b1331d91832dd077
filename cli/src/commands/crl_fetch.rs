//! Fetching the CRLs policies name by URL (`spec.revocation.crlUrls`): the CLI's side of
//! the compiler's `Loader::fetch`. The compiler verifies what is fetched against
//! `crlIssuers`; this module only gets bytes, bounded in size and time, with conditional
//! requests, and remembers the last good copy of each URL (optionally in a cache directory).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use certgate_compiler::{Input, Loader};
use sha2::Digest;

/// The largest CRL accepted, in bytes: a bigger response is refused, not truncated.
pub const MAX_CRL_BYTES: u64 = 16 * 1024 * 1024;
/// The whole fetch (connect, TLS, head and body) must end within this time: a trickled
/// response is refused.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// A CRL is fetched again this long before its `nextUpdate`.
pub const NEXT_UPDATE_MARGIN: Duration = Duration::from_secs(300);
/// After a failed fetch, the URL is tried again after this long (or `--crl-refresh`, if
/// shorter).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// The CRL fetching flags shared by `compile`, `check` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct CrlArgs {
    /// Trust only these CA certificates (PEM) for https CRL URLs (repeatable); by default
    /// the Mozilla root set built into certgate.
    #[arg(long = "crl-ca", value_name = "FILE")]
    pub crl_ca: Vec<PathBuf>,
    /// Keep the last good copy of each CRL URL, with its ETag and Last-Modified, in DIR;
    /// used for conditional requests and, in `serve`, as the last good copy after a restart.
    #[arg(long = "crl-cache", value_name = "DIR")]
    pub crl_cache: Option<PathBuf>,
    /// The largest CRL accepted, in bytes.
    #[arg(long = "crl-max-bytes", value_name = "BYTES", default_value_t = MAX_CRL_BYTES, value_parser = clap::value_parser!(u64).range(1..=1_073_741_824))]
    pub crl_max_bytes: u64,
    /// Deadline of one whole CRL fetch, in milliseconds.
    #[arg(long = "crl-timeout-ms", value_name = "MS", default_value_t = millis(FETCH_TIMEOUT), value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub crl_timeout_ms: u64,
}

impl Default for CrlArgs {
    fn default() -> Self {
        CrlArgs {
            crl_ca: Vec::new(),
            crl_cache: None,
            crl_max_bytes: MAX_CRL_BYTES,
            crl_timeout_ms: millis(FETCH_TIMEOUT),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why a fetch failed: the `reason` label of `certgate_feed_crl_fetch_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Connection, DNS or TLS failure.
    Network,
    /// The deadline passed (a slow or trickled response).
    Timeout,
    /// The body exceeded the size cap.
    TooLarge,
    /// A status other than 200 or 304 (redirects included: they are not followed).
    Status,
    /// Fetched, but the compiler refused it (signature, malformed, unsupported).
    Verify,
    /// Fetched and signed, but older than the last good copy (a replay).
    Rollback,
}

impl Failure {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Network => "network",
            Failure::Timeout => "timeout",
            Failure::TooLarge => "too_large",
            Failure::Status => "status",
            Failure::Verify => "verify",
            Failure::Rollback => "rollback",
        }
    }
}

/// A copy of one URL's CRL and the validators it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub bytes: Vec<u8>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// What one fetch gave.
#[derive(Debug)]
pub enum Fetched {
    /// `304 Not Modified`: the copy sent as validator is current.
    NotModified,
    /// A new body (not yet verified).
    New(Copy),
}

/// An HTTP(S) client bounded in size and time that follows no redirect.
pub struct Fetcher {
    agent: ureq::Agent,
    max_bytes: u64,
    cache: Option<PathBuf>,
}

impl Fetcher {
    /// Builds the client from the flags; unreadable `--crl-ca` files are a usage error.
    pub fn new(args: &CrlArgs) -> anyhow::Result<Self> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if !args.crl_ca.is_empty() {
            let mut roots = Vec::new();
            for f in &args.crl_ca {
                let pem = std::fs::read(f)
                    .with_context(|| format!("cannot read --crl-ca `{}`", f.display()))?;
                for item in ureq::tls::parse_pem(&pem) {
                    if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                        roots.push(c);
                    }
                }
            }
            if roots.is_empty() {
                anyhow::bail!("--crl-ca holds no PEM certificate");
            }
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)));
        }
        if let Some(dir) = &args.crl_cache {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --crl-cache `{}`", dir.display()))?;
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(args.crl_timeout_ms)))
            // A redirect is returned as is, and refused as a status: a CRL URL names
            // where the CRL is, and a redirect to elsewhere is not followed blindly.
            .max_redirects(0)
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Fetcher {
            agent,
            max_bytes: args.crl_max_bytes,
            cache: args.crl_cache.clone(),
        })
    }

    /// One GET of `url`, conditional on `last` (its ETag and Last-Modified).
    pub fn get(&self, url: &str, last: Option<&Copy>) -> Result<Fetched, (Failure, String)> {
        let mut req = self.agent.get(url);
        if let Some(c) = last {
            if let Some(e) = &c.etag {
                req = req.header("If-None-Match", e);
            }
            if let Some(m) = &c.last_modified {
                req = req.header("If-Modified-Since", m);
            }
        }
        let mut resp = req.call().map_err(classify)?;
        let status = resp.status().as_u16();
        if status == 304 && last.is_some() {
            return Ok(Fetched::NotModified);
        }
        if status != 200 {
            let what = if (300..400).contains(&status) {
                " (redirects are not followed: name the final URL in `crlUrls`)"
            } else {
                ""
            };
            return Err((
                Failure::Status,
                format!("the server answered {status}{what}"),
            ));
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header("etag");
        let last_modified = header("last-modified");
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(self.max_bytes)
            .read_to_vec()
            .map_err(classify)?;
        Ok(Fetched::New(Copy {
            bytes,
            etag,
            last_modified,
        }))
    }

    fn cache_files(&self, url: &str) -> Option<(PathBuf, PathBuf)> {
        let dir = self.cache.as_ref()?;
        let name = hex(&sha2::Sha256::digest(url.as_bytes()));
        Some((
            dir.join(format!("{name}.crl")),
            dir.join(format!("{name}.json")),
        ))
    }

    /// The cached copy of `url`, if the cache directory holds one.
    pub fn cached(&self, url: &str) -> Option<Copy> {
        let (crl, meta) = self.cache_files(url)?;
        let bytes = std::fs::read(crl).ok()?;
        let meta: serde_json::Value = std::fs::read(meta)
            .ok()
            .and_then(|m| serde_json::from_slice(&m).ok())?;
        if meta["url"].as_str() != Some(url) {
            return None;
        }
        let field = |k: &str| meta[k].as_str().map(str::to_string);
        Some(Copy {
            bytes,
            etag: field("etag"),
            last_modified: field("lastModified"),
        })
    }

    /// Stores a verified copy (file then validators, each written whole and renamed).
    pub fn store(&self, url: &str, copy: &Copy) -> std::io::Result<()> {
        let Some((crl, meta)) = self.cache_files(url) else {
            return Ok(());
        };
        let m =
            serde_json::json!({"url": url, "etag": copy.etag, "lastModified": copy.last_modified});
        write_atomic(&crl, &copy.bytes)?;
        write_atomic(&meta, m.to_string().as_bytes())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn classify(e: ureq::Error) -> (Failure, String) {
    let kind = match &e {
        ureq::Error::Timeout(_) => Failure::Timeout,
        ureq::Error::BodyExceedsLimit(_) => Failure::TooLarge,
        ureq::Error::TooManyRedirects | ureq::Error::StatusCode(_) => Failure::Status,
        _ => Failure::Network,
    };
    let msg = match kind {
        Failure::TooLarge => "the CRL is larger than --crl-max-bytes".to_string(),
        Failure::Timeout => "the fetch did not finish within --crl-timeout-ms".to_string(),
        _ => e.to_string(),
    };
    (kind, msg)
}

/// One URL's state across compilations (in `serve`).
#[derive(Debug, Default)]
pub struct UrlState {
    /// The last copy that went into a published table (or came from the cache).
    pub good: Option<Copy>,
    /// A copy fetched in this round, not yet known to verify.
    pub candidate: Option<Copy>,
    /// When to fetch again.
    pub due: Option<Instant>,
    /// Whether the cache directory was read for this URL (once: a cached copy that is
    /// refused later is not read back).
    pub cache_read: bool,
}

/// The loader `compile`, `check` and `serve` compile with: files relative to the policy,
/// URLs through a [`Fetcher`]. With `fetch` unset, URLs get their last good copy only.
pub struct FetchingLoader<'a> {
    /// Reads the files the policies name.
    pub files: &'a dyn Loader,
    pub fetcher: &'a Fetcher,
    pub urls: RefCell<&'a mut HashMap<String, UrlState>>,
    /// Whether URLs that are due are fetched in this compilation.
    pub fetch: bool,
    /// Failures of this compilation, for the caller to count and log.
    pub failures: RefCell<Vec<(String, Failure, String)>>,
    /// The refresh interval (`--crl-refresh`); `None` fetches every compilation.
    pub refresh: Option<Duration>,
}

impl Loader for FetchingLoader<'_> {
    fn load(&self, policy: &Input, path: &str) -> Result<Vec<u8>, String> {
        self.files.load(policy, path)
    }

    fn fetch(&self, _policy: &Input, url: &str) -> Result<Vec<u8>, String> {
        let mut urls = self.urls.borrow_mut();
        let state = urls.entry(url.to_string()).or_default();
        if !state.cache_read {
            state.cache_read = true;
            state.good = self.fetcher.cached(url);
        }
        if let Some(c) = &state.candidate {
            return Ok(c.bytes.clone());
        }
        let due = state.due.is_none_or(|d| d <= Instant::now());
        if self.fetch && due {
            let retry = self
                .refresh
                .map_or(RETRY_AFTER_FAILURE, |r| r.min(RETRY_AFTER_FAILURE));
            match self.fetcher.get(url, state.good.as_ref()) {
                Ok(Fetched::New(copy)) => {
                    let bytes = copy.bytes.clone();
                    state.candidate = Some(copy);
                    state.due = None;
                    return Ok(bytes);
                }
                Ok(Fetched::NotModified) => state.due = None,
                Err((kind, msg)) => {
                    state.due = Some(Instant::now() + retry);
                    self.failures
                        .borrow_mut()
                        .push((url.to_string(), kind, msg.clone()));
                    if state.good.is_none() {
                        return Err(msg);
                    }
                }
            }
        }
        match &state.good {
            Some(c) => Ok(c.bytes.clone()),
            None => Err("no copy of it has been fetched yet".into()),
        }
    }
}

/// When a URL whose copy says `next_update` (Unix seconds) is fetched next: before its
/// `nextUpdate` with [`NEXT_UPDATE_MARGIN`], or after `refresh`, whichever is sooner.
pub fn next_due(next_update: Option<i64>, refresh: Option<Duration>, now: i64) -> Instant {
    let by_crl = next_update.map(|n| {
        let secs = n
            .saturating_sub(now)
            .saturating_sub(i64::try_from(NEXT_UPDATE_MARGIN.as_secs()).unwrap_or(0));
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    });
    let wait = match (by_crl, refresh) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(Duration::from_secs(3600)),
    };
    // Never a busy loop when the CRL is already past its margin.
    Instant::now()
        + wait.max(Duration::from_secs(10).min(refresh.unwrap_or(Duration::from_secs(10))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_before_next_update_or_at_the_refresh_whichever_is_sooner() {
        let now = 1_000_000;
        let at = |next: Option<i64>, refresh: Option<u64>| {
            let due = next_due(next, refresh.map(Duration::from_secs), now);
            due.saturating_duration_since(Instant::now()).as_secs_f64()
        };
        // nextUpdate in an hour: 5 minutes before it.
        assert!((at(Some(now + 3600), None) - 3300.0).abs() < 2.0);
        // a shorter refresh wins
        assert!((at(Some(now + 3600), Some(60)) - 60.0).abs() < 2.0);
        // a CRL already inside its margin is not fetched in a busy loop
        assert!((at(Some(now + 10), None) - 10.0).abs() < 2.0);
        assert!((at(Some(now - 10), Some(1)) - 1.0).abs() < 1.0);
    }
}
