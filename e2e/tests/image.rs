//! The feed server's image (`make image`: a static `certgate` packaged FROM scratch by
//! `certgate package --binary`) and the Kubernetes kit that runs it (deploy/), against real
//! parts: the layout is read back index -> manifest -> config -> layer, the binary taken
//! out of the layer runs in a root holding nothing else (chroot), the image goes through
//! Debian's `docker-registry` with `skopeo` (the helpers of the OCI test), and the kit
//! rendered by `kubectl kustomize` is held to the image and the binary: the Deployment's
//! image is the one `make image` tags, its args start the real binary whose probes answer,
//! and the documented `certgate emit istio` names the kit's Service.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certgate_e2e::tools::{build_dir, repo_root, Tools};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::oci::{debian_tool, hex, tree, Registry};

/// The workspace version: the image's tag and label, and what `--version` prints.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How long a started `certgate serve` may take to answer its probes (it compiles the kit's
/// policies first) on a loaded machine.
const SERVE_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The binary's path in the image (`/certgate`, the entrypoint), relative to its root.
const BINARY_IN_IMAGE: &str = "certgate";
/// Per-request socket timeout for the probes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// A command from PATH (or /usr/sbin, /usr/bin), or a failure that says how to install it.
fn command(name: &str, install: &str) -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found: {install}"))
}

