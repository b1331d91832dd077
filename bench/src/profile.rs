//! Whose CPU a filter costs: `perf record` on the Envoy process while the cases run in
//! interleaved phases, each sample assigned to its phase by time, and its call chain
//! sorted into three kinds:
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
//! floor. Envoy's total CPU per connection swings by ±25% from phase to phase on a
//! virtual CPU, far more than a few microseconds; the filter's share of the samples
//! does not depend on the handshake's cost. Envoy is stripped, so host calls are not
//! split by function; case `(wd)` (the no-op filter reading one attribute) prices one
//! property read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Where one sample's innermost frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// In wasm code.
    Wasm,
    /// Outside wasm code, called from it.
    HostFromWasm,
    /// Anywhere else.
    Other,
}

/// A profile being recorded: `perf record` on one process until [`Recording::stop`].
#[derive(Debug)]
pub struct Recording {
    perf: Child,
    data: PathBuf,
}

impl Recording {
    /// Starts sampling process `pid` with call chains into `data`. Samples carry
    /// wall-clock (`CLOCK_REALTIME`) times, so they can be told apart by phase
    /// afterwards with [`SystemTime`] bounds.
    pub fn start(pid: u32, data: &Path) -> Result<Recording> {
        let perf = Command::new("perf")
            // No build-id collection: it costs seconds on a stripped 100 MB Envoy.
            .args(["record", "-q", "-B", "-N", "-g", "-k", "realtime", "-F"])
            .arg(FREQUENCY.to_string())
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting perf record")?;
        Ok(Recording {
            perf,
            data: data.to_path_buf(),
        })
    }

    /// Stops recording (SIGINT, as Ctrl-C would) and reads every sample: its time in
    /// seconds since the Unix epoch, and its [`Kind`].
    pub fn stop(mut self) -> Result<Vec<(f64, Kind)>> {
        let interrupted = Command::new("kill")
            .args(["-INT", &self.perf.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !interrupted {
            let _ = self.perf.kill();
        }
        let out = self
            .perf
            .wait_with_output()
            .context("waiting for perf record")?;
        if !interrupted || !self.data.is_file() {
            bail!(
                "perf record did not finish: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let script = Command::new("perf")
            .args(["script", "-F", "time,ip,dso", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .context("running perf script")?;
        let _ = std::fs::remove_file(&self.data);
        if !script.status.success() {
            bail!("perf script failed");
        }
        Ok(samples(&String::from_utf8_lossy(&script.stdout)))
    }
}

/// Seconds since the Unix epoch, as `perf script` prints `CLOCK_REALTIME` times.
pub fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The [`Split`] of the samples taken between `from` and `to`.
pub fn split_between(samples: &[(f64, Kind)], from: SystemTime, to: SystemTime) -> Split {
    let (from, to) = (epoch_seconds(from), epoch_seconds(to));
    let mut s = Split::default();
    for (_, kind) in samples.iter().filter(|(t, _)| *t >= from && *t < to) {
        s.samples += 1;
        match kind {
            Kind::Wasm => s.wasm += 1,
            Kind::HostFromWasm => s.host_from_wasm += 1,
            Kind::Other => {}
        }
    }
    s
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

/// The samples of `perf script -F time,ip,dso` text: each a `<seconds>:` line, then its
/// frames innermost first, one per line; samples end with a blank line.
pub fn samples(text: &str) -> Vec<(f64, Kind)> {
    let mut out = Vec::new();
    let mut time = None;
    let mut frames: Vec<bool> = Vec::new();
    let mut flush = |time: &mut Option<f64>, frames: &mut Vec<bool>| {
        if let (Some(t), Some((&leaf, outer))) = (time.take(), frames.split_first()) {
            let kind = if leaf {
                Kind::Wasm
            } else if outer.iter().any(|&w| w) {
                Kind::HostFromWasm
            } else {
                Kind::Other
            };
            out.push((t, kind));
        }
        frames.clear();
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            flush(&mut time, &mut frames);
        } else if let Some(t) = trimmed.strip_suffix(':').and_then(|t| t.parse().ok()) {
            flush(&mut time, &mut frames);
            time = Some(t);
        } else {
            frames.push(is_wasm_frame(line));
        }
    }
    flush(&mut time, &mut frames);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SCRIPT: &str = "\
1795902845.100000: 
\t    5cf1107 (/opt/envoy/envoy)
\t    3d1691765bc0 (/tmp/perf-2046.map)
\t    57b389a (/opt/envoy/envoy)

1795902845.200000: 
\t    3d1691765bc0 (/tmp/perf-2046.map)
\t    57b389a (/opt/envoy/envoy)

1795902845.300000: 
\t    16395a (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t    5cc34f6 (/opt/envoy/envoy)

1795902846.100000: 
\t    7eee88cc050a ([JIT] tid 2046)

1795902846.200000: 
\t    ffffffff81000000 ([kernel.kallsyms])
\t    2fadd35 (/opt/envoy/envoy)
\t    7eee88cc050a ([JIT] tid 2046)
\t    5b684f3 (/opt/envoy/envoy)
";

    #[test]
    fn samples_are_sorted_by_their_innermost_frame_and_its_callers() {
        let kinds: Vec<Kind> = samples(SCRIPT).into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            kinds,
            [
                Kind::HostFromWasm,
                Kind::Wasm,
                Kind::Other,
                Kind::Wasm,
                Kind::HostFromWasm
            ]
        );
    }

    #[test]
    fn a_split_counts_only_its_window() {
        let all = samples(SCRIPT);
        let at = |s: f64| UNIX_EPOCH + Duration::from_secs_f64(s);
        assert_eq!(
            split_between(&all, at(1795902845.0), at(1795902846.0)),
            Split {
                samples: 3,
                wasm: 1,
                host_from_wasm: 1
            }
        );
        assert_eq!(
            split_between(&all, at(1795902846.0), at(1795902847.0)),
            Split {
                samples: 2,
                wasm: 1,
                host_from_wasm: 1
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
