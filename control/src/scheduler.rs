//! The scheduling core: which queued jobs start now. Pure: time, queue and pool state in,
//! decisions out; no I/O, no clock of its own, so the service and a simulated month run the
//! same code.
//!
//! The rules, in the order a decision applies them:
//! - a job starts only when a slot is free and its grant fits the memory budget left;
//! - its tenant must be under its concurrency cap and memory quota, and its token bucket
//!   (jobs per minute, with a burst) must hold a token;
//! - among tenants whose next job can start, the one with the least decayed usage (memory ×
//!   time, halving every `half_life`) divided by its weight goes first (with fair share off,
//!   the one whose next job was submitted first: first come, first served across tenants);
//! - within a tenant, jobs go oldest first, an on-demand run counting as submitted
//!   `on_demand_lead` earlier than it was (someone is waiting for it; a scheduled run still
//!   cannot be overtaken forever);
//! - the first job that would go next but waits for memory or a slot gets a **reservation**:
//!   the time its grant will be free, from the running jobs' expected ends. It goes first at
//!   every later decision, and another job may start ahead of it (backfill) only if that cannot
//!   delay it: it ends before the reservation, or leaves the reserved memory and a slot free.
//!
//! Tenants with queued jobs sit in a `BTreeSet` keyed by ln(usage/weight) moved to time zero:
//! uniform decay never reorders it, so only a tenant whose own usage changes moves, and a decision
//! stops at the first tenant that can start. `ride` takes a queued job out for a starting job's
//! execution to answer (no slot, memory or token). `why_waiting` names the reason a job waits.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

/// Microseconds (of whatever clock the caller uses).
pub type Micros = i64;

/// What a tenant may use.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantPolicy {
    /// Jobs that may run at once.
    pub max_concurrent: u32,
    /// Memory its running jobs may hold at once.
    pub memory_quota: u64,
    /// Jobs it may start per minute (the token bucket's refill).
    pub jobs_per_minute: f64,
    /// Jobs it may start at once after being idle (the bucket's size).
    pub burst: f64,
    /// Its weight in the fair share.
    pub weight: f64,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        TenantPolicy { max_concurrent: 4, memory_quota: u64::MAX, jobs_per_minute: 600.0, burst: 10.0, weight: 1.0 }
    }
}

/// Why a job was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Someone asked for it through the API.
    OnDemand,
    /// Its segment's schedule was due.
    Scheduled,
}

/// A queued job, as the core sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's id.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// The memory it is granted.
    pub grant: u64,
    /// How long it is expected to run.
    pub expected_runtime: Micros,
    /// When it was submitted.
    pub submitted: Micros,
    /// On demand or scheduled.
    pub kind: Kind,
}

/// Why a queued job is not starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Every worker slot is busy.
    Slot,
    /// The memory budget left is smaller than its grant.
    Memory,
    /// Its tenant runs as many jobs as it may.
    TenantCap,
    /// Its tenant's running jobs hold its memory quota.
    Quota,
    /// Its tenant's rate limit has no token now.
    RateLimit,
    /// Other tenants, with less recent usage for their weight, go first.
    FairShare,
    /// Another job holds a reservation this one would delay.
    Reservation,
    /// An older job of the same tenant goes first.
    Behind,
}

impl Wait {
    /// Every reason, for the metrics that show each at 0 before it happens.
    pub const ALL: [Wait; 8] = [Wait::Slot, Wait::Memory, Wait::TenantCap, Wait::Quota, Wait::RateLimit, Wait::FairShare, Wait::Reservation, Wait::Behind];

    /// The reason as shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Wait::Slot => "slot",
            Wait::Memory => "memory",
            Wait::TenantCap => "tenant_cap",
            Wait::Quota => "quota",
            Wait::RateLimit => "rate_limit",
            Wait::FairShare => "fair_share",
            Wait::Reservation => "reservation",
            Wait::Behind => "behind_own_jobs",
        }
    }
}

/// Settings of the core.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    /// Worker slots.
    pub slots: usize,
    /// Memory budget.
    pub budget: u64,
    /// Usage halves every this long.
    pub half_life: Micros,
    /// How much earlier an on-demand run counts as submitted.
    pub on_demand_lead: Micros,
    /// Whether jobs may start ahead of a reserved one (off: strictly in order).
    pub backfill: bool,
    /// Whether tenants take turns by their decayed usage per weight (off: the tenant whose
    /// next job was submitted first goes first, whatever it used).
    pub fair_share: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig { slots: 2, budget: 8 << 30, half_life: 3_600_000_000, on_demand_lead: 60_000_000, backfill: true, fair_share: true }
    }
}

