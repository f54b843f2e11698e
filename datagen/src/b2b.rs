//! The `b2b` profile: a B2B company's CRM.
//!
//! At `--scale N`: N accounts (+1% duplicate, 0.3% NULL keys), about 4N contacts, 2N
//! opportunities, N cases, 10N activities, and N/200 users (20 to 5,000) who own accounts,
//! opportunities and activities. Big accounts (by employees) get many more contacts and
//! activities. Keys of child rows are derived from their account's index, so every part is
//! made independently.

use std::collections::BTreeMap;
use std::ops::Range;

use indicatif::ProgressBar;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::random::{MICROS_PER_DAY, Skewed, cents, chance, day_within, exponential, instant_within_days, normal, pick, stream_id, stream_rng};
use super::writer::{FieldType as T, PartWriter, Relationship, Table};
use super::{GenContext, Task, Tenant, part_count, part_range, run_tasks};

/// Accounts per part file.
const ACCOUNTS_PER_PART: u64 = 1 << 17;

/// Most contacts, opportunities, cases and activities of one account (their keys are
/// `account index * limit + j`).
const MAX_CONTACTS: u64 = 64;
const MAX_OPPORTUNITIES: u64 = 16;
const MAX_CASES: u64 = 32;
const MAX_ACTIVITIES: u64 = 256;

const STREAM_USERS: u32 = 1;
const STREAM_ACCOUNTS: u32 = 2;

const INDUSTRIES: &[(&str, u32)] = &[
    ("software", 20),
    ("manufacturing", 15),
    ("finance", 12),
    ("healthcare", 10),
    ("retail", 10),
    ("education", 6),
    ("energy", 5),
    ("media", 5),
    ("logistics", 7),
    ("government", 4),
    ("", 6), // NULL
];
const COUNTRIES: &[(&str, u32)] =
    &[("US", 40), ("GB", 10), ("DE", 10), ("FR", 7), ("NL", 4), ("SE", 3), ("ES", 4), ("IT", 3), ("CA", 6), ("AU", 4), ("JP", 4), ("IN", 3), ("", 2)];
const TITLES: &[(&str, u32)] = &[
    ("CEO", 3),
    ("CTO", 3),
    ("CFO", 2),
    ("VP Sales", 4),
    ("VP Engineering", 4),
    ("Director of IT", 6),
    ("Head of Marketing", 5),
    ("Engineer", 25),
    ("Analyst", 15),
    ("Manager", 20),
    ("Procurement", 5),
    ("", 8),
];
const STAGES: &[(&str, u32)] = &[("prospecting", 18), ("qualification", 15), ("proposal", 12), ("negotiation", 8), ("closed_won", 22), ("closed_lost", 25)];
const PRIORITIES: &[(&str, u32)] = &[("low", 35), ("medium", 40), ("high", 18), ("urgent", 7)];
const ACTIVITY_KINDS: &[(&str, u32)] = &[("email", 45), ("call", 30), ("meeting", 15), ("demo", 6), ("note", 4)];
const REGIONS: &[(&str, u32)] = &[("NA", 45), ("EMEA", 35), ("APAC", 20)];
const ROLES: &[(&str, u32)] = &[("AE", 50), ("SDR", 30), ("CSM", 15), ("Manager", 5)];
const NAMES: &[&str] =
    &["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis", "Radia", "Linus", "Hedy", "John", "Karen", "Leslie"];
const SUFFIXES: &[&str] = &["Inc", "GmbH", "Ltd", "LLC", "SA", "BV", "AB", "Corp"];
const WORDS: &[&str] = &["Blue", "North", "Quantum", "Summit", "Iron", "Bright", "Silver", "Delta", "Pioneer", "Vertex", "Harbor", "Nova"];

