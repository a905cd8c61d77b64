//! What a run found: one row per operation, the targets checked against them, the
//! text table and the JSON document.

use std::fmt::Write as _;

use serde::Serialize;

use crate::probe::Machine;
use crate::stats::Summary;
use crate::target::StoreKind;

/// One measured operation.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The workload section: `A` (near-empty store), `B` (long conversations), `C`
    /// (large scopes), `D` (many conversations), `E` (HTTP).
    pub section: &'static str,
    /// The operation, e.g. `load20@1M`.
    pub operation: String,
    /// The store's figures (through the `Store` trait object, or the service where
    /// the operation is a service call).
    #[serde(flatten)]
    pub store: Summary,
    /// The raw baseline's figures, measured in the same run, interleaved call by
    /// call with the store's; `None` where there is no baseline.
    pub raw: Option<Summary>,
    /// Store p50 / raw p50.
    pub ratio_p50: Option<f64>,
    /// Store p99 / raw p99.
    pub ratio_p99: Option<f64>,
    /// Raw throughput / store throughput: how many times more operations per second
    /// the baseline carried out.
    pub ratio_throughput: Option<f64>,
}

impl Row {
    /// A row, with its ratios computed.
    pub fn new(
        section: &'static str,
        operation: impl Into<String>,
        store: Summary,
        raw: Option<Summary>,
    ) -> Self {
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        Self {
            section,
            operation: operation.into(),
            store,
            raw,
            ratio_p50: raw.and_then(|raw| ratio(store.p50_us, raw.p50_us)),
            ratio_p99: raw.and_then(|raw| ratio(store.p99_us, raw.p99_us)),
            ratio_throughput: raw
                .and_then(|raw| ratio(raw.throughput_per_s, store.throughput_per_s)),
        }
    }
}

/// How long one seeding step took (untimed for the figures, reported for scale).
#[derive(Debug, Clone, Serialize)]
pub struct Seeding {
    /// The section seeded.
    pub section: &'static str,
    /// What was written.
    pub what: String,
    /// Seconds it took.
    pub seconds: f64,
}

/// The peak resident set size after a section.
#[derive(Debug, Clone, Serialize)]
pub struct RssMark {
    /// The section just finished.
    pub after: &'static str,
    /// `VmHWM` of the process, in bytes (`None` where `/proc` is not readable).
    pub peak_rss_bytes: Option<u64>,
}

/// One performance target of the issue, checked against this run's rows.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What is promised.
    pub target: String,
    /// The measured value, in the target's unit.
    pub measured: f64,
    /// The bound.
    pub limit: f64,
    /// Whether the measured value keeps the bound.
    pub met: bool,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `sqlite`, `memory` or `postgres`.
    pub store: String,
    /// Whether it was a `--quick` run.
    pub quick: bool,
    /// The command line, as given.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// 100 `fdatasync`s of a 4 KiB write, in the folder of the database file (for
    /// SQLite) or the temporary folder.
    pub fsync: Summary,
    /// What the raw baseline is, or why there is none.
    pub baseline: String,
    /// Load averages when the run ended.
    pub load_at_end: Option<[f64; 3]>,
    /// Seconds the whole run took, seeding included.
    pub elapsed_s: f64,
    /// The seeding steps.
    pub seeding: Vec<Seeding>,
    /// The operations, in the order run.
    pub operations: Vec<Row>,
    /// The peak RSS after each section.
    pub peak_rss: Vec<RssMark>,
    /// Observations of the run beside the figures (e.g. writes per commit).
    pub notes: Vec<String>,
    /// The targets, checked.
    pub targets: Vec<TargetCheck>,
}

fn find<'a>(rows: &'a [Row], operation: &str) -> Option<&'a Row> {
    rows.iter().find(|row| row.operation == operation)
}

/// Whether an operation is a hot read, held to the read targets.
fn is_read(operation: &str) -> bool {
    [
        "get",
        "load20",
        "switch",
        "list50",
        "page50",
        "context",
        "title_filter",
    ]
    .iter()
    .any(|prefix| operation.starts_with(prefix))
}

/// Whether an operation is one durable single-message append.
fn is_single_append(operation: &str) -> bool {
    operation == "append" || operation.starts_with("append@")
}