#[derive(Debug)]
struct Tenant {
    policy: TenantPolicy,
    queue: VecDeque<Job>,
    running: u32,
    memory: u64,
    tokens: f64,
    refilled_at: Micros,
    usage: f64,
    usage_at: Micros,
    /// Its place in the fair order while it has queued jobs.
    turn: Option<f64>,
}

impl Tenant {
    fn new(policy: TenantPolicy, now: Micros) -> Self {
        let tokens = policy.burst.max(1.0);
        Tenant { policy, queue: VecDeque::new(), running: 0, memory: 0, tokens, refilled_at: now, usage: 0.0, usage_at: now, turn: None }
    }

    /// The fair-order key: the log of usage per weight, moved to time zero. Decay multiplies
    /// every tenant's usage by the same factor, so this key orders tenants as their decayed
    /// usage would at any moment, and changes only when the tenant's own usage does.
    fn key(&self, half_life: Micros) -> f64 {
        let share = self.usage.max(0.0) / self.policy.weight.max(1e-9);
        share.ln() + self.usage_at as f64 * std::f64::consts::LN_2 / half_life.max(1) as f64
    }

    fn refill(&mut self, now: Micros) {
        if now > self.refilled_at {
            let minutes = (now - self.refilled_at) as f64 / 60e6;
            self.tokens = (self.tokens + minutes * self.policy.jobs_per_minute).min(self.policy.burst.max(1.0));
            self.refilled_at = now;
        }
    }

    fn decay(&mut self, now: Micros, half_life: Micros) {
        if now > self.usage_at && half_life > 0 {
            self.usage *= 0.5f64.powf((now - self.usage_at) as f64 / half_life as f64);
            self.usage_at = now;
        }
    }

    /// The tenant's own reason its head job cannot start, if any.
    fn blocked(&self, grant: u64) -> Option<Wait> {
        if self.running >= self.policy.max_concurrent {
            Some(Wait::TenantCap)
        } else if self.memory.saturating_add(grant) > self.policy.memory_quota {
            Some(Wait::Quota)
        } else if self.tokens < 1.0 {
            Some(Wait::RateLimit)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
struct RunningJob {
    tenant: String,
    grant: u64,
    started: Micros,
    expected_end: Micros,
}

/// A held reservation: the job, when its grant will be free, and that grant.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// The job that holds it.
    pub job: String,
    /// Its tenant.
    pub tenant: String,
    /// When its memory and a slot are expected to be free.
    pub start_at: Micros,
    /// Its grant.
    pub grant: u64,
}

/// The scheduling core.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    tenants: HashMap<Arc<str>, Tenant>,
    running: HashMap<String, RunningJob>,
    used: u64,
    queued: usize,
    reservation: Option<Reservation>,
    /// Tenants with queued jobs, in fair order.
    order: BTreeSet<Turn>,
    /// Queued jobs admission held back, with the reasons already reported (a bit per `Wait`).
    held: HashMap<String, u16>,
    /// Hold-backs not yet taken by [`Core::take_held`].
    newly_held: Vec<(Arc<str>, Wait)>,
}

/// Reports a job held back for `why`, once per job and reason.
fn note_held(held: &mut HashMap<String, u16>, newly: &mut Vec<(Arc<str>, Wait)>, job: &str, tenant: &Arc<str>, why: Wait) {
    let bit = 1u16 << (why as u16);
    let seen = held.entry(job.to_string()).or_default();
    if *seen & bit == 0 {
        *seen |= bit;
        newly.push((Arc::clone(tenant), why));
    }
}

/// A tenant in the fair order: lower key (usage per weight) first, then by id.
#[derive(Debug, Clone, PartialEq)]
struct Turn {
    key: f64,
    tenant: Arc<str>,
}

impl Eq for Turn {}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.total_cmp(&other.key).then_with(|| self.tenant.cmp(&other.tenant))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Core {
    /// An empty core.
    pub fn new(config: CoreConfig) -> Core {
        Core {
            config,
            tenants: HashMap::new(),
            running: HashMap::new(),
            used: 0,
            queued: 0,
            reservation: None,
            order: BTreeSet::new(),
            held: HashMap::new(),
            newly_held: Vec::new(),
        }
    }

    /// Jobs held back since the last call, as (tenant, reason): each queued job counts once
    /// per reason it waited for (for the admission-rejection metric).
    pub fn take_held(&mut self) -> Vec<(Arc<str>, Wait)> {
        std::mem::take(&mut self.newly_held)
    }

