//! The time of one scheduling decision with 100,000 queued jobs across 5,000 tenants.
//! Run through `bench/scheduler.sh` (or `cargo run --release -p cohort-control --example scheduler_bench`).

use std::time::Instant;

use cohort_control::scheduler::{Core, CoreConfig, Job, Kind, TenantPolicy};

fn main() {
    let (tenants, jobs, decisions) = (5_000usize, 100_000usize, 2_000usize);
    let second = 1_000_000i64;
    let gib = 1u64 << 30;
    let mut core = Core::new(CoreConfig { slots: 64, budget: 64 * gib, half_life: 600 * second, ..CoreConfig::default() });
    for t in 0..tenants {
        core.set_tenant(&format!("tenant-{t:04}"), TenantPolicy { max_concurrent: 4, weight: 1.0 + (t % 3) as f64, ..TenantPolicy::default() }, 0);
    }
    // A deterministic spread of grants and runtimes.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..jobs {
        let t = (next() % tenants as u64) as usize;
        core.submit(
            Job {
                id: format!("job-{i:06}"),
                tenant: format!("tenant-{t:04}"),
                grant: (1 + next() % 8) * (gib / 4),
                expected_runtime: (1 + (next() % 120) as i64) * second,
                submitted: (i as i64) * 1000,
                kind: if i % 5 == 0 { Kind::OnDemand } else { Kind::Scheduled },
            },
            0,
        );
    }
    // Fill the pool, then time decisions that each follow one job's end.
    let mut now = 200 * second;
    let mut running: Vec<String> = core.decide(now).into_iter().map(|j| j.id).collect();
    let mut times = Vec::with_capacity(decisions);
    for _ in 0..decisions {
        now += second / 10;
        if !running.is_empty() {
            let id = running.remove(0);
            core.finish(&id, now);
        }
        let started = Instant::now();
        let admitted = core.decide(now);
        times.push(started.elapsed());
        running.extend(admitted.into_iter().map(|j| j.id));
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "scheduling decision, {jobs} queued jobs across {tenants} tenants, {} decisions: median {:.3} ms, p99 {:.3} ms, max {:.3} ms (queue left {})",
        decisions,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        core.queued()
    );
    println!("target: under 1 ms");
}
