//! The filter module as an OCI image, in the two forms istio-agent pulls for a WasmPlugin
//! `url: oci://...` (istio `pkg/wasm/imagefetcher.go`, after the solo-io Wasm image spec):
//!
//! - [`Form::Compat`]: a plain OCI image whose last (only) `tar+gzip` layer holds
//!   `plugin.wasm`; any registry and any image tool handles it.
//! - [`Form::Artifact`]: two layers, the runtime configuration
//!   (`application/vnd.module.wasm.config.v1+json`, also the manifest's config) and the module
//!   itself as one raw `application/vnd.module.wasm.content.layer.v1+wasm` blob.
//!
//! Both are built byte for byte from the module and a timestamp only: uid/gid 0, fixed modes,
//! one tar entry, gzip without name or mtime at a fixed level, JSON with a fixed key order. So
//! the same module gives the same manifest digest, which is what a WasmPlugin's `sha256`
//! names for `oci://` URLs. No I/O here: the CLI writes the returned files.

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::json;
use sha2::{Digest, Sha256};

/// `mediaType` of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// `mediaType` of an OCI image index (the layout's `index.json`).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// `mediaType` of the compat image's configuration.
pub const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// `mediaType` of the compat image's layer (istio's `types.OCILayer`).
pub const TAR_GZIP_LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// `mediaType` of the artifact's runtime configuration (config and first layer).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
/// `mediaType` of the artifact's module layer: the raw module, not compressed.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The file name istio-agent looks for in the compat layer.
pub const PLUGIN_FILE_NAME: &str = "plugin.wasm";
/// The annotation that names an image layout entry's tag.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// ustar stores sizes as 11 octal digits.
const TAR_MAX_SIZE: u64 = 0o77_777_777_777;
const TAR_BLOCK: usize = 512;
/// Mode of `plugin.wasm` in the layer: a regular file, readable by all.
const TAR_FILE_MODE: u32 = 0o644;
/// A fixed level, because the compressed bytes (and so the digest) depend on it.
const GZIP_LEVEL: u32 = 9;
/// The gzip header's OS byte: "unknown", the same on every build machine.
const GZIP_OS_UNKNOWN: u8 = 255;

/// Which of the two image forms to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// One `tar+gzip` layer holding `plugin.wasm`.
    Compat,
    /// The Wasm artifact: runtime configuration layer plus the raw module layer.
    Artifact,
}

impl Form {
    /// Both forms, in the order they are written and printed.
    pub const ALL: [Form; 2] = [Form::Compat, Form::Artifact];

    /// The form's name: also its directory under the output folder.
    pub fn name(self) -> &'static str {
        match self {
            Form::Compat => "compat",
            Form::Artifact => "artifact",
        }
    }
}

/// Why a module cannot be packaged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not start with the Wasm magic and version 1.
    #[error("not a WebAssembly module (no `\\0asm` version 1 header)")]
    NotWasm,
    /// Larger than a ustar entry can hold.
    #[error("the module is {0} bytes, more than a tar entry holds")]
    TooLarge(u64),
    /// The tag is not a valid OCI tag.
    #[error("invalid tag `{0}`: use 1 to 128 of `A-Za-z0-9_.-`, not starting with `.` or `-`")]
    BadTag(String),
    /// A negative timestamp cannot be a tar mtime.
    #[error("invalid timestamp `{0}`: use seconds since 1970 (SOURCE_DATE_EPOCH)")]
    BadEpoch(i64),
}

/// What packaging needs besides the module.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds since 1970 for the tar mtime and the image's `created` (0, or
    /// `SOURCE_DATE_EPOCH` for reproducible builds).
    pub epoch: i64,
    /// The tag recorded in the layout's `index.json` (`oci:DIR:TAG` for skopeo).
    pub tag: String,
    /// Root ids the module registers, for the artifact's runtime configuration.
    pub root_ids: Vec<String>,
}

/// One OCI image layout, ready to be written under a directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Which form this is.
    pub form: Form,
    /// The manifest digest as `sha256:<64 hex>` (a WasmPlugin's `sha256` is the hex part).
    pub manifest_digest: String,
    /// Relative path and bytes of every file: `oci-layout`, `index.json`, `blobs/sha256/<hex>`,
    /// sorted by path.
    pub files: Vec<(String, Vec<u8>)>,
}