    /// Puts a tenant at its place in the fair order (after its usage or weight changed), or
    /// takes it out when it has nothing queued.
    fn reorder(&mut self, id: &str) {
        let (half_life, lead, fair_share) = (self.config.half_life, self.config.on_demand_lead, self.config.fair_share);
        let Some((name, t)) = self.tenants.get_key_value(id) else { return };
        let name = Arc::clone(name);
        let old = t.turn;
        let new = t.queue.front().map(|head| if fair_share { t.key(half_life) } else { effective_submission(head, lead) as f64 });
        if old == new && old.is_some() {
            return;
        }
        if let Some(key) = old {
            self.order.remove(&Turn { key, tenant: Arc::clone(&name) });
        }
        if let Some(key) = new {
            self.order.insert(Turn { key, tenant: Arc::clone(&name) });
        }
        if let Some(t) = self.tenants.get_mut(id) {
            t.turn = new;
        }
    }

    /// The settings.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Sets (or changes) a tenant's policy.
    pub fn set_tenant(&mut self, id: &str, policy: TenantPolicy, now: Micros) {
        match self.tenants.get_mut(id) {
            Some(t) => t.policy = policy,
            None => {
                self.tenants.insert(Arc::from(id), Tenant::new(policy, now));
            }
        }
        self.reorder(id);
    }

    /// Queues a job (its grant capped at the budget and its tenant's quota). A tenant not yet known gets the
    /// default policy.
    pub fn submit(&mut self, mut job: Job, now: Micros) {
        let lead = self.config.on_demand_lead;
        let key = |j: &Job| effective_submission(j, lead);
        if !self.tenants.contains_key(job.tenant.as_str()) {
            self.tenants.insert(Arc::from(job.tenant.as_str()), Tenant::new(TenantPolicy::default(), now));
        }
        let Some(tenant) = self.tenants.get_mut(job.tenant.as_str()) else { return };
        // A grant above the budget or the tenant's quota could never start.
        job.grant = job.grant.min(self.config.budget).min(tenant.policy.memory_quota);
        // Keep the tenant's queue in order of effective submission time; a job holding the
        // reservation keeps its place at the head.
        let reserved_head = self.reservation.as_ref().is_some_and(|r| tenant.queue.front().is_some_and(|h| h.id == r.job));
        let at = tenant.queue.iter().rposition(|q| key(q) <= key(&job)).map_or(0, |i| i + 1).max(usize::from(reserved_head));
        let id = job.tenant.clone();
        tenant.queue.insert(at, job);
        self.queued += 1;
        self.reorder(&id);
    }

    /// Removes a queued job; false if it was not queued.
    pub fn remove(&mut self, job_id: &str, tenant: &str) -> bool {
        let Some(t) = self.tenants.get_mut(tenant) else { return false };
        let Some(i) = t.queue.iter().position(|j| j.id == job_id) else { return false };
        t.queue.remove(i);
        self.held.remove(job_id);
        self.queued -= 1;
        self.reorder(tenant);
        if self.reservation.as_ref().is_some_and(|r| r.job == job_id) {
            self.reservation = None;
        }
        true
    }

    /// Takes a queued job out of the queue to be answered by another job's execution (the
    /// same segment and as-of, started now). It needs no slot, no memory and no token of
    /// its own: the execution it shares was admitted under all of them. False if it was not
    /// queued.
    pub fn ride(&mut self, job_id: &str, tenant: &str) -> bool {
        self.remove(job_id, tenant)
    }

    /// Records that a running job ended at `now`: its slot and memory are free, and its tenant
    /// is charged for the time it really ran.
    pub fn finish(&mut self, job_id: &str, now: Micros) {
        let Some(r) = self.running.remove(job_id) else { return };
        self.used = self.used.saturating_sub(r.grant);
        let half_life = self.config.half_life;
        if let Some(t) = self.tenants.get_mut(r.tenant.as_str()) {
            t.running = t.running.saturating_sub(1);
            t.memory = t.memory.saturating_sub(r.grant);
            t.decay(now, half_life);
            // The start charged the expected time; correct it to the real one.
            let real = (now - r.started).max(0) as f64;
            let expected = (r.expected_end - r.started).max(0) as f64;
            t.usage = (t.usage + r.grant as f64 * (real - expected) / 1e6).max(0.0);
        }
        self.reorder(&r.tenant);
    }

    /// Lends a running job more memory, up to `wanted` in all, from what the budget has free,
    /// for work the service does in its name after its attempt (the data probe of triage, which
    /// a tenant's quota does not bound); returns its grant now (0 when it does not run here).
    /// It counts as used, and as its tenant's, until [`Core::finish`] frees it all.
    pub fn lend(&mut self, job_id: &str, wanted: u64) -> u64 {
        let free = self.config.budget.saturating_sub(self.used);
        let Some(r) = self.running.get_mut(job_id) else { return 0 };
        let more = wanted.saturating_sub(r.grant).min(free);
        r.grant += more;
        self.used += more;
        if let Some(t) = self.tenants.get_mut(r.tenant.as_str()) {
            t.memory += more;
        }
        r.grant
    }

