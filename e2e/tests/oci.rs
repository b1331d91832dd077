//! `certgate package` against real parts: Debian's `docker-registry` on 127.0.0.1 and
//! Debian's `skopeo` push both image forms; the test then pulls each manifest and its blobs
//! back over the registry API with the Accept header istio-agent's client sends and runs
//! istio-agent's acceptance rules on them, ported below with the upstream function each rule
//! comes from. The module it extracts must be the built filter module, byte for byte, and a
//! second `certgate package` must give the same digests.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certgate_e2e::tools::Tools;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How long the registry may take to answer `/v2/` on a loaded machine.
const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Per-request socket timeout for the registry API.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// The Makefile target that installs both tools.
const INSTALL: &str = "make oci-tools";
const TAG: &str = "0.1.0";

// ---- istio-agent's rules -------------------------------------------------------------------

/// The Accept header of go-containerregistry's `remote.Get`, which istio-agent's
/// `ImageFetcher.PrepareFetch` (istio `pkg/wasm/imagefetcher.go`) calls: `allManifestMediaTypes`
/// in go-containerregistry `pkg/v1/remote/descriptor.go` (schema 1, then
/// `acceptableImageMediaTypes`, then `acceptableIndexMediaTypes`).
const ISTIO_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v1+json,\
application/vnd.docker.distribution.manifest.v1+prettyjws,\
application/vnd.docker.distribution.manifest.v2+json,\
application/vnd.oci.image.manifest.v1+json,\
application/vnd.docker.distribution.manifest.list.v2+json,\
application/vnd.oci.image.index.v1+json";

/// `features.MaxWasmBinarySizeBytes` (istio `pilot/pkg/features/pilot.go`,
/// `ISTIO_WASM_MAX_BINARY_SIZE_BYTES`, default 256 MiB): the fetcher reads at most this much.
const ISTIO_MAX_WASM_BYTES: usize = 256 * 1024 * 1024;

/// Which branch of `PrepareFetch`'s binary fetcher accepted the image.
#[derive(Debug, PartialEq, Eq)]
enum Variant {
    /// `extractOCIStandardImage`: the compat variant with an OCI tar+gzip layer.
    Compat,
    /// `extractOCIArtifactImage`: the oci (artifact) variant.
    Artifact,
}

/// istio-agent's decision on a pulled image: the module it would hand to Envoy, or why it
/// refuses. `blob` fetches a blob by digest; like go-containerregistry's remote layers
/// (`pkg/v1/remote`, reads wrapped in `verify.ReadCloser`), every blob is checked against its
/// descriptor's digest and size before use.
fn istio_extract(
    content_type: &str,
    manifest: &Value,
    blob: &dyn Fn(&str) -> Vec<u8>,
) -> Result<(Vec<u8>, Variant), String> {
    // `remote.Descriptor.Image()` (go-containerregistry `pkg/v1/remote/descriptor.go`): only
    // the two image manifest types are images; an index would be resolved per platform and
    // schema 1 is refused.
    let image_types = [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ];
    if !image_types.contains(&content_type) {
        return Err(format!("not an image manifest: `{content_type}`"));
    }
    let layers = manifest["layers"]
        .as_array()
        .ok_or("manifest without layers")?;
    let fetch = |d: &Value| -> Result<Vec<u8>, String> {
        let digest = d["digest"].as_str().ok_or("descriptor without digest")?;
        let bytes = blob(digest);
        let got = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        if got != digest {
            return Err(format!("blob {digest} has digest {got}"));
        }
        if Some(bytes.len() as u64) != d["size"].as_u64() {
            return Err(format!("blob {digest} has size {}", bytes.len()));
        }
        Ok(bytes)
    };
    // `PrepareFetch`: a Docker schema 2 manifest goes to `extractDockerImage`; every other
    // manifest is tried as compat (`extractOCIStandardImage`), then as the oci variant
    // (`extractOCIArtifactImage`).
    if manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json" {
        return Err("docker schema 2 images are not what certgate writes".into());
    }
    let compat = (|| -> Result<Vec<u8>, String> {
        // `extractOCIStandardImage`: at least one layer; the LAST layer's media type must be
        // `types.OCILayer`; its gzip stream is a tar archive holding `plugin.wasm`.
        let last = layers
            .last()
            .ok_or("number of layers must be greater than zero")?;
        let mt = last["mediaType"].as_str().unwrap_or_default();
        if mt != "application/vnd.oci.image.layer.v1.tar+gzip" {
            return Err(format!("invalid media type {mt}"));
        }
        extract_wasm_plugin_binary(&fetch(last)?)
    })();
    let compat_err = match compat {
        Ok(module) => return Ok((module, Variant::Compat)),
        Err(e) => e,
    };
    // `extractOCIArtifactImage`: exactly two layers; the first whose media type is
    // `application/vnd.module.wasm.content.layer.v1+wasm` is the raw module (read with
    // `Compressed()`, not decompressed), limited to `MaxWasmBinarySizeBytes`.
    if layers.len() != 2 {
        return Err(format!(
            "compat: {compat_err}; oci: number of layers must be 2 but got {}",
            layers.len()
        ));
    }
    let layer = layers
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.module.wasm.content.layer.v1+wasm")
        .ok_or_else(|| format!("compat: {compat_err}; oci: no wasm content layer"))?;
    let mut module = fetch(layer)?;
    module.truncate(ISTIO_MAX_WASM_BYTES);
    Ok((module, Variant::Artifact))
}