/// A content-addressed blob and its descriptor.
struct Blob {
    bytes: Vec<u8>,
    hex: String,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        let hex = sha256_hex(&bytes);
        Blob { bytes, hex }
    }

    fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({
            "mediaType": media_type,
            "digest": format!("sha256:{}", self.hex),
            "size": self.bytes.len(),
        })
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Builds the image layout of `form` for `module`.
pub fn package(form: Form, module: &[u8], opts: &Options) -> Result<Layout, Error> {
    check_module(module)?;
    check_tag(&opts.tag)?;
    let mtime = u64::try_from(opts.epoch).map_err(|_| Error::BadEpoch(opts.epoch))?;
    let mut blobs = Vec::new();
    let manifest = match form {
        Form::Compat => {
            let tar = tar_one_file(PLUGIN_FILE_NAME, module, mtime)?;
            let tar_hex = sha256_hex(&tar);
            let layer = Blob::new(gzip(&tar));
            let config = Blob::new(json_bytes(&json!({
                "architecture": "wasm",
                "os": "wasip1",
                "created": certgate_compiler::time::rfc3339(opts.epoch),
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{tar_hex}")]},
            })));
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": config.descriptor(IMAGE_CONFIG_MEDIA_TYPE),
                "layers": [layer.descriptor(TAR_GZIP_LAYER_MEDIA_TYPE)],
                // The compat spec asks for it when the layer has the OCI media type.
                "annotations": {"module.wasm.image/variant": "compat"},
            });
            blobs.push(config);
            blobs.push(layer);
            manifest
        }
        Form::Artifact => {
            let config = Blob::new(json_bytes(&json!({
                "type": "envoy_proxy",
                "abiVersions": ["proxy_abi_version_0_2_1"],
                "config": {"root_ids": opts.root_ids},
            })));
            let wasm = Blob::new(module.to_vec());
            let titled = |b: &Blob, media_type: &str, title: &str| {
                let mut d = b.descriptor(media_type);
                d["annotations"] = json!({"org.opencontainers.image.title": title});
                d
            };
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": config.descriptor(WASM_CONFIG_MEDIA_TYPE),
                // istio-agent wants exactly two layers, one of them the module.
                "layers": [
                    titled(&config, WASM_CONFIG_MEDIA_TYPE, "runtime-config.json"),
                    titled(&wasm, WASM_LAYER_MEDIA_TYPE, PLUGIN_FILE_NAME),
                ],
            });
            blobs.push(config);
            blobs.push(wasm);
            manifest
        }
    };
    let manifest = Blob::new(json_bytes(&manifest));
    let mut entry = manifest.descriptor(MANIFEST_MEDIA_TYPE);
    entry["annotations"] = json!({ REF_NAME_ANNOTATION: opts.tag });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [entry],
    });
    let manifest_digest = format!("sha256:{}", manifest.hex);
    blobs.push(manifest);
    let mut files = vec![
        (
            "oci-layout".to_string(),
            json_bytes(&json!({"imageLayoutVersion": "1.0.0"})),
        ),
        ("index.json".to_string(), json_bytes(&index)),
    ];
    for b in blobs {
        files.push((format!("blobs/sha256/{}", b.hex), b.bytes));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    // The artifact's config is also its first layer: one blob, one file.
    files.dedup_by(|a, b| a.0 == b.0);
    Ok(Layout {
        form,
        manifest_digest,
        files,
    })
}

fn check_module(module: &[u8]) -> Result<(), Error> {
    if module.get(..8) != Some(b"\0asm\x01\0\0\0".as_slice()) {
        return Err(Error::NotWasm);
    }
    let len = module.len() as u64;
    if len > TAR_MAX_SIZE {
        return Err(Error::TooLarge(len));
    }
    Ok(())
}

/// OCI distribution's tag grammar: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), Error> {
    let ok = (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !tag.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(Error::BadTag(tag.to_string()))
    }
}