    /// Undoes the start of a job that could not begin after all (another process took it,
    /// or it was cancelled meanwhile): its slot, memory, token and usage charge come back.
    pub fn abandon(&mut self, job_id: &str) -> bool {
        let Some(r) = self.running.remove(job_id) else { return false };
        self.used = self.used.saturating_sub(r.grant);
        if let Some(t) = self.tenants.get_mut(r.tenant.as_str()) {
            t.running = t.running.saturating_sub(1);
            t.memory = t.memory.saturating_sub(r.grant);
            t.tokens = (t.tokens + 1.0).min(t.policy.burst.max(1.0));
            let charged = r.grant as f64 * (r.expected_end - r.started).max(0) as f64 / 1e6;
            t.usage = (t.usage - charged).max(0.0);
        }
        self.reorder(&r.tenant);
        true
    }

    /// Whether a job is queued here.
    pub fn is_queued(&self, job_id: &str, tenant: &str) -> bool {
        self.tenants.get(tenant).is_some_and(|t| t.queue.iter().any(|j| j.id == job_id))
    }

    /// Whether a job runs here.
    pub fn is_running(&self, job_id: &str) -> bool {
        self.running.contains_key(job_id)
    }

    /// Whether the core knows a tenant's policy.
    pub fn knows_tenant(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    /// The largest grant a tenant's job can ever be given: the budget, or the tenant's quota
    /// if smaller.
    pub fn grant_cap(&self, tenant: &str) -> u64 {
        let quota = self.tenants.get(tenant).map_or(u64::MAX, |t| t.policy.memory_quota);
        self.config.budget.min(quota)
    }

    /// Jobs queued.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Jobs running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Memory granted to running jobs.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The reservation held, if any.
    pub fn reservation(&self) -> Option<&Reservation> {
        self.reservation.as_ref()
    }

    /// A tenant's running jobs and their memory.
    pub fn tenant_usage(&self, tenant: &str) -> Option<(u32, u64)> {
        self.tenants.get(tenant).map(|t| (t.running, t.memory))
    }

    /// The jobs to start now, in order; they count as running from now.
    pub fn decide(&mut self, now: Micros) -> Vec<Job> {
        let mut free_slots = self.config.slots.saturating_sub(self.running.len());
        let mut free_memory = self.config.budget.saturating_sub(self.used);
        let mut started = Vec::new();

        // The reserved job goes first, as soon as its memory and a slot are free.
        if let Some(r) = self.reservation.clone() {
            let still_head = self.tenants.get(r.tenant.as_str()).is_some_and(|t| t.queue.front().is_some_and(|j| j.id == r.job));
            if !still_head {
                self.reservation = None;
            } else if free_slots > 0 && r.grant <= free_memory {
                if let Some(job) = self.start_head(&r.tenant, now) {
                    free_slots -= 1;
                    free_memory -= job.grant;
                    started.push(job);
                }
                self.reservation = None;
            } else if !self.config.backfill {
                return started;
            }
        }
        if free_slots == 0 {
            return started;
        }

        // Fair order: the tenant with the lowest usage per weight first. A start raises the
        // tenant's usage, which moves it later in the order, where this pass may meet it
        // again; a tenant that cannot start now is passed over until the next decision.
        let mut after: Option<Turn> = None;
        while free_slots > 0 {
            let Some(turn) = self.next_startable(after.as_ref(), now, free_slots, free_memory) else { break };
            if let Some(job) = self.start_head(&turn.tenant, now) {
                free_slots -= 1;
                free_memory -= job.grant;
                started.push(job);
            }
            after = Some(turn);
        }
        started
    }

    /// From the fair order after `after`, the first tenant whose head job can start now; on
    /// the way, the first job that waits only for memory takes the reservation.
    fn next_startable(&mut self, after: Option<&Turn>, now: Micros, free_slots: usize, free_memory: u64) -> Option<Turn> {
        // What the running jobs expected to end by the reserved time free up (for `harmless`).
        let freed_by = |running: &HashMap<String, RunningJob>, at: Micros| {
            running.values().filter(|j| j.expected_end <= at).fold((0u64, 0usize), |(m, s), j| (m + j.grant, s + 1))
        };
        let mut freed = self.reservation.as_ref().map(|r| freed_by(&self.running, r.start_at));
        let range = match after {
            None => self.order.range::<Turn, _>(..),
            Some(turn) => self.order.range((Bound::Excluded(turn), Bound::Unbounded)),
        };
        for turn in range {
            let Some(t) = self.tenants.get_mut(&turn.tenant) else { continue };
            t.refill(now);
            let Some(head) = t.queue.front() else { continue };
            if let Some(why) = t.blocked(head.grant) {
                note_held(&mut self.held, &mut self.newly_held, &head.id, &turn.tenant, why);
                continue;
            }
            if head.grant > free_memory {
                note_held(&mut self.held, &mut self.newly_held, &head.id, &turn.tenant, Wait::Memory);
                if self.reservation.is_none() {
                    // The first job that must wait for memory reserves it.
                    let start_at = expected_free_at(&self.config, self.used, &self.running, head.grant, now);
                    self.reservation = Some(Reservation { job: head.id.clone(), tenant: turn.tenant.to_string(), start_at, grant: head.grant });
                    if !self.config.backfill {
                        return None;
                    }
                    freed = Some(freed_by(&self.running, start_at));
                }
                continue;
            }
            if let (Some(r), Some((freed_memory, freed_slots))) = (&self.reservation, freed)
                && (!self.config.backfill || !harmless(r, head.grant, head.expected_runtime, now, free_memory + freed_memory, free_slots + freed_slots))
            {
                note_held(&mut self.held, &mut self.newly_held, &head.id, &turn.tenant, Wait::Reservation);
                continue;
            }
            return Some(turn.clone());
        }
        None
    }

    fn start_head(&mut self, tenant: &str, now: Micros) -> Option<Job> {
        let t = self.tenants.get_mut(tenant)?;
        let job = t.queue.pop_front()?;
        self.held.remove(&job.id);
        t.running += 1;
        t.memory += job.grant;
        t.tokens -= 1.0;
        t.decay(now, self.config.half_life);
        t.usage += job.grant as f64 * job.expected_runtime.max(0) as f64 / 1e6;
        self.used += job.grant;
        self.queued -= 1;
        self.running.insert(
            job.id.clone(),
            RunningJob { tenant: tenant.to_string(), grant: job.grant, started: now, expected_end: now.saturating_add(job.expected_runtime) },
        );
        self.reorder(tenant);
        Some(job)
    }

    /// Why a queued job is not starting now (as of the last decision's state).
    pub fn why_waiting(&self, job_id: &str, tenant: &str) -> Option<Wait> {
        let t = self.tenants.get(tenant)?;
        let position = t.queue.iter().position(|j| j.id == job_id)?;
        if position > 0 {
            return Some(Wait::Behind);
        }
        let job = &t.queue[position];
        if let Some(reason) = t.blocked(job.grant) {
            return Some(reason);
        }
        if self.running.len() >= self.config.slots {
            return Some(Wait::Slot);
        }
        if job.grant > self.config.budget.saturating_sub(self.used) {
            return Some(Wait::Memory);
        }
        if self.reservation.as_ref().is_some_and(|r| r.job != job_id) {
            return Some(Wait::Reservation);
        }
        Some(Wait::FairShare)
    }
}

/// When a job counts as submitted: an on-demand run `lead` earlier than it was.
fn effective_submission(job: &Job, lead: Micros) -> Micros {
    if job.kind == Kind::OnDemand { job.submitted.saturating_sub(lead) } else { job.submitted }
}

/// Whether starting a job of `grant` and `runtime` now cannot delay reservation `r`, given the
/// memory and slots that will be free at the reserved time without it.
fn harmless(r: &Reservation, grant: u64, runtime: Micros, now: Micros, memory_then: u64, slots_then: usize) -> bool {
    // It ends before the reserved time, or leaves room for the reserved job beside it.
    now.saturating_add(runtime) <= r.start_at || (memory_then >= grant + r.grant && slots_then >= 2)
}

/// When `grant` bytes and a slot are expected to be free, from the running jobs' expected ends.
fn expected_free_at(config: &CoreConfig, used: u64, running: &HashMap<String, RunningJob>, grant: u64, now: Micros) -> Micros {
    let mut ends: Vec<(Micros, u64)> = running.values().map(|j| (j.expected_end, j.grant)).collect();
    ends.sort_by_key(|e| e.0);
    let mut memory = config.budget.saturating_sub(used);
    let mut free = config.slots.saturating_sub(running.len());
    if memory >= grant && free >= 1 {
        return now;
    }
    for (end, g) in ends {
        memory += g;
        free += 1;
        if memory >= grant && free >= 1 {
            return end.max(now);
        }
    }
    now
}
