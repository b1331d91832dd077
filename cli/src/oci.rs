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
//!
//! The same packager writes the feed server's image ([`package_server`]): a `FROM scratch`
//! image whose one layer holds a statically linked `certgate` and nothing else (no libc, no
//! `/etc`, no shell), run as user 65532 with `serve /tables --listen 0.0.0.0:8080` as its
//! default arguments. It is as reproducible as the filter's images.

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

/// The feed server image's only file, at the root of its file system.
pub const SERVER_BINARY_PATH: &str = "/certgate";
/// The user (and group) the feed server image runs as: the conventional "nonroot" id, the
/// one deploy/deployment.yaml's `runAsUser` names.
pub const SERVER_USER: &str = "65532:65532";
/// The feed server image's default arguments (Kubernetes' `args` replace them).
pub const SERVER_DEFAULT_ARGS: [&str; 4] = ["serve", "/tables", "--listen", "0.0.0.0:8080"];
/// The port those arguments listen on, declared in the image configuration.
pub const SERVER_PORT: &str = "8080/tcp";
/// The label that carries the image's version (the tag it was packaged with).
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// ustar stores sizes as 11 octal digits.
const TAR_MAX_SIZE: u64 = 0o77_777_777_777;
const TAR_BLOCK: usize = 512;
/// Mode of `plugin.wasm` in the layer: a regular file, readable by all.
const TAR_FILE_MODE: u32 = 0o644;
/// Mode of the server binary in its layer: executable by all, writable by none but root.
const TAR_EXEC_MODE: u32 = 0o755;
/// ELF program header type of the dynamic loader's path: a binary that has one needs a libc
/// the scratch image does not have.
const PT_INTERP: u32 = 3;
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
    /// The feed server: a `FROM scratch` image of a static `certgate` ([`package_server`]).
    Server,
}

impl Form {
    /// Both forms of the filter's image, in the order they are written and printed.
    pub const ALL: [Form; 2] = [Form::Compat, Form::Artifact];

