//! What the subcommands share: reading policy inputs from files and directories, the
//! file-system CRL loader, reporting diagnostics, reading tables, and the exit codes.

pub mod access_log;
pub mod cert;
pub mod check;
pub mod compile;
pub mod crl;
pub mod crl_fetch;
pub mod diff;
pub mod drill;
pub mod emit;
pub mod eval;
pub mod inspect;
pub mod keygen;
pub mod package;
pub mod report;
pub mod serve;
pub mod test;
pub mod yaml_out;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use certgate_compiler::{Compilation, Input, Loader, Options};

/// Success.
pub const EXIT_OK: u8 = 0;
/// Policy findings: errors, warnings under `--deny-warnings`, or a deny under `--fail-on-deny`.
pub const EXIT_FINDINGS: u8 = 1;
/// Usage or I/O error (clap uses 2 for usage errors too).
pub const EXIT_USAGE: u8 = 2;

/// Output format of diagnostics and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text for people (diagnostics with source snippets, on stderr).
    Human,
    /// Versioned JSON on stdout.
    Json,
}

/// Output format of `check` and `compile` diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiagFormat {
    /// Graphical diagnostics with source snippets, on stderr.
    Human,
    /// The versioned certgate report on stdout (docs/cli.md).
    Json,
    /// A SARIF 2.1.0 log on stdout, for code-scanning services.
    Sarif,
}

/// An error and its causes on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e
        .chain()
        .map(|c| c.to_string().replace('\n', " "))
        .collect();
    parts.join(": ")
}

/// Reads the policy files named on the command line. A directory contributes its `*.yaml`
/// and `*.yml` files (not recursively, sorted by path), except `*.test.yaml`/`*.test.yml`.
pub fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for p in paths {
        let meta =
            std::fs::metadata(p).with_context(|| format!("cannot read `{}`", p.display()))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            let entries = std::fs::read_dir(p)
                .with_context(|| format!("cannot read directory `{}`", p.display()))?;
            for entry in entries {
                let path = entry
                    .with_context(|| format!("cannot read directory `{}`", p.display()))?
                    .path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let is_policy = (name.ends_with(".yaml") || name.ends_with(".yml"))
                    && !name.ends_with(".test.yaml")
                    && !name.ends_with(".test.yml")
                    && !name.starts_with('.');
                if is_policy && path.is_file() {
                    files.push(path);
                }
            }
            files.sort();
            for f in files {
                let relative = f
                    .strip_prefix(p)
                    .unwrap_or(&f)
                    .to_string_lossy()
                    .into_owned();
                inputs.push(read_one(&f, relative)?);
            }
        } else {
            let relative = p.file_name().map_or_else(
                || p.to_string_lossy().into_owned(),
                |n| n.to_string_lossy().into_owned(),
            );
            inputs.push(read_one(p, relative)?);
        }
    }
    Ok(inputs)
}

fn read_one(path: &Path, relative: String) -> anyhow::Result<Input> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("`{}` is not UTF-8 text", path.display()))?;
    Ok(Input {
        path: path.to_string_lossy().into_owned(),
        relative,
        text,
    })
}

/// Reads CRLs relative to the policy file that names them.
#[derive(Debug)]
pub struct FsLoader;

impl Loader for FsLoader {
    fn load(&self, policy: &Input, path: &str) -> Result<Vec<u8>, String> {
        let base = Path::new(&policy.path).parent().unwrap_or(Path::new(""));
        let full = base.join(path);
        std::fs::read(&full).map_err(|e| lower_first(&e.to_string()))
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Compiles the inputs named on the command line; CRLs named by URL are fetched with the
/// default limits and no cache.
pub fn compile_paths(paths: &[PathBuf]) -> anyhow::Result<Compilation> {
    compile_paths_with(paths, &crl_fetch::CrlArgs::default())
}

/// Compiles the inputs named on the command line, fetching CRLs named by URL once each as
/// `crl` says. A fetch that fails falls back to the copy in `--crl-cache` (with a note on
/// stderr) or, without one, is an error diagnostic; after a compilation without errors
/// the fetched copies are stored in the cache.
pub fn compile_paths_with(
    paths: &[PathBuf],
    crl: &crl_fetch::CrlArgs,
) -> anyhow::Result<Compilation> {
    let inputs = read_inputs(paths)?;
    let fetcher = crl_fetch::Fetcher::new(crl)?;
    let mut urls = std::collections::HashMap::new();
    let loader = crl_fetch::FetchingLoader {
        files: &FsLoader,
        fetcher: &fetcher,
        urls: std::cell::RefCell::new(&mut urls),
        fetch: true,
        failures: std::cell::RefCell::new(Vec::new()),
        refresh: None,
    };
    let c = certgate_compiler::compile(inputs, &loader, &Options { now: now() });
    let failures = loader.failures.into_inner();
    for (url, _, why) in &failures {
        if urls.get(url).is_some_and(|u| u.good.is_some()) {
            eprintln!("note: cannot fetch CRL `{url}` ({why}); the copy in --crl-cache was used");
        }
    }
    if c.error_count() == 0 {
        for (url, state) in &urls {
            if let Some(copy) = &state.candidate {
                fetcher
                    .store(url, copy)
                    .with_context(|| format!("cannot store CRL `{url}` in --crl-cache"))?;
            }
        }
    }
    Ok(c)
}

/// Prints diagnostics: human on stderr, JSON and SARIF on stdout.
pub fn report(c: &Compilation, format: DiagFormat, deny_warnings: bool) {
    match format {
        DiagFormat::Json => println!(
            "{}",
            certgate_compiler::diag::report::to_json(c, deny_warnings)
        ),
        DiagFormat::Sarif => println!("{}", certgate_compiler::diag::report::to_sarif(c)),
        DiagFormat::Human => eprint!(
            "{}",
            certgate_compiler::diag::render::render(c, deny_warnings, human_style())
        ),
    }
}

/// How diagnostics are drawn on stderr: colour on a terminal unless `NO_COLOR`, wrapped
/// at `COLUMNS` (default 100).
pub fn human_style() -> certgate_compiler::diag::render::Style {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(100);
    certgate_compiler::diag::render::Style { color, width }
}

/// Reads and decodes a table file.
pub fn read_table(path: &Path) -> anyhow::Result<(Vec<u8>, ruleset::Table)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    match ruleset::decode(&bytes) {
        Ok(t) => Ok((bytes, t)),
        Err(e) => bail!("`{}` is not a valid certgate table: {e}", path.display()),
    }
}