/// The static binary `make static-cli` builds (`CERTGATE_STATIC_BIN`), or a failure that
/// says how to build it.
fn static_certgate() -> PathBuf {
    let bin = std::env::var_os("CERTGATE_STATIC_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| build_dir().join("x86_64-unknown-linux-gnu/release/certgate"));
    assert!(
        bin.is_file(),
        "static certgate not found at {} ($CERTGATE_STATIC_BIN): run `make image`",
        bin.display()
    );
    bin
}

/// `certgate package --binary BIN --out OUT --format json`; returns the server image's digest.
fn package(certgate: &Path, bin: &Path, out: &Path) -> String {
    let o = Command::new(certgate)
        .args(["package", "--format", "json", "--tag", VERSION, "--binary"])
        .arg(bin)
        .arg("--out")
        .arg(out)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run certgate package");
    assert!(
        o.status.success(),
        "certgate package --binary failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("package json");
    assert_eq!(v["images"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["images"][0]["form"], "server");
    v["images"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string()
}

/// The layout `make image` wrote (`CERTGATE_IMAGE_LAYOUT`, else `oci/server` in the build directory): its
/// tag and manifest digest, or a failure that says how to build it.
fn make_image_layout() -> (String, String) {
    let dir = std::env::var_os("CERTGATE_IMAGE_LAYOUT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| build_dir().join("oci/server"));
    let index = std::fs::read(dir.join("index.json")).unwrap_or_else(|e| {
        panic!(
            "no image layout at {} ($CERTGATE_IMAGE_LAYOUT, {e}): run `make image`",
            dir.display()
        )
    });
    let index: Value = serde_json::from_slice(&index).expect("index json");
    let entry = &index["manifests"][0];
    (
        entry["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .expect("tag")
            .to_string(),
        entry["digest"].as_str().expect("digest").to_string(),
    )
}

/// A blob of a layout by digest, checked against its name.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex_part = digest.strip_prefix("sha256:").expect("sha256 digest");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex_part)).expect("read blob");
    assert_eq!(hex(&Sha256::digest(&bytes)), hex_part, "blob {digest}");
    bytes
}

/// One tar entry: name, mode, uid, gid, type flag and content.
struct Entry {
    name: String,
    mode: u32,
    uid: u32,
    gid: u32,
    kind: u8,
    data: Vec<u8>,
}

/// Every entry of a ustar archive (checksums verified).
fn tar_entries(tar: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = tar.get(at..at + 512) {
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |r: std::ops::Range<usize>| {
            let f = &h[r];
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).trim().to_string()
        };
        let octal = |r| u32::from_str_radix(&field(r), 8).expect("octal field");
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
        assert_eq!(octal(148..156), sum, "tar header checksum");
        let size = octal(124..136) as usize;
        out.push(Entry {
            name: field(0..100),
            mode: octal(100..108),
            uid: octal(108..116),
            gid: octal(116..124),
            kind: h[156],
            data: tar[at + 512..at + 512 + size].to_vec(),
        });
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// A child process killed on drop, so no server outlives a failed assertion.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One HTTP/1.0 GET on 127.0.0.1; the status code and body.
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))?;
    std::io::Write::write_all(
        &mut s,
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    )?;
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes)?;
    let raw = String::from_utf8_lossy(&bytes).to_string();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in `{raw}`")))?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    Ok((status, body.unwrap_or_default()))
}

/// Polls `path` until it answers 200, failing with the last answer and the server's log.
fn await_ok(server: &mut Running, port: u16, path: &str, log: &Path) -> String {
    let deadline = Instant::now() + SERVE_READY_TIMEOUT;
    loop {
        let last = get(port, path);
        if let Ok((200, body)) = &last {
            return body.clone();
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "certgate serve exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not answer 200 within {SERVE_READY_TIMEOUT:?} (last: {last:?}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn server_image_runs_from_scratch_and_survives_a_registry_round_trip() {
    let tools = Tools::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let bin = static_certgate();
    let scratch = tempfile::Builder::new()
        .prefix("certgate-image-")
        .tempdir()
        .expect("temp dir");
    let (a, b) = (scratch.path().join("a"), scratch.path().join("b"));

    // Reproducible: the same binary gives the same digest and the same bytes.
    let digest = package(&tools.certgate, &bin, &a);
    assert_eq!(digest, package(&tools.certgate, &bin, &b));
    let layout = a.join("server");
    assert_eq!(tree(&layout), tree(&b.join("server")), "layouts differ");
    // ... and it is the image `make image` wrote from the same binary.
    assert_eq!(
        make_image_layout(),
        (VERSION.to_string(), digest.clone()),
        "`make image`'s layout is not this binary's image"
    );

    // Read back: index -> manifest -> config -> layer.
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
            .expect("index json");
    let entry = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(entry["digest"], digest.as_str());
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        VERSION
    );
    let manifest_bytes = blob(&layout, &digest);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).expect("manifest json");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config: Value = serde_json::from_slice(&blob(
        &layout,
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ))
    .expect("config json");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "FROM scratch: the binary's layer only");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let gz = blob(&layout, layers[0]["digest"].as_str().expect("layer digest"));
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut tar)
        .expect("gunzip layer");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        json!([format!("sha256:{}", hex(&Sha256::digest(&tar)))])
    );
    let entries = tar_entries(&tar);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    // No shell, no libc, no /etc: the binary is the whole file system.
    assert_eq!(names, ["certgate"], "files in the image");
    let e = &entries[0];
    assert_eq!((e.kind, e.mode, e.uid, e.gid), (b'0', 0o755, 0, 0));
    assert!(
        e.data == std::fs::read(&bin).expect("read static binary"),
        "the layer's binary is not the one packaged"
    );

    // The configuration runs that binary as nonroot with the feed's arguments.
    let c = &config["config"];
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(c["Entrypoint"], json!(["/certgate"]));
    assert_eq!(
        c["Cmd"],
        json!(["serve", "/tables", "--listen", "0.0.0.0:8080"])
    );
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["ExposedPorts"], json!({"8080/tcp": {}}));
    assert_eq!(c["Labels"]["org.opencontainers.image.version"], VERSION);
    assert!(c.get("Env").is_none() && c.get("Shell").is_none(), "{c}");

    // The extracted binary runs in a root that holds nothing but itself, as the image's
    // user: `--version`, then `serve` with the image's own arguments (its address an IP, so
    // nothing is resolved) answering /livez.
    let root = scratch.path().join("rootfs");
    std::fs::create_dir_all(root.join("tables")).expect("rootfs");
    let exe = root.join("certgate");
    std::fs::write(&exe, &e.data).expect("write binary");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    // coreutils' chroot, found before the environment is cleared for the child.
    let chroot_bin = command("chroot", "install Debian's coreutils");
    let chroot = |args: &[&str]| {
        let mut cmd = Command::new(&chroot_bin);
        cmd.arg("--userspec=65532:65532")
            .arg(&root)
            .arg("/certgate")
            .args(args)
            .env_clear();
        cmd
    };
    let o = chroot(&["--version"])
        .output()
        .expect("run chroot (the image test runs as root, like CI)");
    assert!(
        o.status.success(),
        "`certgate --version` in an empty root failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("certgate {VERSION}")
    );
    let port = free_port();
    let log = scratch.path().join("serve.log");
    let mut args: Vec<String> = c["Cmd"]
        .as_array()
        .expect("Cmd")
        .iter()
        .map(|v| v.as_str().expect("arg").to_string())
        .collect();
    // The image's address, on a free port of this shared machine: `0.0.0.0:<port>`.
    let listen = args
        .iter_mut()
        .find(|a| a.starts_with("0.0.0.0:"))
        .expect("listen");
    *listen = format!("0.0.0.0:{port}");
    let mut server = Running(
        chroot(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("run certgate serve in the empty root"),
    );
    await_ok(&mut server, port, "/livez", &log);
    // No table in /tables yet: not ready, and it says why.
    let (status, body) = get(port, "/healthz").expect("GET /healthz");
    assert_eq!(status, 503, "{body}");
    drop(server);

    // Through a real registry: pushed with skopeo, the manifest pulled back by tag.
    let skopeo = debian_tool("skopeo");
    let registry = Registry::start();
    let repo = "certgate/certgate";
    let o = Command::new(&skopeo)
        .args(["--insecure-policy", "copy", "--preserve-digests"])
        .arg("--dest-tls-verify=false")
        .arg(format!("oci:{}:{VERSION}", layout.display()))
        .arg(format!(
            "docker://127.0.0.1:{}/{repo}:{VERSION}",
            registry.port
        ))
        .env("TMPDIR", scratch.path())
        .output()
        .expect("run skopeo");
    assert!(
        o.status.success(),
        "skopeo copy of the server layout failed: {}{}",
        String::from_utf8_lossy(&o.stderr),
        registry.log()
    );
    let r = registry
        .get(
            &format!("/v2/{repo}/manifests/{VERSION}"),
            Some("application/vnd.oci.image.manifest.v1+json"),
        )
        .expect("GET manifest");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.body == manifest_bytes,
        "the registry changed the manifest"
    );
    assert_eq!(r.headers.get("docker-content-digest"), Some(&digest));
    let layer = registry
        .get(
            &format!("/v2/{repo}/blobs/{}", layers[0]["digest"].as_str().unwrap()),
            None,
        )
        .expect("GET layer");
    assert_eq!(layer.status, 200);
    assert!(layer.body == gz, "the registry changed the layer");
}

