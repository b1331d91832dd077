//! Drives the `certgate` CLI the way an operator would: compile policies into a table,
//! then emit the Envoy filter entry or the Istio WasmPlugin for it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The `certgate` CLI at a path.
#[derive(Debug, Clone)]
pub struct Certgate {
    /// The binary.
    pub bin: PathBuf,
}

/// Options of `certgate emit envoy`.
#[derive(Debug, Clone, Default)]
pub struct EmitEnvoy {
    /// `--http`: the HTTP filter entry instead of the network filter.
    pub http: bool,
    /// `--server-first`.
    pub server_first: bool,
    /// `--mode audit`.
    pub audit: bool,
    /// Further arguments, as given (the live feed's `--feed-*` flags).
    pub extra: Vec<String>,
}

impl Certgate {
    fn run(&self, args: &[&std::ffi::OsStr]) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "`certgate {}` failed ({}):\n{}{}",
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `certgate compile INPUTS... -o OUT`.
    pub fn compile(&self, inputs: &[&Path], out: &Path) -> Result<()> {
        self.compile_with(inputs, out, &[])
    }

    /// `certgate compile INPUTS... -o OUT EXTRA...` (`--sign-key K`, ...).
    pub fn compile_with(&self, inputs: &[&Path], out: &Path, extra: &[&str]) -> Result<()> {
        let mut args: Vec<&std::ffi::OsStr> = vec!["compile".as_ref()];
        args.extend(inputs.iter().map(|p| p.as_os_str()));
        args.push("-o".as_ref());
        args.push(out.as_os_str());
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        self.run(&args)?;
        Ok(())
    }

    /// `certgate keygen -o OUT`: the public key as `feed.publicKeys` takes it.
    pub fn keygen(&self, out: &Path) -> Result<String> {
        Ok(self
            .run(&["keygen".as_ref(), "-o".as_ref(), out.as_os_str()])?
            .trim()
            .to_string())
    }

    /// `certgate emit envoy --table T --wasm W [...] --format json`: the filter entry.
    pub fn emit_envoy(&self, table: &Path, wasm: &Path, opts: &EmitEnvoy) -> Result<Value> {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "emit".as_ref(),
            "envoy".as_ref(),
            "--table".as_ref(),
            table.as_os_str(),
            "--wasm".as_ref(),
            wasm.as_os_str(),
            "--format".as_ref(),
            "json".as_ref(),
        ];
        if opts.http {
            args.push("--http".as_ref());
        }
        if opts.server_first {
            args.push("--server-first".as_ref());
        }
        if opts.audit {
            args.push("--mode".as_ref());
            args.push("audit".as_ref());
        }
        args.extend(opts.extra.iter().map(std::ffi::OsStr::new));
        let text = self.run(&args)?;
        serde_json::from_str(&text).with_context(|| format!("emit envoy printed non-JSON:\n{text}"))
    }

    /// `certgate emit stats --format json`: the bootstrap's `stats_config`, which turns
    /// certgate's stat names into labels.
    pub fn emit_stats(&self) -> Result<Value> {
        let text = self.run(&[
            "emit".as_ref(),
            "stats".as_ref(),
            "--format".as_ref(),
            "json".as_ref(),
        ])?;
        serde_json::from_str(&text).with_context(|| format!("emit stats printed non-JSON:\n{text}"))
    }

    /// `certgate emit istio ARGS... --format json`: the WasmPlugin, after checking it
    /// against the pinned WasmPlugin CRD ([`check_wasmplugin`]).
    pub fn emit_istio(&self, args: &[&str]) -> Result<Value> {
        let mut all: Vec<&std::ffi::OsStr> = vec!["emit".as_ref(), "istio".as_ref()];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        all.extend([
            std::ffi::OsStr::new("--format"),
            std::ffi::OsStr::new("json"),
        ]);
        let text = self.run(&all)?;
        check_wasmplugin(&text)
            .with_context(|| format!("`certgate emit istio {}`", args.join(" ")))?;
        serde_json::from_str(&text).with_context(|| format!("emit istio printed non-JSON:\n{text}"))
    }

    /// `certgate eval --table T --cert C [--tls-version V] [--port P] --source-ip
    /// 127.0.0.1`: the CLI's decision for a certificate, as JSON.
    pub fn eval_cert(
        &self,
        table: &Path,
        cert: &Path,
        tls: Option<&str>,
        port: Option<&str>,
    ) -> Result<Value> {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "eval".as_ref(),
            "--table".as_ref(),
            table.as_os_str(),
            "--cert".as_ref(),
            cert.as_os_str(),
        ];
        if let Some(v) = tls {
            args.push("--tls-version".as_ref());
            args.push(v.as_ref());
        }
        if let Some(p) = port {
            args.push("--port".as_ref());
            args.push(p.as_ref());
        }
        args.push("--source-ip".as_ref());
        args.push("127.0.0.1".as_ref());
        let text = self.run(&args)?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// The WasmPlugin CRD from istio/api that the compiler's tests pin.
pub fn wasmplugin_crd() -> PathBuf {
    crate::tools::repo_root().join("compiler/tests/fixtures/istio/wasmplugin-crd.yaml")
}

/// Validates a WasmPlugin (YAML or JSON) against the pinned CRD with
/// `scripts/validate-crd.py` (PyPI `jsonschema`), run by the interpreter `make venv`
/// installs and names in `CERTGATE_PYTHON`.
pub fn check_wasmplugin(text: &str) -> Result<()> {
    let Some(python) = std::env::var_os("CERTGATE_PYTHON").filter(|p| !p.is_empty()) else {
        bail!(
            "CERTGATE_PYTHON is not set: emitted WasmPlugins are validated with PyPI `jsonschema`; \
run the tests through `make e2e` (or `make venv` and export CERTGATE_PYTHON=.tools/venv/bin/python)"
        );
    };
    let dir = tempfile::tempdir()?;
    let object = dir.path().join("wasmplugin.json");
    std::fs::write(&object, text)?;
    let out = Command::new(&python)
        .arg(crate::tools::repo_root().join("scripts/validate-crd.py"))
        .arg(wasmplugin_crd())
        .arg(&object)
        .output()
        .with_context(|| format!("running CERTGATE_PYTHON={python:?} (run `make venv`)"))?;
    if !out.status.success() {
        bail!(
            "the WasmPlugin does not validate against the pinned CRD ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