    /// The form's name: also its directory under the output folder.
    pub fn name(self) -> &'static str {
        match self {
            Form::Compat => "compat",
            Form::Artifact => "artifact",
            Form::Server => "server",
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
    /// Not a 64-bit little-endian ELF executable.
    #[error("not a 64-bit little-endian ELF executable")]
    NotElf,
    /// Not an architecture the image configuration can name.
    #[error("unsupported ELF machine {0:#x}: use an x86-64 or aarch64 build")]
    UnsupportedMachine(u16),
    /// Linked against a dynamic loader that a `FROM scratch` image does not have.
    #[error("the binary is dynamically linked (it names a program interpreter): build it statically (`make static-cli`)")]
    NotStatic,
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Builds the feed server's `FROM scratch` image around `binary`, a statically linked
/// `certgate` for x86-64 or aarch64 Linux. `opts.tag` is also the image's version label;
/// `opts.root_ids` is not used.
pub fn package_server(binary: &[u8], opts: &Options) -> Result<Layout, Error> {
    let architecture = check_static_elf(binary)?;
    check_tag(&opts.tag)?;
    let mtime = u64::try_from(opts.epoch).map_err(|_| Error::BadEpoch(opts.epoch))?;
    let name = SERVER_BINARY_PATH.trim_start_matches('/');
    let tar = tar_one_file(name, binary, TAR_EXEC_MODE, mtime)?;
    let tar_hex = sha256_hex(&tar);
    let layer = Blob::new(gzip(&tar));
    let config = Blob::new(json_bytes(&json!({
        "architecture": architecture,
        "os": "linux",
        "created": certgate_compiler::time::rfc3339(opts.epoch),
        "config": {
            "User": SERVER_USER,
            "Entrypoint": [SERVER_BINARY_PATH],
            "Cmd": SERVER_DEFAULT_ARGS,
            "ExposedPorts": {SERVER_PORT: {}},
            "WorkingDir": "/",
            "Labels": {
                VERSION_LABEL: opts.tag,
                "org.opencontainers.image.title": "certgate",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{tar_hex}")]},
    })));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(IMAGE_CONFIG_MEDIA_TYPE),
        "layers": [layer.descriptor(TAR_GZIP_LAYER_MEDIA_TYPE)],
    });
    Ok(layout(
        Form::Server,
        manifest,
        vec![config, layer],
        &opts.tag,
    ))
}

/// The image configuration's `architecture` for a static 64-bit little-endian ELF
/// executable, or why the binary cannot run alone in a scratch image.
fn check_static_elf(binary: &[u8]) -> Result<&'static str, Error> {
    if binary.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(Error::NotElf);
    }
    let u16_at = |at: usize| {
        binary
            .get(at..at.checked_add(2)?)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    };
    let u64_at = |at: usize| {
        binary
            .get(at..at.checked_add(8)?)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let architecture = match u16_at(0x12).ok_or(Error::NotElf)? {
        0x3e => "amd64",
        0xb7 => "arm64",
        other => return Err(Error::UnsupportedMachine(other)),
    };
    let phoff = u64_at(0x20)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or(Error::NotElf)?;
    let phentsize = usize::from(u16_at(0x36).ok_or(Error::NotElf)?);
    let phnum = usize::from(u16_at(0x38).ok_or(Error::NotElf)?);
    if phnum == 0 || phentsize < 4 {
        return Err(Error::NotElf);
    }
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|off| phoff.checked_add(off))
            .ok_or(Error::NotElf)?;
        let p_type = binary
            .get(at..at.checked_add(4).ok_or(Error::NotElf)?)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or(Error::NotElf)?;
        if p_type == PT_INTERP {
            return Err(Error::NotStatic);
        }
    }
    Ok(architecture)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Builds the image layout of `form` for `module` (for [`Form::Server`], `module` is the
/// static `certgate` binary: see [`package_server`]).
pub fn package(form: Form, module: &[u8], opts: &Options) -> Result<Layout, Error> {
    if form == Form::Server {
        return package_server(module, opts);
    }
    check_module(module)?;
    check_tag(&opts.tag)?;
    let mtime = u64::try_from(opts.epoch).map_err(|_| Error::BadEpoch(opts.epoch))?;
    let mut blobs = Vec::new();
    let manifest = match form {
        Form::Compat => {
            let tar = tar_one_file(PLUGIN_FILE_NAME, module, TAR_FILE_MODE, mtime)?;
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
        Form::Server => return package_server(module, opts),
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
    Ok(layout(form, manifest, blobs, &opts.tag))
}

/// The layout around `manifest`: `oci-layout`, `index.json` naming the manifest under `tag`,
/// and every blob (the manifest's included) under `blobs/sha256/`.
fn layout(form: Form, manifest: serde_json::Value, mut blobs: Vec<Blob>, tag: &str) -> Layout {
    let manifest = Blob::new(json_bytes(&manifest));
    let mut entry = manifest.descriptor(MANIFEST_MEDIA_TYPE);
    entry["annotations"] = json!({ REF_NAME_ANNOTATION: tag });
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
    Layout {
        form,
        manifest_digest,
        files,
    }
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
fn tar_one_file(name: &str, data: &[u8], mode: u32, mtime: u64) -> Result<Vec<u8>, Error> {
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
    put(100, format!("{mode:07o}\0").as_bytes());
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

    /// A minimal 64-bit little-endian ELF header with `phnum` program headers of `p_type`.
    fn elf(machine: u16, p_types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(p_types.len() as u16).to_le_bytes());
        for t in p_types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            b.extend(ph);
        }
        b.extend((0..700u32).map(|i| (i % 253) as u8));
        b
    }

    #[test]
    fn server_image_runs_the_static_binary_as_nonroot_with_serve_args() {
        // PT_LOAD and PT_DYNAMIC (a static-pie binary has one) but no PT_INTERP.
        let bin = elf(0x3e, &[1, 2]);
        let l = package_server(&bin, &opts()).unwrap();
        assert_eq!(l.form, Form::Server);
        assert_eq!(l, package(Form::Server, &bin, &opts()).unwrap());
        assert_eq!(l, package_server(&bin, &opts()).unwrap(), "reproducible");
        let m = manifest(&l);
        assert!(m.get("annotations").is_none(), "not a wasm image");
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "FROM scratch: one layer, the binary");
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(blob(&l, layers[0]["digest"].as_str().unwrap()))
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(&tar[..9], b"certgate\0");
        assert_eq!(&tar[100..108], b"0000755\0");
        assert_eq!(&tar[512..512 + bin.len()], bin.as_slice());
        assert_eq!(
            tar.len(),
            512 + bin.len().div_ceil(512) * 512 + 1024,
            "one entry only"
        );
        let c: serde_json::Value =
            serde_json::from_slice(blob(&l, m["config"]["digest"].as_str().unwrap())).unwrap();
        assert_eq!(c["architecture"], "amd64");
        assert_eq!(c["os"], "linux");
        assert_eq!(c["config"]["User"], "65532:65532");
        assert_eq!(c["config"]["Entrypoint"], json!(["/certgate"]));
        assert_eq!(
            c["config"]["Cmd"],
            json!(["serve", "/tables", "--listen", "0.0.0.0:8080"])
        );
        assert_eq!(c["config"]["Labels"][VERSION_LABEL], "0.1.0");
        assert!(
            c["config"].get("Env").is_none(),
            "no PATH: nothing to look up"
        );
        assert_eq!(
            c["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&tar))
        );
        let arm = package_server(&elf(0xb7, &[1]), &opts()).unwrap();
        let c: serde_json::Value = serde_json::from_slice(blob(
            &arm,
            manifest(&arm)["config"]["digest"].as_str().unwrap(),
        ))
        .unwrap();
        assert_eq!(c["architecture"], "arm64");
    }

    #[test]
    fn server_image_refuses_what_cannot_run_from_scratch() {
        assert_eq!(
            package_server(&elf(0x3e, &[1, 3, 2]), &opts()).unwrap_err(),
            Error::NotStatic
        );
        assert_eq!(
            package_server(&elf(0x28, &[1]), &opts()).unwrap_err(),
            Error::UnsupportedMachine(0x28)
        );
        assert_eq!(
            package_server(b"\0asm\x01\0\0\0", &opts()).unwrap_err(),
            Error::NotElf
        );
        // Program headers past the end of the file: refused, not read out of bounds.
        let mut short = elf(0x3e, &[1]);
        short.truncate(64);
        assert_eq!(package_server(&short, &opts()).unwrap_err(), Error::NotElf);
        let mut far = elf(0x3e, &[1]);
        far[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(package_server(&far, &opts()).unwrap_err(), Error::NotElf);
        let o = Options {
            tag: "a:b".into(),
            ..opts()
        };
        assert!(matches!(
            package_server(&elf(0x3e, &[1]), &o),
            Err(Error::BadTag(_))
        ));
    }
}
