//! Reading a process's CPU time and memory from /proc, and latency percentiles.

use serde_json::{Value, json};

/// Clock ticks per second of /proc/*/stat times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU time of a process (utime + stime from /proc/PID/stat), in seconds.
pub fn stat_cpu(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

/// CPU time of a process summed over its live threads' scheduler run times
/// (/proc/PID/task/*/sched `se.sum_exec_runtime`), in seconds: finer than ticks.
pub fn sched_cpu(pid: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path().join("sched")) else {
            continue;
        };
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("se.sum_exec_runtime")
                && let Ok(ms) = v.trim_start_matches([' ', ':']).trim().parse::<f64>()
            {
                total += ms / 1000.0;
                any = true;
            }
        }
    }
    any.then_some(total)
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A snapshot of a process: CPU seconds (ticks and scheduler) and memory in KiB.
pub fn snapshot(pid: &str) -> Value {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    json!({
        "cpu_s": stat_cpu(pid),
        "sched_cpu_s": sched_cpu(pid),
        "rss_kb": kb_field(&status, "VmRSS:"),
        "hwm_kb": kb_field(&status, "VmHWM:"),
        "pss_kb": kb_field(&rollup, "Pss:"),
        "threads": kb_field(&status, "Threads:"),
    })
}

/// Percentiles of latencies in microseconds.
pub fn percentiles(mut v: Vec<u32>) -> Value {
    if v.is_empty() {
        return json!({ "n": 0 });
    }
    v.sort_unstable();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        f64::from(v[i]) / 1000.0
    };
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64 / 1000.0;
    json!({
        "n": v.len(),
        "p50_ms": at(0.5),
        "p90_ms": at(0.9),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": at(1.0),
        "mean_ms": mean,
    })
}
