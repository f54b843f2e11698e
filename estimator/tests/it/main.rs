//! The estimator's contracts: bounds at or above points, no NaN or negative estimates,
//! monotone in the sizes read, deterministic, calibrated on exchangeable runs, and an
//! exhausted grant raising the next estimate.

use cohort_estimator::{Basis, Config, Estimator, Features, Histories, PastRun, Record, conformal_quantile, eval, fit, parse_trace};
use proptest::prelude::*;

/// A small deterministic generator (xorshift64*), so traces need no random crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A trace of `segments` segments run `runs` times each, round robin, their data growing 0–6%
/// a run; peak ≈ k·rows^0.9 with ±`noise` log-noise, runtime ≈ rows / 2M s.
fn synthetic(segments: usize, runs: usize, noise: f64, seed: u64) -> Vec<Record> {
    let mut rng = Rng(seed.max(1));
    let mut rows: Vec<f64> = (0..segments).map(|i| 10_000.0 * (1.0 + (i % 7) as f64 * 3.0)).collect();
    let k: Vec<f64> = (0..segments).map(|i| 200.0 + 60.0 * (i % 5) as f64).collect();
    let mut out = Vec::new();
    for step in 0..runs {
        for s in 0..segments {
            rows[s] *= 1.0 + 0.06 * rng.next();
            let r = rows[s];
            let peak = k[s] * r.powf(0.9) * ((rng.next() * 2.0 - 1.0) * noise).exp();
            out.push(Record {
                at: (step * segments + s) as i64 * 1_000_000,
                tenant: format!("t{}", s % 3),
                segment: format!("s{s}"),
                job: String::new(),
                features: Features {
                    objects: 1 + (s % 4) as u32,
                    joins: (s % 4) as u32,
                    related_predicates: (s % 3) as u32,
                    max_hops: (s % 4) as u32,
                    phases: 1,
                    partitions: 1,
                    source_rows: r as u64,
                    source_bytes: (r * 40.0) as u64,
                    root_rows: (r / 10.0) as u64,
                    largest_rows: (r * 0.6) as u64,
                },
                peak_bytes: Some(peak as u64),
                runtime_seconds: Some(r / 2e6 * (1.0 + 0.1 * rng.next())),
                exhausted_bytes: None,
                granted_bytes: None,
                estimated_runtime_seconds: None,
            });
        }
    }
    out
}

fn features() -> impl Strategy<Value = Features> {
    ((0u32..50, 0u32..50, 0u32..50, 0u32..10, 0u32..20, 0u32..64), (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>())).prop_map(
        |((objects, joins, related_predicates, max_hops, phases, partitions), (rows, bytes, root, largest))| Features {
            objects,
            joins,
            related_predicates,
            max_hops,
            phases,
            partitions,
            source_rows: rows >> (rows % 64),
            source_bytes: bytes >> (bytes % 64),
            root_rows: root >> (root % 64),
            largest_rows: largest >> (largest % 64),
        },
    )
}

fn history() -> impl Strategy<Value = Vec<PastRun>> {
    prop::collection::vec(
        (features(), 1.0f64..1e13, any::<bool>(), prop::option::of(0.0f64..1e5)).prop_map(|(features, peak_bytes, censored, runtime_seconds)| PastRun {
            features,
            peak_bytes,
            censored,
            runtime_seconds,
        }),
        0..6,
    )
}

/// A model fitted once on a synthetic trace, shared by the property tests.
fn fitted() -> Estimator {
    static MODEL: std::sync::OnceLock<cohort_estimator::Model> = std::sync::OnceLock::new();
    let config = Config::default();
    let model = MODEL.get_or_init(|| {
        let model = fit(&synthetic(24, 20, 0.05, 7), &config, 1);
        assert!(model.warm.is_some() && model.cold.is_some(), "both regimes fit on 480 runs: {model:?}");
        model
    });
    Estimator { config, model: Some(model.clone()) }
}

fn check(e: &cohort_estimator::Estimate, config: &Config) -> Result<(), TestCaseError> {
    prop_assert!(e.memory_bound_bytes >= e.memory_bytes, "{e:?}");
    prop_assert!(e.memory_bound_bytes >= config.min_bytes && e.memory_bound_bytes <= config.max_bytes, "{e:?}");
    prop_assert!(e.runtime_seconds.is_finite() && e.runtime_seconds > 0.0, "{e:?}");
    prop_assert!(e.runtime_bound_seconds.is_finite() && e.runtime_bound_seconds >= e.runtime_seconds, "{e:?}");
    Ok(())
}

