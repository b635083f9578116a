//! CPU time and memory of a process, read from `/proc` (Linux).

/// A process whose resource use a benchmark reports.
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) pid: u32,
}

/// Clock ticks per second of `/proc/<pid>/stat` times; 100 on every Linux we run on
/// (`getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;

impl Proc {
    /// User + system CPU seconds used so far.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return 0.0;
        };
        // The command name (field 2) may contain spaces; fields after it are plain.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return 0.0;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / TICKS_PER_SECOND
    }

    /// Resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return 0;
        };
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    }
}

/// CPU seconds per process between two snapshots.
pub(crate) fn cpu_delta(procs: &[Proc], before: &[f64]) -> Vec<(String, f64)> {
    procs
        .iter()
        .zip(before)
        .map(|(p, b)| (p.name.clone(), p.cpu_seconds() - b))
        .collect()
}

pub(crate) fn cpu_snapshot(procs: &[Proc]) -> Vec<f64> {
    procs.iter().map(Proc::cpu_seconds).collect()
}
