//! The environment of a run: the machine, the cost of an fsync, the peak memory.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::Result;
use crate::stats::{Samples, Summary};

/// What the machine is and how busy it was.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cores: usize,
    /// The CPU model, from `/proc/cpuinfo`.
    pub cpu: Option<String>,
    /// The kernel release.
    pub kernel: Option<String>,
    /// Load averages over 1, 5 and 15 minutes when the run started.
    pub load_at_start: Option<[f64; 3]>,
    /// The SQLite library linked (the same one for the store and the raw baseline).
    pub sqlite_version: String,
}

impl Machine {
    /// Reads what Linux tells; fields it does not are `None`.
    pub fn probe() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|text| {
                    text.lines()
                        .find(|line| line.starts_with("model name"))
                        .and_then(|line| line.split_once(':'))
                        .map(|(_, model)| model.trim().to_owned())
                }),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|text| text.trim().to_owned()),
            load_at_start: load_average(),
            sqlite_version: rusqlite::version().to_owned(),
        }
    }
}

/// The load averages (1, 5, 15 minutes), from `/proc/loadavg`.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

/// The peak resident set size of this process so far (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Times `count` `fdatasync`s of a file in `dir`, each after rewriting 4 KiB of it:
/// the floor of a durable commit on that disk (a WAL commit with `synchronous=FULL`
/// syncs the WAL once). The file is removed afterwards.
///
/// # Errors
/// When the file cannot be written or synced.
pub fn fsync_probe(dir: &Path, count: usize) -> Result<Summary> {
    let path = dir.join("fsync-probe.tmp");
    let mut file = std::fs::File::create(&path)?;
    let page = [0x5a_u8; 4096];
    let mut samples = Samples::with_capacity(count);
    for _ in 0..count {
        file.write_all(&page)?;
        let started = Instant::now();
        file.sync_data()?;
        samples.record(started.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    samples
        .summary(1)
        .ok_or_else(|| crate::Error::harness("the fsync probe ran no sync"))
}
