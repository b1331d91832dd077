//! `certgate test`: runs `*.test.yaml` policy tests through the engine `certgate eval` and the
//! filter use, like a test runner: a line per case, the expected/actual diff of each failure,
//! `N passed, N failed` last, JSON and JUnit XML for CI, and the rules no case exercised.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use certgate_compiler::ci::test::{self as policytest, TestSummary, Uncovered};
use certgate_compiler::{Compilation, Input};

use super::{FsLoader, EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

/// Output of `certgate test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFormat {
    /// A line per case, the diff of each failure, `N passed, N failed` last.
    Human,
    /// The versioned JSON report.
    Json,
}

/// Run policy tests.
#[derive(Debug, clap::Args)]
#[command(
    about = "Run policy tests (*.test.yaml): expected decisions for described peers",
    after_help = "A test file names the policies it tests (default: `X.yaml` beside `X.test.yaml`) and \
a list of cases, each a peer (an identity, a certificate file, or a described certificate) and the \
expected decision. The format is in docs/cli.md#test.\n\n\
Exit codes: 0 every case passed, 1 a case failed (or its policies do not compile), 2 usage or I/O \
error, or a malformed test file.\n\n\
Examples:\n  certgate test policies/\n  certgate test --coverage policies/zero-trust.test.yaml\n  \
certgate test --format json --junit policy-tests.xml policies/"
)]
pub struct Args {
    /// Test files, directories (their `*.test.yaml`/`*.test.yml`), or policy files (their `X.test.yaml`)
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output on stdout
    #[arg(long, value_enum, default_value_t = TestFormat::Human)]
    pub format: TestFormat,
    /// Also write a JUnit XML report to FILE
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// List the rules that no case exercised (decided)
    #[arg(long)]
    pub coverage: bool,
}

fn is_test_file(name: &str) -> bool {
    name.ends_with(".test.yaml") || name.ends_with(".test.yml")
}

fn is_policy_file(name: &str) -> bool {
    (name.ends_with(".yaml") || name.ends_with(".yml")) && !is_test_file(name)
}