/// `extractWasmPluginBinary` (istio `pkg/wasm/imagefetcher.go`): gunzip, read the tar stream
/// (at most `MaxWasmBinarySizeBytes` of it) entry by entry, and return the first entry whose
/// base name (`filepath.Base`) is `plugin.wasm`.
fn extract_wasm_plugin_binary(gz: &[u8]) -> Result<Vec<u8>, String> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .take(ISTIO_MAX_WASM_BYTES as u64)
        .read_to_end(&mut tar)
        .map_err(|e| format!("failed to parse layer as tar.gz: {e}"))?;
    let mut at = 0usize;
    // Go's `archive/tar` reader: 512-byte headers; two zero blocks (or the end) finish it.
    while let Some(h) = tar.get(at..at + 512) {
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |r: std::ops::Range<usize>| {
            let f = &h[r];
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).trim().to_string()
        };
        let stored: u32 = u32::from_str_radix(&field(148..156), 8)
            .map_err(|_| "tar header without checksum".to_string())?;
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        if sum != stored {
            return Err("archive/tar: invalid tar header".into());
        }
        let mut name = field(0..100);
        if &h[257..263] == b"ustar\0" && !field(345..500).is_empty() {
            name = format!("{}/{name}", field(345..500));
        }
        let size = usize::from_str_radix(&field(124..136), 8)
            .map_err(|_| "tar header with a bad size".to_string())?;
        let data = at + 512;
        let base = name.rsplit('/').next().unwrap_or_default();
        if base == "plugin.wasm" {
            return tar
                .get(data..data + size)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| "failed to read plugin.wasm: unexpected EOF".to_string());
        }
        at = data + size.div_ceil(512) * 512;
    }
    Err("plugin.wasm not found in the archive".into())
}

// ---- real parts ----------------------------------------------------------------------------

/// A Debian tool, or a failure that says how to install it (never a skip).
pub(crate) fn debian_tool(name: &str) -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: run `{INSTALL}` (Debian's docker-registry and skopeo)")
        })
}