// ---- the Kubernetes kit ----------------------------------------------------------------------

/// `kubectl kustomize deploy/` as JSON objects (PyYAML in the project's venv converts).
fn render_kit() -> Vec<Value> {
    let kubectl = command(
        "kubectl",
        "run `make deploy-tools` (Debian's kubernetes-client)",
    );
    let o = Command::new(kubectl)
        .arg("kustomize")
        .arg(repo_root().join("deploy"))
        .output()
        .expect("run kubectl kustomize");
    assert!(
        o.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    yaml_to_json(&o.stdout)
}

/// Every document of a YAML stream as JSON, read by PyYAML (`CERTGATE_PYTHON`).
fn yaml_to_json(yaml: &[u8]) -> Vec<Value> {
    let python = std::env::var_os("CERTGATE_PYTHON")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/venv/bin/python"));
    let mut child = Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): run `make venv`", python.display()));
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), yaml).expect("write yaml");
    drop(child.stdin.take());
    let o = child.wait_with_output().expect("python");
    assert!(o.status.success(), "YAML did not parse");
    serde_json::from_slice::<Vec<Value>>(&o.stdout).expect("json")
}

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in the kit");
    found[0]
}

#[test]
fn deploy_kit_runs_the_image_hardened_and_its_args_start_the_real_server() {
    let tools = Tools::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let objects = render_kit();
    let deployment = object(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The image `make image` produces: tagged with the workspace version, repository
    // `.../certgate` (the name `make image`'s layout is pushed under).
    let image = c["image"].as_str().expect("image");
    let (repo, tag) = image.rsplit_once(':').expect("image with a tag");
    assert_eq!(
        tag,
        make_image_layout().0,
        "deployment.yaml's image tag is not `make image`'s"
    );
    assert!(repo.ends_with("/certgate"), "image repository `{repo}`");

    // Hardened: non-root, read-only root, no escalation, no capabilities, seccomp, resources.
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], 65532, "the image's user");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    assert!(sc.get("privileged").is_none_or(|p| p == false));
    for k in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][k].is_string(), "requests.{k}");
    }
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "limits.memory"
    );

    // Probes on the declared port.
    let ports = c["ports"].as_array().expect("ports");
    let port_of = |name: &Value| -> u64 {
        match name {
            Value::Number(n) => n.as_u64().expect("port"),
            Value::String(s) => ports
                .iter()
                .find(|p| p["name"] == s.as_str())
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("no container port named `{s}`")),
            other => panic!("port {other}"),
        }
    };
    let ready = &c["readinessProbe"]["httpGet"];
    let live = &c["livenessProbe"]["httpGet"];
    assert_eq!(ready["path"], "/healthz");
    assert_eq!(live["path"], "/livez");
    let declared = port_of(&ready["port"]);
    assert_eq!(port_of(&live["port"]), declared);

    // The args against the real binary, as the pod runs it: the image's binary alone in a
    // root where each volume is a directory at its mount path, as the pod's user and group,
    // the Secret's key readable through fsGroup and the Secret's defaultMode only.
    let work = tempfile::Builder::new()
        .prefix("certgate-kit-")
        .tempdir()
        .expect("temp dir");
    let root = work.path().join("rootfs");
    let id = |v: &Value, what: &str| v.as_u64().unwrap_or_else(|| panic!("no {what}")) as u32;
    let (uid, gid, fs_group) = (
        id(&psc["runAsUser"], "runAsUser"),
        id(&psc["runAsGroup"], "runAsGroup"),
        id(&psc["fsGroup"], "fsGroup"),
    );
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mounts: BTreeMap<String, PathBuf> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            let at = m["mountPath"].as_str().expect("mountPath");
            let dir = root.join(at.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).expect("mount dir");
            (m["name"].as_str().expect("name").to_string(), dir)
        })
        .collect();
    let volume = |name: &str| {
        mounts
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no mount of the `{name}` volume"))
    };
    let spec_of = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume `{name}`"))
    };
    // emptyDir: writable by the pod.
    assert!(spec_of("tables").get("emptyDir").is_some());
    std::fs::set_permissions(
        volume("tables"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod tables");
    // The ConfigMap's files (0644, the default mode).
    for p in std::fs::read_dir(repo_root().join("deploy/policies")).expect("policies") {
        let p = p.expect("entry").path();
        std::fs::copy(&p, volume("policies").join(p.file_name().expect("name"))).expect("copy");
    }
    // The Secret's key: owned by root, group fsGroup, mode the Secret's defaultMode.
    let key = volume("signing-key").join("signing.key");
    let o = Command::new(&tools.certgate)
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("keygen");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = id(
        &spec_of("signing-key")["secret"]["defaultMode"],
        "defaultMode",
    );
    std::os::unix::fs::chown(&key, Some(0), Some(fs_group)).expect("chown key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .expect("chmod key");
    let exe = root.join(BINARY_IN_IMAGE);
    std::fs::copy(static_certgate(), &exe).expect("copy binary");
    let port = free_port();
    let mut listen_port = None;
    let args: Vec<String> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let a = a.as_str().expect("arg");
            if let Some(value) = a.strip_prefix("--listen=") {
                let (ip, p) = value.rsplit_once(':').expect("listen address");
                assert!(
                    ip.parse::<std::net::IpAddr>().is_ok(),
                    "listen on an IP (nothing to resolve in the image): `{value}`"
                );
                listen_port = Some(p.parse::<u64>().expect("listen port"));
                // The declared port, moved to a free one of this shared machine.
                return format!("--listen={ip}:{port}");
            }
            a.to_string()
        })
        .collect();
    assert_eq!(
        listen_port,
        Some(declared),
        "--listen is not the probes' port"
    );
    // As the pod's user and group, with fsGroup as a supplementary group (the kubelet's doing).
    let log = work.path().join("serve.log");
    let mut server = Running(
        Command::new(command("chroot", "install Debian's coreutils"))
            .arg(format!("--userspec={uid}:{gid}"))
            .arg(format!("--groups={fs_group}"))
            .arg(&root)
            .arg(format!("/{BINARY_IN_IMAGE}"))
            .args(&args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("run certgate with the kit's args (the test runs as root, like CI)"),
    );
    await_ok(&mut server, port, "/livez", &log);
    let ready = await_ok(&mut server, port, "/healthz", &log);
    assert!(ready.starts_with("ok"), "/healthz: {ready}");
    // It compiled and signed the kit's policies, and serves the table.
    let (status, _) = get(port, "/table.cgt").expect("GET /table.cgt");
    assert_eq!(
        status,
        200,
        "no table served: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn deploy_readmes_emit_istio_polls_the_kits_service() {
    let tools = Tools::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let objects = render_kit();
    let service = object(&objects, "Service");
    let deployment = object(&objects, "Deployment");
    let name = service["metadata"]["name"].as_str().expect("service name");
    let namespace = service["metadata"]["namespace"]
        .as_str()
        .expect("namespace");
    let ports = service["spec"]["ports"].as_array().expect("service ports");
    assert_eq!(ports.len(), 1);
    let port = ports[0]["port"].as_u64().expect("service port");
    // The Service reaches the pods: its selector is a subset of their labels, its
    // targetPort one of their named ports.
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = service["spec"]["selector"].as_object().expect("selector");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&pod_labels[k], v, "Service selector {k}");
    }
    let container_ports = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(
        container_ports
            .as_array()
            .expect("container ports")
            .iter()
            .any(|p| p["name"] == ports[0]["targetPort"]),
        "targetPort {} is no container port",
        ports[0]["targetPort"]
    );

    // The README's invocation, run as written (its key made as the README says).
    let readme = std::fs::read_to_string(repo_root().join("deploy/README.md")).expect("README");
    let blocks: Vec<&str> = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(code, _)| code))
        .collect();
    let emit: Vec<&&str> = blocks
        .iter()
        .filter(|b| b.contains("certgate emit istio"))
        .collect();
    assert_eq!(
        emit.len(),
        1,
        "one `certgate emit istio` block in deploy/README.md"
    );
    let work = tempfile::Builder::new()
        .prefix("certgate-kit-emit-")
        .tempdir()
        .expect("temp dir");
    let path = format!(
        "{}:{}",
        tools.certgate.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sh = |script: &str| {
        let o = Command::new("sh")
            .args(["-euc", script])
            .current_dir(work.path())
            .env("PATH", &path)
            .output()
            .expect("run sh");
        assert!(
            o.status.success(),
            "`{script}` failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    let keygen = blocks
        .iter()
        .flat_map(|b| b.lines())
        .find(|l| l.starts_with("certgate keygen"))
        .expect("the README makes the signing key with `certgate keygen`");
    sh(keygen);
    let out = sh(emit[0]);
    let docs = yaml_to_json(&out);
    assert_eq!(docs.len(), 1, "one object");
    let plugin = &docs[0];
    assert_eq!(plugin["kind"], "WasmPlugin");
    let feed = &plugin["spec"]["pluginConfig"]["feed"];
    let host = format!("{name}.{namespace}.svc.cluster.local");
    assert_eq!(
        feed["cluster"],
        format!("outbound|{port}||{host}"),
        "the plugin polls another Service than the kit's"
    );
    assert_eq!(feed["authority"], host.as_str());
    // The plugin must not select the feed's own pods (a stale table with onStale: deny
    // would refuse the polls that refresh it).
    let matches_feed = plugin["metadata"]["namespace"] == namespace
        && plugin["spec"]["selector"]["matchLabels"]
            .as_object()
            .is_none_or(|m| m.iter().all(|(k, v)| &pod_labels[k] == v));
    assert!(!matches_feed, "the WasmPlugin selects the feed's own pods");
}