fn dir_files(dir: &Path, keep: fn(&str) -> bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory `{}`", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("cannot read directory `{}`", dir.display()))?
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if keep(name) && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `X.test.yaml` → `X.yaml` (or `X.yml`).
fn default_policy(test: &Path) -> Option<PathBuf> {
    let name = test.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".test.yaml")
        .or_else(|| name.strip_suffix(".test.yml"))?;
    ["yaml", "yml"]
        .iter()
        .map(|ext| test.with_file_name(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
}

/// The test files the arguments name, and the directories' policy files (for coverage).
fn collect(paths: &[PathBuf]) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut tests = Vec::new();
    let mut dir_policies = Vec::new();
    for p in paths {
        let meta =
            std::fs::metadata(p).with_context(|| format!("cannot read `{}`", p.display()))?;
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if meta.is_dir() {
            tests.extend(dir_files(p, is_test_file)?);
            dir_policies.extend(dir_files(p, is_policy_file)?);
        } else if is_test_file(name) {
            tests.push(p.clone());
        } else {
            let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
            let found = ["test.yaml", "test.yml"]
                .iter()
                .map(|ext| p.with_file_name(format!("{stem}.{ext}")))
                .find(|t| t.is_file());
            match found {
                Some(t) => tests.push(t),
                None => bail!(
                    "`{}` is not a test file and has no `{stem}.test.yaml` beside it",
                    p.display()
                ),
            }
        }
    }
    let mut seen = BTreeSet::new();
    tests.retain(|t| seen.insert(t.clone()));
    if tests.is_empty() {
        bail!("no test files (`*.test.yaml`) found in the given paths");
    }
    Ok((tests, dir_policies))
}

/// Rule name → (policy, file, line) for every rule a compilation read.
fn rule_places(c: &Compilation) -> Vec<(String, Uncovered)> {
    let mut out = Vec::new();
    for p in &c.policies {
        for r in &p.spec.rules {
            if let Some((file, start, _)) = c.locate(r.name.span) {
                out.push((
                    r.name.value.clone(),
                    Uncovered {
                        rule: r.name.value.clone(),
                        policy: p.name.value.clone(),
                        file: file.to_string(),
                        line: start.line,
                    },
                ));
            }
        }
    }
    out
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let (tests, dir_policies) = collect(&args.paths)?;
    let now = super::now();
    let mut results = Vec::new();
    let mut malformed = Vec::new();
    // (policy file, rule) → where; and which of them some case decided.
    let mut rules: BTreeMap<(String, String), Uncovered> = BTreeMap::new();
    let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
    let mut compiled_files: BTreeSet<PathBuf> = BTreeSet::new();
    for test in &tests {
        let text = std::fs::read_to_string(test)
            .with_context(|| format!("cannot read `{}`", test.display()))?;
        let input = Input::new(test.to_string_lossy(), text);
        let file = match policytest::parse(0, &input.text) {
            Ok(f) => f,
            Err(errors) => {
                // Drawn like policy diagnostics: the snippet, what is wrong, `help`.
                malformed.push(certgate_compiler::diag::render::render_diagnostics(
                    std::slice::from_ref(&input),
                    &errors,
                    super::human_style(),
                ));
                continue;
            }
        };
        let policy_paths: Vec<PathBuf> = if file.policies.is_empty() {
            match default_policy(test) {
                Some(p) => vec![p],
                None => {
                    malformed.push(format!(
                        "error: {}: no `policies` given and no policy file of the same name beside it\n",
                        input.path
                    ));
                    continue;
                }
            }
        } else {
            let base = test.parent().unwrap_or(Path::new(""));
            file.policies.iter().map(|p| base.join(p)).collect()
        };
        compiled_files.extend(policy_paths.iter().cloned());
        let inputs = super::read_inputs(&policy_paths)?;
        let c = certgate_compiler::compile(inputs, &FsLoader, &certgate_compiler::Options { now });
        let places = rule_places(&c);
        for (_, u) in &places {
            rules.insert((u.file.clone(), u.rule.clone()), u.clone());
        }
        match &c.table {
            None => {
                let names: Vec<String> = policy_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                let why = format!(
                    "the policies do not compile ({} error{}): run `certgate check {}`",
                    c.error_count(),
                    if c.error_count() == 1 { "" } else { "s" },
                    names.join(" ")
                );
                results.extend(policytest::not_run(&file, &input, &why));
            }
            Some(table) => {
                let engine = ruleset::Engine::new(table.clone());
                let mut exercised = BTreeSet::new();
                results.extend(policytest::run(
                    &file,
                    &input,
                    &engine,
                    &FsLoader,
                    &mut exercised,
                ));
                for (name, u) in places {
                    if exercised.contains(&name) {
                        covered.insert((u.file, name));
                    }
                }
            }
        }
    }
    if !malformed.is_empty() {
        for m in &malformed {
            eprint!("{m}");
        }
        return Ok(EXIT_USAGE);
    }
    let uncovered = if args.coverage {
        // Policies in the given directories that no test file compiles: every rule is
        // uncovered.
        for p in dir_policies.iter().filter(|p| !compiled_files.contains(*p)) {
            let c = certgate_compiler::compile(
                super::read_inputs(std::slice::from_ref(p))?,
                &FsLoader,
                &certgate_compiler::Options { now },
            );
            for (_, u) in rule_places(&c) {
                rules.insert((u.file.clone(), u.rule.clone()), u);
            }
        }
        let mut list: Vec<Uncovered> = rules
            .into_iter()
            .filter(|(k, _)| !covered.contains(k))
            .map(|(_, u)| u)
            .collect();
        list.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Some(list)
    } else {
        None
    };
    let summary = TestSummary::new(results, uncovered);
    if let Some(path) = &args.junit {
        std::fs::write(path, summary.to_junit())
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    match args.format {
        TestFormat::Human => print!("{}", summary.to_text()),
        TestFormat::Json => println!("{}", summary.to_json()),
    }
    Ok(if summary.failed > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}
