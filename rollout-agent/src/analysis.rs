//! Argo-style canary analysis: each check is measured every interval, comparing the canary
//! with the stable version running beside it; failures and errors are counted against the
//! configured limits, and "no data" / "query error" follow each check's explicit policy.

use crate::config::{AnalysisSpec, CheckKind, CheckSpec, Inconclusive};

pub use bpfship_control::{AnalysisRun, Outcome, VersionSample};

/// Fetches external values: `Ok(Some(v))`, `Ok(None)` for no data, `Err` for a query error.
pub trait ExternalSource {
    fn prometheus(&self, url: &str, query: &str) -> Result<Option<f64>, String>;
    /// `Ok(())` for a 2xx answer, `Err` with the status otherwise; connection failures are
    /// errors too (the caller cannot tell a dead endpoint from a broken network).
    fn http_ok(&self, url: &str) -> Result<Result<(), String>, String>;
}

fn rate(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// The share of a version's events given `verdict` (`None`: no counted events).
fn verdict_share(sample: &VersionSample, verdict: &str) -> Option<f64> {
    let total = sample.verdicts.values().sum();
    rate(sample.verdicts.get(verdict).copied().unwrap_or(0), total)
}

/// Names a check for messages: its configured name or its type.
pub fn check_name(check: &CheckSpec) -> String {
    check.name.clone().unwrap_or_else(|| match &check.kind {
        CheckKind::Verdicts { verdict } => format!("verdicts({verdict})"),
        CheckKind::Aborts => "aborts".into(),
        CheckKind::BadEvents => "bad_events".into(),
        CheckKind::Cost => "cost".into(),
        CheckKind::Prometheus { .. } => "prometheus".into(),
        CheckKind::Http { .. } => "http".into(),
    })
}

/// Measures `check` once.
pub fn measure(
    check: &CheckSpec,
    canary: &VersionSample,
    stable: &VersionSample,
    external: &dyn ExternalSource,
) -> Outcome {
    let name = check_name(check);
    let (c, s) = match &check.kind {
        CheckKind::Verdicts { verdict } => (
            verdict_share(canary, verdict),
            verdict_share(stable, verdict),
        ),
        CheckKind::Aborts => (
            rate(canary.aborts, canary.runs),
            rate(stable.aborts, stable.runs),
        ),
        CheckKind::BadEvents => (
            rate(canary.bad, canary.good + canary.bad),
            rate(stable.bad, stable.good + stable.bad),
        ),
        CheckKind::Cost => (canary.cost_ns, stable.cost_ns),
        CheckKind::Prometheus { url, query } => match external.prometheus(url, query) {
            Ok(v) => (v, None),
            Err(e) => return Outcome::Error(format!("{name}: query failed: {e}")),
        },
        CheckKind::Http { url } => {
            return match external.http_ok(url) {
                Ok(Ok(())) => Outcome::Success(format!("{name}: {url} healthy")),
                Ok(Err(status)) => Outcome::Failure(format!("{name}: {url} answered {status}")),
                Err(e) => Outcome::Error(format!("{name}: {url}: {e}")),
            };
        }
    };
    let Some(c) = c else {
        return Outcome::NoData(format!("{name}: no canary events in this interval"));
    };
    if let Some(max) = check.max
        && c > max
    {
        return Outcome::Failure(format!("{name}: canary {c:.4} > max {max}"));
    }
    if let Some(min) = check.min
        && c < min
    {
        return Outcome::Failure(format!("{name}: canary {c:.4} < min {min}"));
    }
    if let Some(max_ratio) = check.max_ratio {
        let Some(s) = s else {
            return Outcome::NoData(format!("{name}: no stable baseline in this interval"));
        };
        let ratio = if s == 0.0 {
            if c == 0.0 { 1.0 } else { f64::INFINITY }
        } else {
            c / s
        };
        let within_margin = check.margin.is_some_and(|m| c - s <= m);
        if ratio > max_ratio && !within_margin {
            return Outcome::Failure(format!(
                "{name}: canary {c:.4} is {ratio:.2}× stable {s:.4} (max {max_ratio}×{})",
                check
                    .margin
                    .map(|m| format!(", margin {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    Outcome::Success(format!("{name}: canary {c:.4}"))
}

/// What the analysis says after a measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Pause(String),
    RollBack(String),
}

/// The analysis logic over a run's counters (the counters themselves are part of the status).
pub trait Record {
    /// Folds one interval's outcomes (one per check, in order) into the run.
    fn record(
        &mut self,
        spec: &AnalysisSpec,
        checks: &[CheckSpec],
        outcomes: Vec<Outcome>,
    ) -> Verdict;
}

impl Record for AnalysisRun {
    fn record(
        &mut self,
        spec: &AnalysisSpec,
        checks: &[CheckSpec],
        outcomes: Vec<Outcome>,
    ) -> Verdict {
        self.measurements += 1;
        let mut verdict = Verdict::Continue;
        let mut any_error = false;
        let mut failed = Vec::new();
        for (check, outcome) in checks.iter().zip(&outcomes) {
            let (policy, msg) = match outcome {
                Outcome::Success(_) => continue,
                Outcome::Failure(m) => {
                    failed.push(m.clone());
                    continue;
                }
                Outcome::NoData(m) => (check.on_no_data, m),
                Outcome::Error(m) => {
                    any_error = true;
                    (check.on_error, m)
                }
            };
            match policy {
                Inconclusive::Fail => failed.push(msg.clone()),
                Inconclusive::Ignore => {}
                Inconclusive::Pause => {
                    if verdict == Verdict::Continue {
                        verdict = Verdict::Pause(msg.clone());
                    }
                }
            }
        }
        self.consecutive_errors = if any_error {
            self.consecutive_errors + 1
        } else {
            0
        };
        self.last = outcomes;
        if !failed.is_empty() {
            self.failures += 1;
            if self.failures > spec.failure_limit {
                return Verdict::RollBack(format!(
                    "analysis failed ({} of {} measurements, limit {}): {}",
                    self.failures,
                    self.measurements,
                    spec.failure_limit,
                    failed.join("; ")
                ));
            }
        }
        if self.consecutive_errors > spec.consecutive_error_limit {
            return Verdict::RollBack(format!(
                "{} consecutive measurement errors (limit {})",
                self.consecutive_errors, spec.consecutive_error_limit
            ));
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<Option<f64>, String>);
    impl ExternalSource for Fixed {
        fn prometheus(&self, _: &str, _: &str) -> Result<Option<f64>, String> {
            self.0.clone()
        }
        fn http_ok(&self, _: &str) -> Result<Result<(), String>, String> {
            self.0.clone().map(|v| {
                if v.is_some() {
                    Ok(())
                } else {
                    Err("503".into())
                }
            })
        }
    }

    fn check(kind: CheckKind, max: Option<f64>, max_ratio: Option<f64>) -> CheckSpec {
        CheckSpec {
            name: None,
            kind,
            max,
            max_ratio,
            min: None,
            margin: None,
            on_no_data: Inconclusive::Ignore,
            on_error: Inconclusive::Ignore,
        }
    }

    fn sample(runs: u64, aborts: u64, good: u64, bad: u64) -> VersionSample {
        VersionSample {
            runs,
            aborts,
            good,
            bad,
            cost_ns: None,
            verdicts: Default::default(),
        }
    }

    fn verdicts(pairs: &[(&str, u64)]) -> VersionSample {
        VersionSample {
            verdicts: pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            ..Default::default()
        }
    }

    fn failed(o: Outcome) -> bool {
        matches!(o, Outcome::Failure(_))
    }

    /// The default XDP and TC checks (drop, abort, tx, … share far above stable's).
    #[test]
    fn verdict_shares_against_stable() {
        let none = Fixed(Ok(None));
        let checks = crate::config::default_verdict_checks(crate::kernel::HookKind::Xdp);
        let drop = checks
            .iter()
            .find(|c| c.name.as_deref() == Some("verdict_drop"));
        let drop = drop.unwrap();
        let stable = verdicts(&[("pass", 990), ("drop", 10)]);
        // Drops everything: share 1.0 against 0.01.
        let o = measure(drop, &verdicts(&[("drop", 50)]), &stable, &none);
        assert!(
            matches!(&o, Outcome::Failure(m) if m.contains("verdict_drop") && m.contains("×")),
            "{o:?}"
        );
        // A little more dropping than stable is within the margin, even at many times its share.
        let clean = verdicts(&[("pass", 1000)]);
        let few = verdicts(&[("pass", 97), ("drop", 3)]);
        assert!(!failed(measure(drop, &few, &clean, &none)));
        // Ratio and margin both exceeded (0.10 vs 0.01).
        let more = verdicts(&[("pass", 90), ("drop", 10)]);
        assert!(failed(measure(drop, &more, &stable, &none)));
        // Same share as stable: 1×.
        assert!(!failed(measure(
            drop,
            &verdicts(&[("pass", 99), ("drop", 1)]),
            &stable,
            &none
        )));
        // PASS turned into TX: caught by the tx check, not by drop.
        let tx_all = verdicts(&[("tx", 40)]);
        let outcomes: Vec<bool> = checks
            .iter()
            .map(|c| failed(measure(c, &tx_all, &clean, &none)))
            .collect();
        assert_eq!(
            outcomes,
            [false, false, true, false],
            "aborted, drop, tx, redirect"
        );
        // No counted canary events (not instrumented, or no traffic): no data.
        assert!(matches!(
            measure(drop, &VersionSample::default(), &stable, &none),
            Outcome::NoData(_)
        ));
        // No stable baseline (whole-host canary, or stable not instrumented): no data.
        assert!(matches!(
            measure(drop, &verdicts(&[("drop", 5)]), &VersionSample::default(), &none),
            Outcome::NoData(m) if m.contains("baseline")
        ));
        // An absolute bound needs no baseline.
        let mut max = check(
            CheckKind::Verdicts {
                verdict: "aborted".into(),
            },
            Some(0.0),
            None,
        );
        max.name = None;
        let o = measure(
            &max,
            &verdicts(&[("pass", 9), ("aborted", 1)]),
            &VersionSample::default(),
            &none,
        );
        assert!(
            matches!(&o, Outcome::Failure(m) if m.starts_with("verdicts(aborted)")),
            "{o:?}"
        );
    }

    #[test]
    fn bounds_and_ratios() {
        let none = Fixed(Ok(None));
        let aborts = check(CheckKind::Aborts, Some(0.0), None);
        assert!(matches!(
            measure(&aborts, &sample(10, 0, 0, 0), &sample(90, 0, 0, 0), &none),
            Outcome::Success(_)
        ));
        assert!(
            matches!(measure(&aborts, &sample(10, 1, 0, 0), &sample(90, 0, 0, 0), &none), Outcome::Failure(m) if m.contains("> max"))
        );
        assert!(matches!(
            measure(&aborts, &sample(0, 0, 0, 0), &sample(90, 0, 0, 0), &none),
            Outcome::NoData(_)
        ));
        let bad = check(CheckKind::BadEvents, None, Some(2.0));
        // 10% bad vs 1% bad stable: 10× > 2×.
        assert!(
            matches!(measure(&bad, &sample(0, 0, 90, 10), &sample(0, 0, 99, 1), &none), Outcome::Failure(m) if m.contains("×"))
        );
        assert!(matches!(
            measure(&bad, &sample(0, 0, 98, 2), &sample(0, 0, 99, 1), &none),
            Outcome::Success(_)
        ));
        // Stable has no bad events: any canary bad event is an infinite ratio.
        assert!(matches!(
            measure(&bad, &sample(0, 0, 9, 1), &sample(0, 0, 10, 0), &none),
            Outcome::Failure(_)
        ));
        let prom = check(
            CheckKind::Prometheus {
                url: "http://x".into(),
                query: "q".into(),
            },
            Some(5.0),
            None,
        );
        assert!(matches!(
            measure(
                &prom,
                &sample(0, 0, 0, 0),
                &sample(0, 0, 0, 0),
                &Fixed(Ok(Some(7.0)))
            ),
            Outcome::Failure(_)
        ));
        assert!(matches!(
            measure(
                &prom,
                &sample(0, 0, 0, 0),
                &sample(0, 0, 0, 0),
                &Fixed(Err("refused".into()))
            ),
            Outcome::Error(_)
        ));
    }

    #[test]
    fn limits_and_inconclusive_policies() {
        let spec = AnalysisSpec {
            interval_seconds: 1.0,
            failure_limit: 1,
            consecutive_error_limit: 1,
            count: None,
        };
        let mut pausing = check(CheckKind::Aborts, Some(0.0), None);
        pausing.on_no_data = Inconclusive::Pause;
        let checks = vec![pausing];
        let mut run = AnalysisRun::default();
        assert_eq!(
            run.record(&spec, &checks, vec![Outcome::Failure("f".into())]),
            Verdict::Continue
        );
        assert!(matches!(
            run.record(&spec, &checks, vec![Outcome::NoData("n".into())]),
            Verdict::Pause(_)
        ));
        assert!(
            matches!(run.record(&spec, &checks, vec![Outcome::Failure("f".into())]), Verdict::RollBack(m) if m.contains("2 of 3"))
        );
        // Ignored errors still count towards the consecutive error limit.
        let mut run = AnalysisRun::default();
        assert_eq!(
            run.record(&spec, &checks, vec![Outcome::Error("e".into())]),
            Verdict::Continue
        );
        assert_eq!(
            run.record(&spec, &checks, vec![Outcome::Success("s".into())]),
            Verdict::Continue
        );
        assert_eq!(
            run.record(&spec, &checks, vec![Outcome::Error("e".into())]),
            Verdict::Continue
        );
        assert!(
            matches!(run.record(&spec, &checks, vec![Outcome::Error("e".into())]), Verdict::RollBack(m) if m.contains("consecutive"))
        );
        // on_no_data = fail counts as a failure.
        let mut failing = check(CheckKind::Aborts, Some(0.0), None);
        failing.on_no_data = Inconclusive::Fail;
        let spec0 = AnalysisSpec {
            failure_limit: 0,
            ..spec
        };
        let mut run = AnalysisRun::default();
        assert!(matches!(
            run.record(&spec0, &[failing], vec![Outcome::NoData("n".into())]),
            Verdict::RollBack(_)
        ));
    }
}
