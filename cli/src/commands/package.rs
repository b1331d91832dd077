//! `certgate package`: the filter module as OCI image layouts istio-agent can pull, or the
//! feed server (a static `certgate`) as a `FROM scratch` image (the image building is
//! `crate::oci`; this file reads, writes and prints).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde_json::json;

use super::{Format, EXIT_OK};
use crate::oci::{self, Form, Options};

/// Package the filter module, or the feed server, as OCI images.
#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("input").required(true).args(["wasm", "binary"])),
    about = "Package the filter module as OCI image layouts for Istio's `oci://` WasmPlugin URLs, or the feed server as a FROM scratch image",
    after_help = "With --wasm, writes two OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/`), one per form \
istio-agent accepts, each replacing the layout of the same name:\n  \
OUT/compat    one tar+gzip layer holding `plugin.wasm` (any registry, any image tool)\n  \
OUT/artifact  the Wasm artifact: `application/vnd.module.wasm.config.v1+json` config and the raw \
`application/vnd.module.wasm.content.layer.v1+wasm` layer\n\
and prints each manifest digest as `sha256:<hex>`: the WasmPlugin `sha256` for that image \
(`certgate emit istio --sha256` takes it).\n\n\
With --binary, writes one layout, OUT/server: the feed server's image, FROM scratch, whose one \
tar+gzip layer holds the given statically linked `certgate` as `/certgate` and nothing else (no \
libc, no /etc, no shell). Its configuration: entrypoint `/certgate`, default arguments \
`serve /tables --listen 0.0.0.0:8080`, user 65532:65532, port 8080/tcp, label \
`org.opencontainers.image.version` set to --tag. A binary that names a dynamic loader is refused \
(`make static-cli` builds a static one; `make image` builds and packages it).\n\n\
The layouts are reproducible: timestamps are 0, or \
SOURCE_DATE_EPOCH when set; owner 0:0, fixed modes, gzip without name or time. The same module \
gives the same digests. Push a layout with any OCI client, e.g. \
`skopeo copy oci:OUT/compat:TAG docker://REGISTRY/REPO:TAG`; registries keep the digest.\n\n\
Exit codes: 0 written, 2 usage or I/O error (unreadable file, not a wasm module, not a static \
x86-64 or aarch64 ELF executable, bad tag or SOURCE_DATE_EPOCH, OUT/<form> exists and is not an \
image layout).\n\n\
Examples:\n  certgate package --wasm target/wasm32-wasip1/wasm-release/certgate_filter.wasm --out target/oci\n  \
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) certgate package --wasm certgate_filter.wasm --out oci --tag 0.1.0\n  \
certgate package --wasm certgate_filter.wasm --out oci --format json | jq -r '.images[0].digest'\n  \
certgate package --binary target/x86_64-unknown-linux-gnu/release/certgate --out target/oci   # OUT/server\n  \
skopeo copy oci:target/oci/server:0.1.0 docker://registry.example.com/certgate/certgate:0.1.0"
)]
pub struct Args {
    /// The filter module to package (`make filter` builds it)
    #[arg(long, value_name = "FILE")]
    pub wasm: Option<PathBuf>,
    /// A statically linked `certgate` to package as the feed server's image (`make static-cli`
    /// builds it)
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
    /// Directory that receives `compat/` and `artifact/` (--wasm) or `server/` (--binary)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Tag recorded in each layout's index.json (`oci:OUT/compat:TAG`)
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub tag: String,
    /// `human` lines (form, layout, digest) or versioned `json`
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let (input, forms): (&Path, &[Form]) = match (&args.wasm, &args.binary) {
        (Some(wasm), None) => (wasm, &Form::ALL),
        (None, Some(binary)) => (binary, &[Form::Server]),
        // clap's group makes exactly one of them present.
        _ => bail!("give exactly one of --wasm and --binary"),
    };
    let module =
        std::fs::read(input).with_context(|| format!("cannot read `{}`", input.display()))?;
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse::<i64>()
            .map_err(|_| anyhow!("invalid SOURCE_DATE_EPOCH `{v}`: use seconds since 1970"))?,
        _ => 0,
    };
    let opts = Options {
        epoch,
        tag: args.tag.clone(),
        root_ids: vec!["certgate".into(), "certgate-http".into()],
    };
    // Build both before writing either: bad input leaves the output folder untouched.
    let mut layouts = Vec::new();
    for &form in forms {
        let layout = oci::package(form, &module, &opts)
            .map_err(|e| anyhow!("cannot package `{}`: {e}", input.display()))?;
        layouts.push(layout);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create `{}`", args.out.display()))?;
    let mut images = Vec::new();
    for layout in &layouts {
        let dir = args.out.join(layout.form.name());
        write_layout(&dir, layout)?;
        images.push((layout.form.name(), dir, layout.manifest_digest.clone()));
    }
    match args.format {
        Format::Json => {
            let out = json!({
                "version": 1,
                "tag": args.tag,
                "images": images.iter().map(|(form, dir, digest)| json!({
                    "form": form,
                    "layout": dir.display().to_string(),
                    "digest": digest,
                })).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Human => {
            for (form, dir, digest) in &images {
                println!("{form:<9} {:<24} {digest}", dir.display());
            }
        }
    }
    Ok(EXIT_OK)
}

/// Writes `layout` into a fresh sibling folder, then swaps it in for `dir`: a failed run
/// leaves the previous layout (or nothing), never a mix.
fn write_layout(dir: &Path, layout: &oci::Layout) -> anyhow::Result<()> {
    if dir.exists() && !dir.join("oci-layout").is_file() {
        bail!(
            "`{}` exists and is not an OCI image layout; remove it or choose another --out",
            dir.display()
        );
    }
    let name = layout.form.name();
    let tmp = dir.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let old = dir.with_file_name(format!(".{name}.old-{}", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        for (rel, bytes) in &layout.files {
            let path = tmp.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create `{}`", parent.display()))?;
            }
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
        if dir.exists() {
            std::fs::rename(dir, &old)
                .with_context(|| format!("cannot replace `{}`", dir.display()))?;
        }
        std::fs::rename(&tmp, dir).with_context(|| format!("cannot write `{}`", dir.display()))?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(&old);
    result
}