fn tables() -> Vec<Table> {
    vec![
        Table::new(
            "account",
            "account_id",
            &[
                ("account_id", T::String),
                ("name", T::String),
                ("industry", T::String),
                ("country", T::String),
                ("employees", T::Int),
                ("annual_revenue", T::Float),
                ("is_customer", T::Bool),
                ("owner_id", T::String),
                ("created_at", T::Timestamp),
            ],
        ),
        Table::new(
            "contact",
            "contact_id",
            &[
                ("contact_id", T::String),
                ("account_id", T::String),
                ("email", T::String),
                ("title", T::String),
                ("do_not_contact", T::Bool),
                ("created_at", T::Timestamp),
            ],
        ),
        Table::new(
            "opportunity",
            "opportunity_id",
            &[
                ("opportunity_id", T::Int),
                ("account_id", T::String),
                ("owner_id", T::String),
                ("stage", T::String),
                ("amount", T::Float),
                ("close_date", T::Date),
                ("created_at", T::Timestamp),
            ],
        ),
        Table::new(
            "case",
            "case_id",
            &[
                ("case_id", T::Int),
                ("account_id", T::String),
                ("contact_id", T::String),
                ("priority", T::String),
                ("status", T::String),
                ("opened_at", T::Timestamp),
                ("closed_at", T::Timestamp),
            ],
        ),
        Table::new(
            "activity",
            "activity_id",
            &[
                ("activity_id", T::Int),
                ("contact_id", T::String),
                ("opportunity_id", T::Int),
                ("owner_id", T::String),
                ("kind", T::String),
                ("at", T::Timestamp),
                ("duration_min", T::Int),
            ],
        ),
        Table::new("user", "user_id", &[("user_id", T::String), ("name", T::String), ("region", T::String), ("role", T::String), ("active", T::Bool)]),
    ]
}

fn relationships() -> Vec<Relationship> {
    vec![
        Relationship::new("contact_account", "contact", "account_id", "account", "account_id"),
        Relationship::new("opportunity_account", "opportunity", "account_id", "account", "account_id"),
        Relationship::new("case_account", "case", "account_id", "account", "account_id"),
        Relationship::new("case_contact", "case", "contact_id", "contact", "contact_id"),
        Relationship::new("activity_contact", "activity", "contact_id", "contact", "contact_id"),
        Relationship::new("activity_opportunity", "activity", "opportunity_id", "opportunity", "opportunity_id"),
        Relationship::new("account_owner", "account", "owner_id", "user", "user_id"),
        Relationship::new("opportunity_owner", "opportunity", "owner_id", "user", "user_id"),
        Relationship::new("activity_owner", "activity", "owner_id", "user", "user_id"),
    ]
}

/// The tables of one part, in the order of [`tables`] (without `user`).
struct PartWriters {
    account: PartWriter,
    contact: PartWriter,
    opportunity: PartWriter,
    case: PartWriter,
    activity: PartWriter,
}

/// Makes the b2b tenant under `ctx.out`.
pub(super) fn generate(ctx: &GenContext) -> anyhow::Result<Tenant> {
    let tables = tables();
    ctx.prepare_tables(&tables)?;
    let n = ctx.scale;
    let user_count = (n / 200).clamp(20, 5000);
    let user_t = &tables[5];
    let user_rows = write_users(ctx, user_t, user_count, &ProgressBar::hidden())?;
    let mut rows = BTreeMap::from([(user_t.name.clone(), user_rows)]);

    let owners = Skewed::new(user_count, 0.6, 0.5, 1);
    let mut tasks: Vec<Task<'_>> = Vec::new();
    for part in 0..part_count(n, ACCOUNTS_PER_PART) {
        let range = part_range(n, ACCOUNTS_PER_PART, part);
        let (tables, owners) = (&tables, &owners);
        tasks.push(Box::new(move |progress| write_accounts(ctx, tables, part, range, owners, user_count, progress)));
    }
    for (object, count) in run_tasks("b2b", tasks, n * 22)? {
        *rows.entry(object).or_default() += count;
    }
    Ok(Tenant { tables, relationships: relationships(), guardrails: None, segments: segments(), rows })
}

fn write_users(ctx: &GenContext, table: &Table, count: u64, progress: &ProgressBar) -> anyhow::Result<u64> {
    let mut rng = stream_rng(ctx.seed, stream_id(STREAM_USERS, 0));
    let mut w = PartWriter::create(&ctx.out, table, 0, progress)?;
    for u in 0..count {
        w.string_fmt(0, format_args!("U{u:05}"));
        let first = NAMES[rng.random_range(0..NAMES.len())];
        w.string_fmt(1, format_args!("{first} {}", WORDS[rng.random_range(0..WORDS.len())]));
        w.string(2, Some(*pick(&mut rng, REGIONS)));
        w.string(3, Some(*pick(&mut rng, ROLES)));
        w.bool(4, Some(chance(&mut rng, 0.85)));
        w.end_row()?;
    }
    w.finish()
}

