//! `GET /metrics`: the server's counters in Prometheus' text exposition format (0.0.4).
//!
//! Labels carry only the language, the run's outcome word ([`RunOutcome::outcome`]) and the
//! reason of a refusal: never code, output, keys or paths. Written by hand: a few counters
//! and one histogram do not need a metrics crate.
//!
//! [`RunOutcome::outcome`]: super::sandbox::RunOutcome::outcome

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the run-duration histogram: from a warm `print(1)` (a few ms) to
/// dify-sandbox's longest default timeout.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    /// Per bucket, runs at or below its bound (not cumulative; summed when written).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Counters {
    runs: BTreeMap<(String, &'static str), u64>,
    durations: BTreeMap<String, Histogram>,
    refused: BTreeMap<&'static str, u64>,
    start_seconds: BTreeMap<&'static str, f64>,
}

/// The server's metrics; cheap to update from any thread.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

/// The moment's gauges, read when `/metrics` is scraped.
pub struct Gauges {
    pub ready: bool,
    pub workers: usize,
    /// Runs holding a worker: executing, or answered and not yet reaped.
    pub running: usize,
    /// Run requests waiting for a worker.
    pub queued: usize,
    pub warm_zygotes: Vec<(String, bool)>,
    pub uids_in_use: Option<usize>,
    pub uids_total: usize,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A run of `language` ended with `outcome` after `seconds`.
    pub fn run_finished(&self, language: &str, outcome: &'static str, seconds: f64) {
        self.with(|c| {
            *c.runs.entry((language.to_owned(), outcome)).or_default() += 1;
            let h = c.durations.entry(language.to_owned()).or_default();
            if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
                h.counts[i] += 1;
            }
            h.count += 1;
            h.sum += seconds;
        });
    }

    /// A run request refused before it ran: `too_many_requests` (the 503 of `max_requests`),
    /// `not_ready`, `internal` (the sandbox could not start it).
    pub fn refused(&self, reason: &'static str) {
        self.with(|c| *c.refused.entry(reason).or_default() += 1);
    }

    /// How long a start phase took: `rootfs` (unpack or check), `probes`.
    pub fn start_phase(&self, phase: &'static str, seconds: f64) {
        self.with(|c| {
            c.start_seconds.insert(phase, seconds);
        });
    }

    /// The exposition text.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        self.with(|c| {
            family(&mut out, "prebake_runs_total", "counter", "Runs that ended, by language and outcome (ok, error, timeout, output_limit, memory_limit, tmp_limit, seccomp_denial, killed).");
            for ((language, outcome), n) in &c.runs {
                let _ = writeln!(
                    out,
                    "prebake_runs_total{{language=\"{language}\",outcome=\"{outcome}\"}} {n}"
                );
            }
            family(&mut out, "prebake_run_duration_seconds", "histogram", "Wall time of each run, from the sandbox process's start to its reap.");
            for (language, h) in &c.durations {
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(h.counts) {
                    cumulative += n;
                    let _ = writeln!(out, "prebake_run_duration_seconds_bucket{{language=\"{language}\",le=\"{bound}\"}} {cumulative}");
                }
                let _ = writeln!(out, "prebake_run_duration_seconds_bucket{{language=\"{language}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "prebake_run_duration_seconds_sum{{language=\"{language}\"}} {}", h.sum);
                let _ = writeln!(out, "prebake_run_duration_seconds_count{{language=\"{language}\"}} {}", h.count);
            }
            family(&mut out, "prebake_requests_refused_total", "counter", "Run requests answered without a run: too_many_requests (503), not_ready (503), internal (-500).");
            for (reason, n) in &c.refused {
                let _ = writeln!(out, "prebake_requests_refused_total{{reason=\"{reason}\"}} {n}");
            }
            family(&mut out, "prebake_start_phase_seconds", "gauge", "How long this server's start took, by phase (rootfs: unpack or check; probes).");
            for (phase, s) in &c.start_seconds {
                let _ = writeln!(out, "prebake_start_phase_seconds{{phase=\"{phase}\"}} {s}");
            }
        });
        let gauge = |out: &mut String, name: &str, help: &str, v: usize| {
            family(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        };
        gauge(
            &mut out,
            "prebake_ready",
            "1 once the sandbox can run code (/readyz answers 200).",
            usize::from(g.ready),
        );
        gauge(
            &mut out,
            "prebake_workers",
            "Runs that may execute at once (max_workers).",
            g.workers,
        );
        gauge(
            &mut out,
            "prebake_runs_running",
            "Runs holding a worker: executing, or answered and their process not yet reaped.",
            g.running,
        );
        gauge(
            &mut out,
            "prebake_runs_queued",
            "Run requests waiting for a worker.",
            g.queued,
        );
        family(
            &mut out,
            "prebake_warm_pool_zygote_ready",
            "gauge",
            "1 when the language's zygote is up and runs fork from it, 0 while runs start cold.",
        );
        for (language, up) in &g.warm_zygotes {
            let _ = writeln!(
                out,
                "prebake_warm_pool_zygote_ready{{language=\"{language}\"}} {}",
                u8::from(*up)
            );
        }
        gauge(
            &mut out,
            "prebake_uids",
            "Sandbox uids of the pool (shared by every server of the node).",
            g.uids_total,
        );
        if let Some(n) = g.uids_in_use {
            gauge(
                &mut out,
                "prebake_uids_in_use",
                "Sandbox uids this server holds now.",
                n,
            );
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counts_add_up() {
        let m = Metrics::default();
        m.run_finished("python3", "ok", 0.004);
        m.run_finished("python3", "ok", 0.2);
        m.run_finished("python3", "timeout", 99.0);
        m.refused("too_many_requests");
        let g = Gauges {
            ready: true,
            workers: 4,
            running: 1,
            queued: 2,
            warm_zygotes: vec![("python3".into(), true)],
            uids_in_use: Some(1),
            uids_total: 100,
        };
        let text = m.render(&g);
        for line in [
            "prebake_runs_total{language=\"python3\",outcome=\"ok\"} 2",
            "prebake_runs_total{language=\"python3\",outcome=\"timeout\"} 1",
            "prebake_run_duration_seconds_bucket{language=\"python3\",le=\"0.005\"} 1",
            "prebake_run_duration_seconds_bucket{language=\"python3\",le=\"0.25\"} 2",
            "prebake_run_duration_seconds_bucket{language=\"python3\",le=\"30\"} 2",
            "prebake_run_duration_seconds_bucket{language=\"python3\",le=\"+Inf\"} 3",
            "prebake_run_duration_seconds_count{language=\"python3\"} 3",
            "prebake_requests_refused_total{reason=\"too_many_requests\"} 1",
            "prebake_runs_queued 2",
            "prebake_warm_pool_zygote_ready{language=\"python3\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }
}