/// `docker-registry serve` on 127.0.0.1 with its storage in a temporary directory; killed on
/// drop so no registry outlives the test.
pub(crate) struct Registry {
    child: Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub(crate) fn start() -> Registry {
        let bin = debian_tool("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("certgate-registry-")
            .tempdir()
            .expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut registry = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
        loop {
            if let Ok(r) = registry.get("/v2/", None) {
                assert_eq!(r.status, 200, "registry /v2/ answered {}", r.status);
                break;
            }
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited with {status}: {}", registry.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer within {REGISTRY_START_TIMEOUT:?}: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }

    /// One plain-HTTP GET (HTTP/1.0, so the body is neither chunked nor kept alive).
    pub(crate) fn get(&self, path: &str, accept: Option<&str>) -> std::io::Result<Response> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(HTTP_TIMEOUT))?;
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n{accept}\r\n",
            self.port
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of headers"))?;
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(Response {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Vec<u8>,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `certgate package --format json`; returns form -> manifest digest.
fn package(certgate: &Path, wasm: &Path, out: &Path) -> BTreeMap<String, String> {
    let o = Command::new(certgate)
        .args(["package", "--format", "json", "--tag", TAG, "--wasm"])
        .arg(wasm)
        .arg("--out")
        .arg(out)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run certgate package");
    assert!(
        o.status.success(),
        "certgate package failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("package json");
    v["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            (
                i["form"].as_str().unwrap().to_string(),
                i["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every file of a layout directory, by relative path.
pub(crate) fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read layout") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn oci_images_pass_istio_agents_rules_after_a_real_registry_round_trip() {
    let tools = Tools::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let skopeo = debian_tool("skopeo");
    let registry = Registry::start();
    let module = std::fs::read(&tools.filter_wasm).expect("read the filter module");
    let scratch = tempfile::Builder::new()
        .prefix("certgate-oci-")
        .tempdir()
        .expect("temp dir");

    // Rebuilding gives the same digests and the same bytes.
    let (a, b) = (scratch.path().join("a"), scratch.path().join("b"));
    let digests = package(&tools.certgate, &tools.filter_wasm, &a);
    assert_eq!(digests, package(&tools.certgate, &tools.filter_wasm, &b));
    assert_eq!(
        digests.keys().map(String::as_str).collect::<Vec<_>>(),
        ["artifact", "compat"]
    );
    for form in digests.keys() {
        assert_eq!(
            tree(&a.join(form)),
            tree(&b.join(form)),
            "{form} layouts differ"
        );
    }
    // Packaging again into the same folder replaces the layouts and keeps the digests.
    assert_eq!(digests, package(&tools.certgate, &tools.filter_wasm, &a));

    for (form, digest) in &digests {
        assert!(
            digest.len() == 71 && digest.starts_with("sha256:"),
            "digest `{digest}` is not sha256:<64 hex>"
        );
        let repo = format!("certgate/{form}");
        let o = Command::new(&skopeo)
            .args(["--insecure-policy", "copy", "--preserve-digests"])
            .arg("--dest-tls-verify=false")
            .arg(format!("oci:{}:{TAG}", a.join(form).display()))
            .arg(format!("docker://127.0.0.1:{}/{repo}:{TAG}", registry.port))
            .env("TMPDIR", scratch.path())
            .output()
            .expect("run skopeo");
        assert!(
            o.status.success(),
            "skopeo copy of the {form} layout failed: {}{}",
            String::from_utf8_lossy(&o.stderr),
            registry.log()
        );

        // Pull as istio-agent does: by tag, with its Accept header.
        let r = registry
            .get(&format!("/v2/{repo}/manifests/{TAG}"), Some(ISTIO_ACCEPT))
            .expect("GET manifest");
        assert_eq!(
            r.status,
            200,
            "{form} manifest: {}",
            String::from_utf8_lossy(&r.body)
        );
        // `actualDigest` in `PrepareFetch` is the pulled manifest's SHA-256: the WasmPlugin's
        // `sha256` must equal it, so it must equal what `certgate package` printed.
        let pulled = format!("sha256:{}", hex(&Sha256::digest(&r.body)));
        assert_eq!(&pulled, digest, "{form}: the registry changed the manifest");
        assert_eq!(r.headers.get("docker-content-digest"), Some(digest));
        let content_type = r.headers.get("content-type").cloned().unwrap_or_default();
        let manifest: Value = serde_json::from_slice(&r.body).expect("manifest json");

        let fetch_blob = |d: &str| {
            let r = registry
                .get(&format!("/v2/{repo}/blobs/{d}"), None)
                .expect("GET blob");
            assert_eq!(r.status, 200, "blob {d}");
            r.body
        };
        let (extracted, variant) = istio_extract(&content_type, &manifest, &fetch_blob)
            .unwrap_or_else(|e| panic!("istio-agent would refuse the {form} image: {e}"));
        assert!(
            extracted == module,
            "{form}: the module istio-agent extracts ({} bytes) differs from the built one ({} bytes)",
            extracted.len(),
            module.len()
        );
        let want = if form == "compat" {
            Variant::Compat
        } else {
            Variant::Artifact
        };
        assert_eq!(variant, want, "{form} accepted by the wrong branch");
        if form == "artifact" {
            assert_eq!(
                manifest["config"]["mediaType"],
                "application/vnd.module.wasm.config.v1+json"
            );
        }
    }
}

#[test]
fn istio_rules_refuse_what_istio_agent_refuses() {
    // The ported rules must be able to fail: the same manifests, broken as istio-agent
    // would notice.
    let module = b"\0asm\x01\0\0\0payload".to_vec();
    let blobs: BTreeMap<String, Vec<u8>> = [module.clone()]
        .into_iter()
        .map(|b| (format!("sha256:{}", hex(&Sha256::digest(&b))), b))
        .collect();
    let digest = blobs.keys().next().unwrap().clone();
    let fetch = |d: &str| blobs.get(d).cloned().unwrap_or_default();
    let layer =
        |mt: &str| serde_json::json!({"mediaType": mt, "digest": digest, "size": module.len()});
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let wasm = "application/vnd.module.wasm.content.layer.v1+wasm";
    let two = serde_json::json!({"mediaType": oci, "layers": [layer("x/y"), layer(wasm)]});
    assert_eq!(
        istio_extract(oci, &two, &fetch).unwrap(),
        (module.clone(), Variant::Artifact)
    );
    let one = serde_json::json!({"mediaType": oci, "layers": [layer(wasm)]});
    assert!(istio_extract(oci, &one, &fetch).is_err(), "one layer");
    let three =
        serde_json::json!({"mediaType": oci, "layers": [layer("x/y"), layer("x/y"), layer(wasm)]});
    assert!(istio_extract(oci, &three, &fetch).is_err(), "three layers");
    let none = serde_json::json!({"mediaType": oci, "layers": [layer("x/y"), layer("x/z")]});
    assert!(istio_extract(oci, &none, &fetch).is_err(), "no wasm layer");
    let index = "application/vnd.oci.image.index.v1+json";
    assert!(istio_extract(index, &two, &fetch).is_err(), "an index");
    let mut wrong_size = two.clone();
    wrong_size["layers"][1]["size"] = serde_json::json!(1);
    assert!(istio_extract(oci, &wrong_size, &fetch).is_err(), "size");
    // A compat layer that is not gzip, or holds no plugin.wasm, is refused.
    let gz_mt = "application/vnd.oci.image.layer.v1.tar+gzip";
    let not_gzip = serde_json::json!({"mediaType": oci, "layers": [layer(gz_mt)]});
    assert!(istio_extract(oci, &not_gzip, &fetch).is_err(), "not gzip");
    let mut empty_tar = Vec::new();
    {
        let mut w = flate2::write::GzEncoder::new(&mut empty_tar, flate2::Compression::fast());
        w.write_all(&[0u8; 1024]).unwrap();
        w.finish().unwrap();
    }
    assert_eq!(
        extract_wasm_plugin_binary(&empty_tar).unwrap_err(),
        "plugin.wasm not found in the archive"
    );
}