fn scaled(f: &Features, by: u64) -> Features {
    Features {
        source_rows: f.source_rows.saturating_mul(by),
        source_bytes: f.source_bytes.saturating_mul(by),
        root_rows: f.root_rows.saturating_mul(by),
        largest_rows: f.largest_rows.saturating_mul(by),
        ..f.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn bounds_hold_and_nothing_is_nan_or_negative(f in features(), h in history(), max in prop::option::of(1u64..u64::MAX)) {
        let mut estimator = fitted();
        if let Some(max) = max {
            estimator.config.max_bytes = max.max(estimator.config.min_bytes);
        }
        check(&estimator.estimate(&f, &h), &estimator.config)?;
        let rules = Estimator::new(estimator.config.clone());
        check(&rules.estimate(&f, &h), &rules.config)?;
    }

    #[test]
    fn more_data_never_lowers_the_estimate(f in features(), h in history(), by in 2u64..1000) {
        for estimator in [fitted(), Estimator::new(Config::default())] {
            let small = estimator.estimate(&f, &h);
            let large = estimator.estimate(&scaled(&f, by), &h);
            prop_assert!(large.memory_bytes >= small.memory_bytes, "{small:?} then {large:?}");
            prop_assert!(large.memory_bound_bytes >= small.memory_bound_bytes, "{small:?} then {large:?}");
        }
    }

    #[test]
    fn conformal_quantile_covers_its_share(scores in prop::collection::vec(-10.0f64..10.0, 1..400), coverage in 0.5f64..0.999) {
        match conformal_quantile(&scores, coverage) {
            Some(q) => {
                let covered = scores.iter().filter(|s| **s <= q).count();
                prop_assert!(covered as f64 >= coverage * scores.len() as f64, "{covered} of {} at {coverage}", scores.len());
            }
            None => prop_assert!(((scores.len() as f64 + 1.0) * coverage).ceil() as usize > scores.len()),
        }
    }
}

#[test]
fn the_same_trace_gives_the_same_model_and_the_same_replay() {
    let trace = synthetic(30, 12, 0.1, 11);
    let config = Config::default();
    assert_eq!(fit(&trace, &config, 3), fit(&trace, &config, 3));
    let mut shuffled = trace.clone();
    shuffled.reverse();
    assert_eq!(fit(&trace, &config, 3), fit(&shuffled, &config, 3), "records are replayed by time, whatever their order");
    assert_eq!(eval::replay(&trace, &config, 1 << 30), eval::replay(&trace, &config, 1 << 30));
}

#[test]
fn the_model_round_trips_through_json() {
    let model = fitted().model.expect("fitted");
    let text = serde_json::to_string(&model).expect("serializes");
    let back: cohort_estimator::Model = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, model);
}

#[test]
fn replay_meets_its_coverage_on_exchangeable_runs() {
    let trace = synthetic(40, 60, 0.08, 5);
    let config = Config::default();
    let evaluation = eval::replay(&trace, &config, 1 << 30);
    println!("{evaluation}");
    let [ours, autopilot, matched, fixed, hindsight] = &evaluation.policies[..] else { panic!("five policies: {evaluation}") };
    assert_eq!(ours.runs, 2_400);
    assert!(ours.under_grant_rate() <= 0.01, "{evaluation}");
    assert!(ours.under_grant_rate() < autopilot.under_grant_rate(), "{evaluation}");
    assert!(ours.relative_slack < 0.3, "{evaluation}");
    assert!(ours.relative_slack < fixed.relative_slack && ours.relative_slack < hindsight.relative_slack, "{evaluation}");
    assert!(ours.gb_hours_granted < autopilot.gb_hours_granted, "{evaluation}");
    // The baseline held to our under-grant rate needs a wider margin than ours.
    assert!(matched.under_granted <= ours.under_granted && ours.relative_slack < matched.relative_slack, "{evaluation}");
    assert!(evaluation.by_basis.iter().any(|(b, n, _)| b == "Warm" && *n > 2_000), "{evaluation}");
}