/// An owner: usually a real user, sometimes NULL or a deleted user.
fn owner_ref(rng: &mut ChaCha8Rng, w: &mut PartWriter, column: usize, owners: &Skewed, user_count: u64) {
    let roll = rng.random::<f64>();
    if roll < 0.01 {
        w.string(column, None);
    } else if roll < 0.015 {
        w.string_fmt(column, format_args!("U{:05}", user_count + rng.random_range(0..100)));
    } else {
        w.string_fmt(column, format_args!("U{:05}", owners.sample(rng)));
    }
}

fn write_accounts(
    ctx: &GenContext,
    tables: &[Table],
    part: usize,
    range: Range<u64>,
    owners: &Skewed,
    user_count: u64,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<(String, u64)>> {
    let n = ctx.scale;
    let mut rng = stream_rng(ctx.seed, stream_id(STREAM_ACCOUNTS, part));
    let mut w = PartWriters {
        account: PartWriter::create(&ctx.out, &tables[0], part, progress)?,
        contact: PartWriter::create(&ctx.out, &tables[1], part, progress)?,
        opportunity: PartWriter::create(&ctx.out, &tables[2], part, progress)?,
        case: PartWriter::create(&ctx.out, &tables[3], part, progress)?,
        activity: PartWriter::create(&ctx.out, &tables[4], part, progress)?,
    };
    for a in range {
        account(&mut rng, &mut w, a, n, owners, user_count)?;
    }
    let PartWriters { account, contact, opportunity, case, activity } = w;
    Ok(vec![
        (tables[0].name.clone(), account.finish()?),
        (tables[1].name.clone(), contact.finish()?),
        (tables[2].name.clone(), opportunity.finish()?),
        (tables[3].name.clone(), case.finish()?),
        (tables[4].name.clone(), activity.finish()?),
    ])
}

/// One account and everything hanging off it.
fn account(rng: &mut ChaCha8Rng, w: &mut PartWriters, a: u64, n: u64, owners: &Skewed, user_count: u64) -> anyhow::Result<()> {
    let employees = (80.0 * (1.6 * normal(rng)).exp()).clamp(1.0, 400_000.0) as i64;
    let size = (employees as f64).ln().max(0.0); // 0 .. 13
    let is_customer = chance(rng, 0.35);
    let created_at = instant_within_days(rng, 8 * 365);
    let copies = if chance(rng, 0.01) { 2 } else { 1 };
    for copy in 0..copies {
        let aw = &mut w.account;
        aw.string_fmt(0, format_args!("A{a:07}"));
        aw.string_fmt(
            1,
            format_args!(
                "{} {} {}",
                WORDS[(a % WORDS.len() as u64) as usize],
                WORDS[((a / 12) % WORDS.len() as u64) as usize],
                SUFFIXES[(a % SUFFIXES.len() as u64) as usize]
            ),
        );
        let industry = *pick(rng, INDUSTRIES);
        aw.string(2, if industry.is_empty() { None } else { Some(industry) });
        let country = *pick(rng, COUNTRIES);
        aw.string(3, if country.is_empty() { None } else { Some(country) });
        aw.int(4, if chance(rng, 0.05) { None } else { Some(employees) });
        let revenue = cents(employees as f64 * 150_000.0 * (0.5 * normal(rng)).exp());
        aw.float(5, if chance(rng, 0.1) { None } else { Some(revenue) });
        // A duplicate row is the account as it was before it became a customer.
        aw.bool(6, Some(is_customer && copy == 0));
        owner_ref(rng, aw, 7, owners, user_count);
        aw.timestamp(8, Some(created_at));
        aw.end_row()?;
    }
    if chance(rng, 0.003) {
        let aw = &mut w.account;
        aw.string(0, None);
        aw.string(1, Some("Unknown"));
        aw.string(2, None);
        aw.string(3, Some(*pick(rng, COUNTRIES)).filter(|c| !c.is_empty()));
        aw.int(4, None);
        aw.float(5, None);
        aw.bool(6, Some(false));
        owner_ref(rng, aw, 7, owners, user_count);
        aw.timestamp(8, Some(instant_within_days(rng, 8 * 365)));
        aw.end_row()?;
    }

    let contacts = (1 + exponential(rng, 1.0 + size * 0.6) as u64).min(MAX_CONTACTS);
    for c in 0..contacts {
        let cw = &mut w.contact;
        let contact_id = a * MAX_CONTACTS + c;
        cw.string_fmt(0, format_args!("C{contact_id:09}"));
        let roll = rng.random::<f64>();
        if roll < 0.02 {
            cw.string(1, None);
        } else if roll < 0.025 {
            cw.string_fmt(1, format_args!("A{:07}", n + rng.random_range(0..n)));
        } else {
            cw.string_fmt(1, format_args!("A{a:07}"));
        }
        if chance(rng, 0.05) {
            cw.string(2, None);
        } else {
            cw.string_fmt(2, format_args!("contact{contact_id}@a{a}.example.com"));
        }
        let title = *pick(rng, TITLES);
        cw.string(3, if title.is_empty() { None } else { Some(title) });
        let dnc = rng.random::<f64>();
        cw.bool(4, if dnc < 0.1 { None } else { Some(dnc < 0.18) });
        cw.timestamp(5, Some(created_at + rng.random_range(0..365 * MICROS_PER_DAY)));
        cw.end_row()?;
    }

    let opportunities = (exponential(rng, 0.8 + size * 0.35) as u64).min(MAX_OPPORTUNITIES);
    for o in 0..opportunities {
        let ow = &mut w.opportunity;
        let opportunity_id = (a * MAX_OPPORTUNITIES + o) as i64 + 1;
        ow.int(0, Some(opportunity_id));
        if chance(rng, 0.01) {
            ow.string(1, None);
        } else {
            ow.string_fmt(1, format_args!("A{a:07}"));
        }
        owner_ref(rng, ow, 2, owners, user_count);
        let stage = *pick(rng, STAGES);
        ow.string(3, Some(stage));
        let amount = cents(5_000.0 * (size * 0.3).exp() * (0.8 * normal(rng)).exp());
        ow.float(4, if chance(rng, 0.04) { None } else { Some(amount) });
        let open = !stage.starts_with("closed");
        // Closed: closed in the last two years; open: expected in the next six months.
        let close_date = if open { day_within(rng, 1) + rng.random_range(0..180) } else { day_within(rng, 730) };
        ow.date(5, Some(close_date));
        ow.timestamp(6, Some(instant_within_days(rng, 900)));
        ow.end_row()?;
    }

    let case_mean = if is_customer { 2.0 + size * 0.3 } else { 0.3 };
    let cases = (exponential(rng, case_mean) as u64).min(MAX_CASES);
    for k in 0..cases {
        let kw = &mut w.case;
        kw.int(0, Some((a * MAX_CASES + k) as i64 + 1));
        kw.string_fmt(1, format_args!("A{a:07}"));
        if chance(rng, 0.1) {
            kw.string(2, None);
        } else {
            kw.string_fmt(2, format_args!("C{:09}", a * MAX_CONTACTS + rng.random_range(0..contacts)));
        }
        kw.string(3, Some(*pick(rng, PRIORITIES)));
        let opened_at = instant_within_days(rng, 540);
        let status = match rng.random_range(0..100) {
            0..70 => "closed",
            70..90 => "open",
            _ => "escalated",
        };
        kw.string(4, Some(status));
        kw.timestamp(5, Some(opened_at));
        let closed_at = (status == "closed").then(|| opened_at + (exponential(rng, 5.0) * MICROS_PER_DAY as f64) as i64);
        kw.timestamp(6, closed_at);
        kw.end_row()?;
    }

    let activity_mean = 2.0 + size * 1.5 + if is_customer { 3.0 } else { 0.0 };
    let activities = (exponential(rng, activity_mean) as u64).min(MAX_ACTIVITIES);
    for t in 0..activities {
        let tw = &mut w.activity;
        let activity_id = (a * MAX_ACTIVITIES + t) as i64 + 1;
        // A re-synced activity appears twice.
        let copies = if chance(rng, 0.005) { 2 } else { 1 };
        let contact = a * MAX_CONTACTS + rng.random_range(0..contacts);
        let opportunity = (opportunities > 0 && chance(rng, 0.5)).then(|| (a * MAX_OPPORTUNITIES + rng.random_range(0..opportunities)) as i64 + 1);
        let kind = *pick(rng, ACTIVITY_KINDS);
        let at = instant_within_days(rng, 365);
        for _ in 0..copies {
            tw.int(0, Some(activity_id));
            let roll = rng.random::<f64>();
            if roll < 0.01 {
                tw.string(1, None);
            } else if roll < 0.015 {
                tw.string_fmt(1, format_args!("C{:09}", n * MAX_CONTACTS + rng.random_range(0..n)));
            } else {
                tw.string_fmt(1, format_args!("C{contact:09}"));
            }
            tw.int(2, opportunity);
            owner_ref(rng, tw, 3, owners, user_count);
            tw.string(4, Some(kind));
            tw.timestamp(5, Some(at));
            let duration = match kind {
                "meeting" | "demo" => Some(30 + rng.random_range(0..4) * 15),
                "call" => Some(1 + exponential(rng, 12.0) as i64),
                _ => None,
            };
            tw.int(6, duration);
            tw.end_row()?;
        }
    }
    Ok(())
}

/// The b2b segments, every one valid against the model.
fn segments() -> Vec<(String, Value)> {
    let segment = |name: &str, root: &str, filter: Value| (name.to_string(), json!({"name": name, "root": root, "filter": filter}));
    vec![
        // Customers that won $50k+ in the last year and have no open high-priority case.
        segment(
            "expansion_ready_customers",
            "account",
            json!({"and": [
                {"field": "is_customer", "op": "eq", "value": true},
                {"related": "opportunity",
                 "where": {"and": [
                     {"field": "stage", "op": "eq", "value": "closed_won"},
                     {"field": "close_date", "op": "within_last", "value": "365d"}
                 ]},
                 "having": {"agg": "sum", "field": "amount", "op": "ge", "value": 50000}},
                {"not": {"related": "case",
                         "where": {"and": [
                             {"field": "priority", "op": "in", "value": ["high", "urgent"]},
                             {"field": "status", "op": "ne", "value": "closed"}
                         ]}}}
            ]}),
        ),
        // Customers with 3+ cases in 90 days, or any escalated case.
        segment(
            "at_risk_customers",
            "account",
            json!({"and": [
                {"field": "is_customer", "op": "eq", "value": true},
                {"or": [
                    {"related": "case", "via": ["case_account"],
                     "where": {"field": "opened_at", "op": "within_last", "value": "90d"},
                     "having": {"agg": "count", "op": "ge", "value": 3}},
                    {"related": "case", "via": ["case_account"],
                     "where": {"field": "status", "op": "eq", "value": "escalated"}}
                ]}
            ]}),
        ),
        // Accounts with a late-stage opportunity older than 120 days that nobody touched in 30.
        segment(
            "stalled_pipeline",
            "account",
            json!({"related": "opportunity",
            "where": {"and": [
                {"field": "stage", "op": "in", "value": ["proposal", "negotiation"]},
                {"field": "created_at", "op": "older_than", "value": "120d"},
                {"not": {"related": "activity", "via": ["activity_opportunity"],
                         "where": {"field": "at", "op": "within_last", "value": "30d"}}}
            ]}}),
        ),
        // Senior contacts who may be contacted and had 2+ meetings or demos in 60 days.
        segment(
            "engaged_decision_makers",
            "contact",
            json!({"and": [
                {"or": [
                    {"field": "title", "op": "in", "value": ["CEO", "CTO", "CFO"]},
                    {"field": "title", "op": "starts_with", "value": "VP "},
                    {"field": "title", "op": "contains", "value": "Director"}
                ]},
                {"field": "do_not_contact", "op": "eq", "value": false},
                {"related": "activity",
                 "where": {"and": [
                     {"field": "kind", "op": "in", "value": ["meeting", "demo"]},
                     {"field": "at", "op": "within_last", "value": "60d"}
                 ]},
                 "having": {"agg": "count", "op": "ge", "value": 2}}
            ]}),
        ),
        // Accounts of 1,000+ employees with no activity with any of their contacts in 90 days
        // (`via`: account → activity is also two hops through opportunity).
        segment(
            "large_accounts_untouched",
            "account",
            json!({"and": [
                {"field": "employees", "op": "ge", "value": 1000},
                {"not": {"related": "activity", "via": ["contact_account", "activity_contact"],
                         "where": {"field": "at", "op": "within_last", "value": "90d"}}}
            ]}),
        ),
        // European accounts over $10M revenue, owned by an active EMEA rep, with contacts of 3+ titles.
        segment(
            "emea_enterprise_with_active_owner",
            "account",
            json!({"and": [
                {"field": "country", "op": "in", "value": ["GB", "DE", "FR", "NL", "SE", "ES", "IT"]},
                {"field": "annual_revenue", "op": "gt", "value": 10000000.0},
                {"related": "user", "via": ["account_owner"],
                 "where": {"and": [
                     {"field": "active", "op": "eq", "value": true},
                     {"field": "region", "op": "eq", "value": "EMEA"}
                 ]}},
                {"related": "contact", "having": {"agg": "count_distinct", "field": "title", "op": "ge", "value": 3}}
            ]}),
        ),
    ]
}