/// Compact JSON; serde_json keeps the key order fixed for the same input.
fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A ustar archive of one regular file owned by uid/gid 0, ended by two zero blocks.
fn tar_one_file(name: &str, data: &[u8], mtime: u64) -> Result<Vec<u8>, Error> {
    let size = data.len() as u64;
    if size > TAR_MAX_SIZE {
        return Err(Error::TooLarge(size));
    }
    let mut h = [0u8; TAR_BLOCK];
    let mut put = |at: usize, field: &[u8]| {
        if let Some(dst) = h.get_mut(at..at + field.len()) {
            dst.copy_from_slice(field);
        }
    };
    put(0, name.as_bytes());
    put(100, format!("{TAR_FILE_MODE:07o}\0").as_bytes());
    put(108, b"0000000\0"); // uid
    put(116, b"0000000\0"); // gid
    put(124, format!("{size:011o}\0").as_bytes());
    put(
        136,
        format!("{:011o}\0", mtime.min(TAR_MAX_SIZE)).as_bytes(),
    );
    put(148, b"        "); // checksum, counted as spaces
    put(156, b"0"); // regular file
    put(257, b"ustar\0");
    put(263, b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    if let Some(dst) = h.get_mut(148..156) {
        dst.copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
    let padding = (TAR_BLOCK - data.len() % TAR_BLOCK) % TAR_BLOCK;
    let mut out = Vec::with_capacity(TAR_BLOCK * 3 + data.len() + padding);
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len() + padding + 2 * TAR_BLOCK, 0);
    Ok(out)
}

/// gzip with no file name, mtime 0, the "unknown" OS byte and a fixed level.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        .write(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend((0..1500u32).map(|i| (i % 251) as u8));
        m
    }

    fn opts() -> Options {
        Options {
            epoch: 0,
            tag: "0.1.0".into(),
            root_ids: vec!["certgate".into(), "certgate-http".into()],
        }
    }

    fn file<'a>(l: &'a Layout, path: &str) -> &'a [u8] {
        &l.files.iter().find(|(p, _)| p == path).unwrap().1
    }

    fn blob<'a>(l: &'a Layout, digest: &str) -> &'a [u8] {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = file(l, &format!("blobs/sha256/{hex}"));
        assert_eq!(sha256_hex(bytes), hex, "blob content matches its name");
        bytes
    }

    fn manifest(l: &Layout) -> serde_json::Value {
        serde_json::from_slice(blob(l, &l.manifest_digest)).unwrap()
    }

    #[test]
    fn same_module_same_digest_and_bytes() {
        for form in Form::ALL {
            let a = package(form, &module(), &opts()).unwrap();
            let b = package(form, &module(), &opts()).unwrap();
            assert_eq!(a.manifest_digest, b.manifest_digest);
            assert_eq!(a.files, b.files);
            let mut other = module();
            other.push(0);
            let c = package(form, &other, &opts()).unwrap();
            assert_ne!(a.manifest_digest, c.manifest_digest, "{form:?}");
        }
    }

    #[test]
    fn epoch_changes_the_compat_digest() {
        let a = package(Form::Compat, &module(), &opts()).unwrap();
        let later = Options {
            epoch: 1_700_000_000,
            ..opts()
        };
        let b = package(Form::Compat, &module(), &later).unwrap();
        assert_ne!(a.manifest_digest, b.manifest_digest);
    }

    #[test]
    fn compat_layer_holds_plugin_wasm() {
        let l = package(Form::Compat, &module(), &opts()).unwrap();
        let m = manifest(&l);
        assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], TAR_GZIP_LAYER_MEDIA_TYPE);
        let gz = blob(&l, layers[0]["digest"].as_str().unwrap());
        assert_eq!(gz.len() as u64, layers[0]["size"].as_u64().unwrap());
        // gzip header: no FNAME flag, mtime 0, OS unknown.
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(&tar[..12], b"plugin.wasm\0");
        assert_eq!(&tar[257..263], b"ustar\0");
        assert_eq!(&tar[100..108], b"0000644\0");
        let size = usize::from_str_radix(std::str::from_utf8(&tar[124..135]).unwrap(), 8).unwrap();
        assert_eq!(&tar[512..512 + size], module().as_slice());
        assert_eq!(tar.len() % 512, 0);
        let config: serde_json::Value =
            serde_json::from_slice(blob(&l, m["config"]["digest"].as_str().unwrap())).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&tar))
        );
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn artifact_has_two_layers_and_the_raw_module() {
        let l = package(Form::Artifact, &module(), &opts()).unwrap();
        let m = manifest(&l);
        assert_eq!(m["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[1]["mediaType"], WASM_LAYER_MEDIA_TYPE);
        assert_eq!(
            blob(&l, layers[1]["digest"].as_str().unwrap()),
            module().as_slice()
        );
        let config: serde_json::Value =
            serde_json::from_slice(blob(&l, layers[0]["digest"].as_str().unwrap())).unwrap();
        assert_eq!(config["config"]["root_ids"][1], "certgate-http");
    }

    #[test]
    fn index_names_the_manifest_and_tag() {
        let l = package(Form::Artifact, &module(), &opts()).unwrap();
        let index: serde_json::Value = serde_json::from_slice(file(&l, "index.json")).unwrap();
        assert_eq!(index["manifests"][0]["digest"], l.manifest_digest.as_str());
        assert_eq!(
            index["manifests"][0]["annotations"][REF_NAME_ANNOTATION],
            "0.1.0"
        );
        assert_eq!(
            file(&l, "oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice()
        );
    }

    #[test]
    fn refuses_what_is_not_a_module_or_a_tag() {
        assert_eq!(
            package(Form::Compat, b"\x7fELF....", &opts()).unwrap_err(),
            Error::NotWasm
        );
        assert_eq!(
            package(Form::Compat, b"", &opts()).unwrap_err(),
            Error::NotWasm
        );
        for tag in ["", "-x", ".x", "a/b", "a:b", &"x".repeat(129)] {
            let o = Options {
                tag: tag.to_string(),
                ..opts()
            };
            assert!(
                matches!(
                    package(Form::Artifact, &module(), &o),
                    Err(Error::BadTag(_))
                ),
                "{tag}"
            );
        }
        let o = Options {
            epoch: -1,
            ..opts()
        };
        assert_eq!(
            package(Form::Compat, &module(), &o).unwrap_err(),
            Error::BadEpoch(-1)
        );
    }
}