#[test]
fn an_exhausted_grant_raises_the_next_estimate() {
    let estimator = fitted();
    let f = Features {
        objects: 2,
        joins: 1,
        related_predicates: 1,
        max_hops: 1,
        phases: 1,
        partitions: 1,
        source_rows: 200_000,
        source_bytes: 8_000_000,
        root_rows: 20_000,
        largest_rows: 120_000,
    };
    let mut histories = Histories::default();
    let run = |peak: Option<u64>, exhausted: Option<u64>, at: i64| Record {
        at,
        tenant: "t".into(),
        segment: "s".into(),
        job: String::new(),
        features: f.clone(),
        peak_bytes: peak,
        runtime_seconds: peak.map(|_| 0.1),
        exhausted_bytes: exhausted,
        granted_bytes: None,
        estimated_runtime_seconds: None,
    };
    histories.push(&run(Some(40 << 20), None, 1));
    let before = estimator.estimate(&f, &histories.get("t", "s"));
    assert_eq!(before.basis, Basis::Warm);
    // The next run ran out of its grant (the bound above) and never finished.
    histories.push(&run(None, Some(before.memory_bound_bytes), 2));
    let after = estimator.estimate(&f, &histories.get("t", "s"));
    assert!(after.memory_bound_bytes >= 2 * before.memory_bound_bytes, "{before:?} then {after:?}");
    // It ran out, then finished larger: the measured peak leads.
    histories.push(&run(Some(3 * before.memory_bound_bytes), Some(before.memory_bound_bytes), 3));
    let finished = estimator.estimate(&f, &histories.get("t", "s"));
    assert!(finished.memory_bound_bytes > 3 * before.memory_bound_bytes, "{before:?} then {finished:?}");
}

#[test]
fn a_trace_parses_and_its_errors_name_the_line() {
    let line = r#"{"at":1,"tenant":"t","segment":"s","features":{"source_rows":10},"peak_bytes":100,"runtime_seconds":0.5}"#;
    let records = parse_trace(&format!("{line}\n\n{line}\n")).expect("parses");
    assert_eq!(records.len(), 2);
    let err = parse_trace(&format!("{line}\n{{\"at\":\"x\"}}\n")).expect_err("bad line");
    assert!(err.to_string().starts_with("trace line 2:"), "{err}");
    let err = parse_trace(r#"{"at":1,"tenant":"t","segment":"s","features":{},"runtime_seconds":-1}"#).expect_err("negative");
    assert!(err.to_string().contains("runtime_seconds"), "{err}");
}

#[test]
fn bad_settings_are_refused() {
    for config in [
        Config { coverage: 1.0, ..Config::default() },
        Config { coverage: f64::NAN, ..Config::default() },
        Config { calibration_share: 0.0, ..Config::default() },
        Config { min_bytes: 10, max_bytes: 5, ..Config::default() },
        Config { rule_history_margin: 0.5, ..Config::default() },
        Config { refit_every: 0, ..Config::default() },
    ] {
        assert!(config.validate().is_err(), "{config:?}");
    }
    assert!(Config::default().validate().is_ok());
}

#[test]
fn a_repeat_of_the_last_run_is_granted_its_peak_within_what_repeats_varied_by() {
    let config = Config::default();
    let f = Features {
        objects: 2,
        joins: 1,
        related_predicates: 1,
        max_hops: 1,
        phases: 1,
        partitions: 1,
        source_rows: 50_000,
        source_bytes: 2_000_000,
        root_rows: 5_000,
        largest_rows: 30_000,
    };
    let peak = 1_234_567u64;
    let repeat = |at: i64| Record {
        at,
        tenant: "t".into(),
        segment: "same".into(),
        job: String::new(),
        features: f.clone(),
        peak_bytes: Some(peak),
        runtime_seconds: Some(0.05),
        exhausted_bytes: None,
        granted_bytes: None,
        estimated_runtime_seconds: None,
    };
    let mut trace = synthetic(24, 20, 0.05, 7);
    let later = trace.iter().map(|r| r.at).max().unwrap_or(0);
    trace.extend((1..=40).map(|i| repeat(later + i)));
    let model = fit(&trace, &config, 1);
    let margin = model.warm.as_ref().and_then(|w| w.repeat_margin);
    // 39 exact repeats: too few for the 99.5% quantile, so the largest (0) plus 5%.
    assert_eq!(margin, Some(config.uncalibrated_margin), "{:?}", model.warm);
    let estimator = Estimator { config: config.clone(), model: Some(model) };
    let mut histories = Histories::default();
    histories.push(&repeat(later + 100));
    let e = estimator.estimate(&f, &histories.get("t", "same"));
    assert_eq!(e.basis, Basis::Warm);
    assert!(e.memory_bound_bytes >= peak, "a repeat's bound is never a byte short of its peak: {e:?}");
    assert!((e.memory_bound_bytes as f64) <= peak as f64 * config.uncalibrated_margin.exp() + 2.0, "{e:?}");
    // A run on more rows is no repeat: the regression answers, with a wider bound.
    let grown = estimator.estimate(&scaled(&f, 2), &histories.get("t", "same"));
    assert!(grown.memory_bound_bytes > e.memory_bound_bytes, "{e:?} then {grown:?}");
}