/// Checks the targets against `rows`, for those rows the run has: read,
/// search and durable-append ratios where there is a raw baseline, flatness, group
/// commit and reopening for the durable stores, the tree against the linear
/// conversation, the switch latency of the memory store, and the HTTP path against
/// the memory store, the raw read and the seed stack.
pub fn check_targets(kind: StoreKind, rows: &[Row]) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    let mut check = |target: String, measured: f64, limit: f64, at_most: bool| {
        checks.push(TargetCheck {
            target,
            measured,
            limit,
            met: if at_most {
                measured <= limit
            } else {
                measured >= limit
            },
        });
    };
    for row in rows.iter().filter(|row| is_read(&row.operation)) {
        if let (Some(p50), Some(p99)) = (row.ratio_p50, row.ratio_p99) {
            check(
                format!("{} p50 / raw p50 <= 1.5", row.operation),
                p50,
                1.5,
                true,
            );
            check(
                format!("{} p99 / raw p99 <= 2", row.operation),
                p99,
                2.0,
                true,
            );
        }
    }
    for row in rows
        .iter()
        .filter(|row| row.operation.starts_with("search"))
    {
        if let Some(p50) = row.ratio_p50 {
            check(
                format!("{} p50 / raw p50 <= 2", row.operation),
                p50,
                2.0,
                true,
            );
        }
    }
    for (long, short, limit) in [
        ("load20@1M", "load20@500", 1.5),
        ("list50@100k", "list50@100", 1.5),
        ("list50@D", "list50@100", 1.5),
        ("list50@D-rot", "list50@100", 1.5),
        ("load20@tree", "load20@20k", 1.2),
        ("switch@tree", "switch@500", 1.2),
        ("search_rare@10k", "search_rare@100", 1.5),
        ("search_common@10k", "search_common@100", 1.5),
        ("search_rare@1M", "search_rare@100", 1.5),
        ("search_common@1M", "search_common@100", 1.5),
    ] {
        if let (Some(long_row), Some(short_row)) = (find(rows, long), find(rows, short)) {
            check(
                format!("flat: {long} p50 / {short} p50 <= {limit}"),
                long_row.store.p50_us / short_row.store.p50_us,
                limit,
                true,
            );
        }
    }
    for row in rows.iter().filter(|row| is_single_append(&row.operation)) {
        if let Some(p50) = row.ratio_p50 {
            check(
                format!("{} p50 / raw single-commit p50 <= 1.2", row.operation),
                p50,
                1.2,
                true,
            );
        }
    }
    if let Some(p50) = find(rows, "raw_append_indexed_vs_unindexed").and_then(|row| row.ratio_p50) {
        check(
            "search index: durable append p50 with / without <= 1.15".to_owned(),
            p50,
            1.15,
            true,
        );
    }
    if let Some(p50) = find(rows, "reopen+switch").and_then(|row| row.ratio_p50) {
        check(
            "reopen+switch p50 / raw p50 <= 2".to_owned(),
            p50,
            2.0,
            true,
        );
    }
    if kind == StoreKind::Sqlite
        && let Some(row) = find(rows, "fork500@tree")
    {
        check(
            "fork500@tree p50 < 20000 us".to_owned(),
            row.store.p50_us,
            20_000.0,
            true,
        );
    }
    if kind != StoreKind::Memory
        && let (Some(concurrent), Some(single)) =
            (find(rows, "append_concurrent8"), find(rows, "append"))
    {
        check(
            "group commit: append_concurrent8 throughput / append throughput >= 4".to_owned(),
            concurrent.store.throughput_per_s / single.store.throughput_per_s,
            4.0,
            false,
        );
    }
    if kind == StoreKind::Memory {
        for row in rows
            .iter()
            .filter(|row| row.operation.starts_with("switch"))
        {
            check(
                format!("memory {} p50 < 5 us", row.operation),
                row.store.p50_us,
                5.0,
                true,
            );
        }
    }
    // One connection, from the in-process client (`http_…`) and from wrk
    // (`http_c1_…`); the raw cost of a read is the in-process row's baseline.
    for (read, timed) in [
        ("http_get_conversation", "http_get_conversation"),
        ("http_get_messages20@500", "http_get_messages20@500"),
        ("http_get_conversation", "http_c1_get_conversation"),
        ("http_get_messages20@500", "http_c1_get_messages20@500"),
    ] {
        if let (Some(row), Some(memory), Some(raw)) = (
            find(rows, timed),
            find(rows, &format!("memory:{timed}")),
            find(rows, read).and_then(|row| row.raw),
        ) {
            check(
                format!("{timed} p50 <= memory p50 + 1.5 x raw p50 (us)"),
                row.store.p50_us,
                memory.store.p50_us + 1.5 * raw.p50_us,
                true,
            );
        }
    }
    for (operation, limit) in [
        ("http_get_conversation", 5.0),
        ("http_get_messages20@500", 5.0),
        ("http_c1_get_conversation", 5.0),
        ("http_c1_get_messages20@500", 5.0),
        ("http_post_message", 4.0),
    ] {
        if let (Some(row), Some(seed)) = (
            find(rows, operation),
            find(rows, &format!("seed:{operation}")),
        ) {
            check(
                format!("vs seed stack: {operation} seed p50 / p50 >= {limit}"),
                seed.store.p50_us / row.store.p50_us,
                limit,
                false,
            );
        }
    }
    let c32 = "http_c32_get_conversation";
    if let (Some(row), Some(seed)) = (find(rows, c32), find(rows, &format!("seed:{c32}"))) {
        check(
            format!("vs seed stack: {c32} req/s / seed req/s >= 12"),
            row.store.throughput_per_s / seed.store.throughput_per_s,
            12.0,
            false,
        );
    }
    checks
}

fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}x"))
}

fn micros(value: f64) -> String {
    if value >= 1000.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// The report as text: the environment, the table of operations, the targets.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let m = &report.machine;
    let _ = writeln!(
        out,
        "store: {}{}   cores: {}   cpu: {}   SQLite {}",
        report.store,
        if report.quick { " (--quick)" } else { "" },
        m.cores,
        m.cpu.as_deref().unwrap_or("?"),
        m.sqlite_version
    );
    let load = |l: Option<[f64; 3]>| {
        l.map_or_else(
            || "?".to_owned(),
            |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
        )
    };
    let _ = writeln!(
        out,
        "load at start: {}   at end: {}   fsync (4 KiB fdatasync): p50 {} us, p99 {} us",
        load(m.load_at_start),
        load(report.load_at_end),
        micros(report.fsync.p50_us),
        micros(report.fsync.p99_us)
    );
    let _ = writeln!(out, "baseline: {}", report.baseline);
    for seeding in &report.seeding {
        let _ = writeln!(
            out,
            "seeded {}: {} in {:.1} s",
            seeding.section, seeding.what, seeding.seconds
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| sec | operation | n | p50 us | p99 us | ops/s | raw p50 us | raw p99 us | raw ops/s | p50 x | p99 x | ops/s x |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in &report.operations {
        let s = &row.store;
        let (rp50, rp99, rtp) = row.raw.map_or_else(
            || ("—".to_owned(), "—".to_owned(), "—".to_owned()),
            |r| {
                (
                    micros(r.p50_us),
                    micros(r.p99_us),
                    format!("{:.0}", r.throughput_per_s),
                )
            },
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            row.section,
            row.operation,
            s.n,
            micros(s.p50_us),
            micros(s.p99_us),
            s.throughput_per_s,
            rp50,
            rp99,
            rtp,
            ratio_text(row.ratio_p50),
            ratio_text(row.ratio_p99),
            ratio_text(row.ratio_throughput),
        );
    }
    let _ = writeln!(out);
    for mark in &report.peak_rss {
        let _ = writeln!(
            out,
            "peak RSS after {}: {}",
            mark.after,
            mark.peak_rss_bytes.map_or_else(
                || "?".to_owned(),
                |b| format!("{:.0} MiB", b as f64 / 1_048_576.0)
            )
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(out);
    for check in &report.targets {
        let _ = writeln!(
            out,
            "{} {}: {:.2} (limit {:.2})",
            if check.met { "MET   " } else { "MISSED" },
            check.target,
            check.measured,
            check.limit
        );
    }
    let _ = writeln!(out, "total {:.0} s", report.elapsed_s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50: f64, p99: f64, tput: f64) -> Summary {
        Summary {
            n: 100,
            p50_us: p50,
            p99_us: p99,
            max_us: p99,
            throughput_per_s: tput,
        }
    }

    #[test]
    fn ratios_and_targets() {
        let rows = vec![
            Row::new(
                "A",
                "append",
                summary(115.0, 400.0, 7000.0),
                Some(summary(100.0, 200.0, 9000.0)),
            ),
            Row::new(
                "A",
                "append_concurrent8",
                summary(300.0, 900.0, 30_000.0),
                Some(summary(250.0, 500.0, 32_000.0)),
            ),
            Row::new(
                "B",
                "load20@500",
                summary(30.0, 60.0, 30_000.0),
                Some(summary(20.0, 30.0, 50_000.0)),
            ),
            Row::new(
                "B",
                "load20@1M",
                summary(50.0, 80.0, 20_000.0),
                Some(summary(20.0, 30.0, 50_000.0)),
            ),
        ];
        assert!((rows[0].ratio_p50.unwrap() - 1.15).abs() < 1e-9);
        assert_eq!(rows[0].ratio_p99, Some(2.0));
        let checks = check_targets(StoreKind::Sqlite, &rows);
        let get = |name: &str| checks.iter().find(|c| c.target.starts_with(name)).unwrap();
        assert!(get("append p50").met);
        assert!(get("load20@500 p50").met);
        assert!(!get("flat: load20@1M").met);
        assert!(get("group commit").met);
        assert!((get("group commit").measured - 30_000.0 / 7000.0).abs() < 1e-9);
        let text = render(&Report {
            store: "sqlite".into(),
            quick: true,
            command: "scale".into(),
            machine: Machine::probe(),
            fsync: summary(60.0, 400.0, 10_000.0),
            baseline: "raw".into(),
            load_at_end: None,
            elapsed_s: 1.0,
            seeding: vec![],
            operations: rows,
            peak_rss: vec![],
            notes: vec![],
            targets: checks,
        });
        assert!(text.contains("| A | append | 100 | 115.0 | 400.0 | 7000 | 100.0 | 200.0 | 9000 | 1.15x | 2.00x | 1.29x |"));
        assert!(text.contains("MISSED flat: load20@1M"));
    }

    #[test]
    fn http_targets_against_memory_raw_and_seed() {
        let rows = vec![
            Row::new(
                "E",
                "http_get_conversation",
                summary(100.0, 200.0, 10_000.0),
                Some(summary(20.0, 40.0, 50_000.0)),
            ),
            Row::new(
                "E",
                "memory:http_get_conversation",
                summary(75.0, 150.0, 13_000.0),
                None,
            ),
            Row::new(
                "E",
                "seed:http_get_conversation",
                summary(450.0, 900.0, 2_000.0),
                None,
            ),
            Row::new(
                "E",
                "http_c32_get_conversation",
                summary(2_000.0, 4_000.0, 15_000.0),
                None,
            ),
            Row::new(
                "E",
                "seed:http_c32_get_conversation",
                summary(20_000.0, 40_000.0, 1_500.0),
                None,
            ),
        ];
        let checks = check_targets(StoreKind::Sqlite, &rows);
        let get = |name: &str| checks.iter().find(|c| c.target.starts_with(name)).unwrap();
        // 75 + 1.5 x 20 = 105 >= 100.
        let pair = get("http_get_conversation p50 <= memory");
        assert!(pair.met && (pair.limit - 105.0).abs() < 1e-9);
        // 450 / 100 = 4.5 < 5.
        let seed = get("vs seed stack: http_get_conversation");
        assert!(!seed.met && (seed.measured - 4.5).abs() < 1e-9);
        let c32 = get("vs seed stack: http_c32");
        assert!(!c32.met && (c32.measured - 10.0).abs() < 1e-9);
        assert!(
            checks
                .iter()
                .all(|c| !c.target.starts_with("http_get_messages"))
        );
    }
}
