//! Whose CPU a filter costs: `perf record` on the Envoy process while one case runs, then
//! every sample's call chain sorted into three kinds:
//!
//! - **wasm code**: the innermost frame is in V8's generated code (anonymous executable
//!   memory, which perf names `perf-<pid>.map` or `[JIT]`); the filter's own work, and
//!   the proxy-wasm SDK's;
//! - **host calls from wasm**: the innermost frame is Envoy (or libc, or the kernel) but
//!   a frame further out is wasm code, so the filter called it: the proxy-wasm ABI
//!   functions (property reads, counters, logging) and everything they do;
//! - the rest: TLS, the proxy, the access log, wasm context creation and callbacks.
//!
//! The first two together are what a filter adds beyond the host's own per-connection
//! floor, and unlike Envoy's total CPU per connection (which swings by ±25% from round
//! to round on a virtual CPU) their difference between two cases is a few percent of
//! the samples, not of the noise. Envoy is stripped, so host calls are not split by
//! function; `(wd)` (the no-op filter reading one attribute) prices one property read.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

/// Sampling frequency: a prime, so sampling does not lock onto a periodic timer.
pub const FREQUENCY: u32 = 1999;

/// Samples of one profiled window, sorted by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    /// Every sample of the Envoy process.
    pub samples: u64,
    /// Innermost frame in wasm code.
    pub wasm: u64,
    /// Innermost frame outside wasm code, called (at some depth) from wasm code.
    pub host_from_wasm: u64,
}

impl Split {
    /// Share of the samples in wasm code.
    pub fn wasm_share(&self) -> f64 {
        self.share(self.wasm)
    }

    /// Share of the samples in host calls made from wasm code.
    pub fn host_share(&self) -> f64 {
        self.share(self.host_from_wasm)
    }

    fn share(&self, n: u64) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            n as f64 / self.samples as f64
        }
    }
}

/// Why profiling cannot run here, or `None` when `perf` works.
pub fn unavailable() -> Option<String> {
    match Command::new("perf").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`perf --version` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!(
            "no `perf` ({e}); `make perf` installs Debian's linux-perf"
        )),
    }
}

/// Starts sampling process `pid` with call chains for `seconds`, into `out`.
pub fn record(pid: u32, seconds: f64, out: &Path) -> Result<Child> {
    Command::new("perf")
        // No build-id collection: it costs seconds per file on a stripped 100 MB Envoy.
        .args([
            "record",
            "-q",
            "-B",
            "-N",
            "-g",
            "-F",
            &FREQUENCY.to_string(),
            "-p",
        ])
        .arg(pid.to_string())
        .arg("-o")
        .arg(out)
        .args(["--", "sleep", &format!("{seconds:.3}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting perf record")
}

/// Waits for a [`record`] and checks that it wrote its file.
pub fn finish(child: Child) -> Result<()> {
    let out = child
        .wait_with_output()
        .context("waiting for perf record")?;
    if !out.status.success() {
        bail!(
            "perf record failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Sorts the samples of a [`record`]ed file.
pub fn split(data: &Path) -> Result<Split> {
    let out = Command::new("perf")
        .args(["script", "-F", "ip,dso", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .context("running perf script")?;
    if !out.status.success() {
        bail!("perf script failed on {}", data.display());
    }
    Ok(split_script(&String::from_utf8_lossy(&out.stdout)))
}

/// Whether a `perf script` frame line (`<ip> (<dso>)`) is in V8's generated code.
fn is_wasm_frame(line: &str) -> bool {
    let dso = line.rsplit_once('(').map_or("", |(_, d)| d);
    dso.starts_with("[JIT]")
        || dso
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_prefix("perf-"))
            .and_then(|f| f.strip_suffix(".map)"))
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// [`split`] on `perf script -F ip,dso` text: one sample per block of frame lines,
/// innermost first, blocks separated by blank lines.
pub fn split_script(text: &str) -> Split {
    let mut s = Split::default();
    let mut frames = Vec::new();
    let mut tally = |frames: &mut Vec<bool>| {
        if let Some((&leaf, outer)) = frames.split_first() {
            s.samples += 1;
            if leaf {
                s.wasm += 1;
            } else if outer.iter().any(|&w| w) {
                s.host_from_wasm += 1;
            }
        }
        frames.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            tally(&mut frames);
        } else {
            frames.push(is_wasm_frame(line));
        }
    }
    tally(&mut frames);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_sorted_by_their_innermost_frame_and_its_callers() {
        let text = "\
\t    5cf1107 (/opt/envoy/envoy)
\t    3d1691765bc0 (/tmp/perf-2046.map)
\t    57b389a (/opt/envoy/envoy)

\t    3d1691765bc0 (/tmp/perf-2046.map)
\t    57b389a (/opt/envoy/envoy)

\t    16395a (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t    5cc34f6 (/opt/envoy/envoy)

\t    7eee88cc050a ([JIT] tid 2046)

\t    ffffffff81000000 ([kernel.kallsyms])
\t    2fadd35 (/opt/envoy/envoy)
\t    7eee88cc050a ([JIT] tid 2046)
\t    5b684f3 (/opt/envoy/envoy)
";
        assert_eq!(
            split_script(text),
            Split {
                samples: 5,
                wasm: 2,
                host_from_wasm: 2
            }
        );
    }

    #[test]
    fn only_perf_maps_and_jit_count_as_wasm() {
        assert!(is_wasm_frame("\t 3d16 (/tmp/perf-2046.map)"));
        assert!(is_wasm_frame("\t 3d16 ([JIT] tid 7)"));
        assert!(!is_wasm_frame("\t 3d16 (/tmp/perf-x.map)"));
        assert!(!is_wasm_frame("\t 3d16 (/usr/lib/perf-1.so)"));
        assert!(!is_wasm_frame("\t 3d16 ([unknown])"));
    }
}
