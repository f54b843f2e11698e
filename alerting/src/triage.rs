//! Failure triage, pure: failed attempts in, a report of what is going wrong out.
//!
//! Each failure gets a **signature** ([`signature`]): its error class and its message with the
//! parts that vary from one occurrence to the next replaced by placeholders ([`normalize`]:
//! numbers, ids, UUIDs, paths, URLs, quoted values and timestamps; type names such as `Int64`
//! kept), so the same cause groups into one signature wherever and whenever it happens. An
//! out-of-memory message keeps only its head (which operator asked last is chance, not cause);
//! any other drops its "did you mean" suggestion. An out-of-memory, timeout or execution
//! failure over data with findings (duplicate or NULL keys, key skew) has another cause than
//! the same error over clean data: [`signature_with`] gives it a signature of its own and
//! [`classify_with`] makes it [`Category::DataQuality`].
//!
//! Each signature is **classified** ([`classify`]) into [`Category`], which carries the
//! remediation. A [`Report`] ([`report`], over a window; [`markdown`] renders it) lists
//! signatures new ones first (not seen in the previous windows), then by count, each with its
//! trend against the window before, the tenants and regions it touched, sample jobs, recovered
//! against not, the largest grant, the data findings and the alerts its final failures fed.
//!
//! The normalization cases are data: the blocks of `alerting/tests/triage/signatures.txt`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// When it failed, milliseconds since the epoch.
    pub at: i64,
    /// Its tenant.
    pub tenant: String,
    /// The tenant's region.
    pub region: String,
    /// The segment.
    pub segment: String,
    /// The job.
    pub job: String,
    /// Attempt number (1 first).
    pub attempt: u32,
    /// The error class (`invalid`, `schema_mismatch`, `source_unavailable`,
    /// `resources_exhausted`, `execution`, `internal`, `timeout`, `commit`, `store`).
    pub class: String,
    /// The error message.
    pub message: String,
    /// Whether the job later succeeded (a retry recovered it).
    #[serde(default)]
    pub recovered: bool,
    /// Whether the job ended failed (a final failure: what alerts count). Neither this nor
    /// `recovered`: cancelled, or not finished yet.
    #[serde(default)]
    pub job_failed: bool,
    /// The attempt's memory grant, bytes.
    #[serde(default)]
    pub grant: Option<u64>,
    /// What the worker found wrong with the data the attempt read (empty: nothing, or not
    /// measured).
    #[serde(default)]
    pub data: Vec<DataFinding>,
}

pub use cohort_common::DataFinding;

/// An alert that fired, for telling which signatures fed it.
#[derive(Debug, Clone, PartialEq)]
pub struct FiredAlert {
    /// Its id.
    pub id: String,
    /// `tenant`, `region` or `global`.
    pub scope: String,
    /// The tenant id, the region, or `global`.
    pub key: String,
    /// When it started firing (milliseconds).
    pub started: i64,
    /// When it resolved; `None` while it fires.
    pub resolved: Option<i64>,
}

/// What kind of trouble a signature is, with what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// A bug in Cohort: always reported, always loud.
    Internal,
    /// A job ran out of its memory grant.
    ResourcesExhausted,
    /// A job ran past its deadline.
    Timeout,
    /// A source could not be read.
    SourceUnavailable,
    /// A field or file the model names has gone or changed type.
    SchemaDrift,
    /// The data breaks an assumption: duplicate or NULL keys, extreme skew.
    DataQuality,
    /// A guardrail of the model stopped the segment (path too long, ambiguous).
    Guardrail,
    /// The segment or model is invalid.
    InvalidSegment,
    /// The service's own store or commit failed.
    Service,
    /// Anything else.
    Other,
}

impl Category {
    /// Its name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Category::Internal => "internal",
            Category::ResourcesExhausted => "resources_exhausted",
            Category::Timeout => "timeout",
            Category::SourceUnavailable => "source_unavailable",
            Category::SchemaDrift => "schema_drift",
            Category::DataQuality => "data_quality",
            Category::Guardrail => "guardrail",
            Category::InvalidSegment => "invalid_segment",
            Category::Service => "service",
            Category::Other => "other",
        }
    }

    /// The remediation shown with the category.
    pub fn remediation(self) -> &'static str {
        match self {
            Category::Internal => "A bug in Cohort: file it with the sample job ids; it will not go away by retrying.",
            Category::ResourcesExhausted => {
                "The grant was too small. Retries double it; if jobs still fail or the tenant keeps under-granting, check the estimator's accuracy for the tenant (GET /v1/estimator) and its memory quota."
            }
            Category::Timeout => {
                "The run took longer than its deadline. Check whether the tenant's data grew (the estimator's runtime), raise deadline_factor or the segment's timeout, or split the segment."
            }
            Category::SourceUnavailable => {
                "A source could not be read. Transient ones recover on retry; if it persists, the file is missing, damaged or unreachable: ask the tenant to restore it."
            }
            Category::SchemaDrift => {
                "The data no longer matches the model: a field or file it names has gone or changed type. Ask the tenant to update the model (PUT …/model) or restore the data."
            }
            Category::DataQuality => {
                "The data breaks an assumption (duplicate or NULL keys, extreme skew). Ask the tenant to clean the source; skewed keys may need a larger grant."
            }
            Category::Guardrail => "A model guardrail stopped the segment (too many hops, an ambiguous path). Name the path with `via` or raise the guardrail.",
            Category::InvalidSegment => "The segment or model is invalid for the tenant's data; the message names the place. The tenant must fix it.",
            Category::Service => "Cohort's store or membership commit failed. Check the database and the data folder's disk.",
            Category::Other => "Unclassified: read the sample jobs' timelines.",
        }
    }
}

/// Classes whose failures the data can cause: a run that needs more memory or time than the
/// same data without its dirt would.
const DATA_SENSITIVE: &[&str] = &["resources_exhausted", "timeout", "execution"];

/// Classifies a failure by its class, message and what was found in its data: an attempt that
/// ran out of memory or time over data with duplicate keys or extreme skew is a data-quality
/// failure first.
pub fn classify_with(class: &str, message: &str, data: &[DataFinding]) -> Category {
    if !data.is_empty() && DATA_SENSITIVE.contains(&class) {
        return Category::DataQuality;
    }
    classify(class, message)
}

/// Classifies a failure by its class and message.
pub fn classify(class: &str, message: &str) -> Category {
    let m = message.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    match class {
        "internal" => Category::Internal,
        "resources_exhausted" => Category::ResourcesExhausted,
        "timeout" => Category::Timeout,
        "commit" | "store" => Category::Service,
        _ if has(&["duplicate key", "duplicate primary key", "null key", "null primary key", "key skew"]) => Category::DataQuality,
        _ if has(&["max_hops", "too many hops", "ambiguous", "guardrail"]) => Category::Guardrail,
        "schema_mismatch" => Category::SchemaDrift,
        "source_unavailable" if has(&["column", "field"]) => Category::SchemaDrift,
        // The source as a whole is gone (not one file between listing and reading it).
        "source_unavailable" if has(&["no parquet files", "no csv files"]) => Category::SchemaDrift,
        "source_unavailable" => Category::SourceUnavailable,
        "invalid" if m.starts_with("invalid model") && has(&["field", "column", "type"]) => Category::SchemaDrift,
        "invalid" => Category::InvalidSegment,
        _ => Category::Other,
    }
}

/// The message with its varying parts replaced by placeholders: `<time>`, `<uuid>`, `<url>`,
/// `<path>`, `<id>` (a word with digits in it), `<n>` (a number), `"<v>"` (a quoted value).
pub fn normalize(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // Quoted values (a quote that opens a word: `tenant's` has no quoted value).
        let opens = i == 0 || !chars[i - 1].is_alphanumeric();
        if (c == '"' || c == '\'' || c == '`')
            && opens
            && let Some(end) = chars[i + 1..].iter().position(|&d| d == c)
        {
            out.push(c);
            out.push_str("<v>");
            out.push(c);
            i += end + 2;
            continue;
        }
        // A word: everything up to whitespace or simple punctuation.
        if !c.is_whitespace() && !is_separator(c) {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !is_separator(chars[i]) {
                i += 1;
            }
            // A trailing `.` or `:` ends a sentence, not the word.
            let mut end = i;
            while end > start && matches!(chars[end - 1], '.' | ':') {
                end -= 1;
            }
            let word: String = chars[start..end].iter().collect();
            out.push_str(&placeholder(&word));
            out.extend(&chars[end..i]);
            continue;
        }
        out.push(c);
        i += 1;
    }
    // Runs of whitespace count once.
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_separator(c: char) -> bool {
    matches!(c, ',' | ';' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | '=' | '"' | '\'' | '`')
}

/// What a word becomes.
fn placeholder(word: &str) -> String {
    if word.is_empty() {
        return String::new();
    }
    if word.contains("://") {
        return "<url>".into();
    }
    if is_time(word) {
        return "<time>".into();
    }
    if is_uuid(word) {
        return "<uuid>".into();
    }
    if word.starts_with('/') || word.starts_with("./") || word.starts_with("~/") || (word.contains('/') && !word.starts_with("http")) {
        return "<path>".into();
    }
    let digits = word.chars().filter(char::is_ascii_digit).count();
    if digits == 0 {
        return word.into();
    }
    if is_number(word) {
        return "<n>".into();
    }
    // A number with a unit glued to it (`64KiB`, `2.5s`, `3x`): the unit stays.
    let number_end = word.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(word.len());
    if number_end > 0 && word[number_end..].chars().all(char::is_alphabetic) && word[..number_end].chars().any(|c| c.is_ascii_digit()) {
        return format!("<n>{}", &word[number_end..]);
    }
    // A type name (`Int64`, `Utf8`, `Float32`): letters, then at most three digits.
    let letters = word.find(|c: char| c.is_ascii_digit()).unwrap_or(word.len());
    if letters > 0
        && word[..letters].chars().all(|c| c.is_ascii_alphabetic())
        && (1..=3).contains(&(word.len() - letters))
        && word[letters..].chars().all(|c| c.is_ascii_digit())
    {
        return word.into();
    }
    // A bracketed index in a place (`filter.and[2]`) is split off by the separators; what is
    // left with digits is an id (`run_0660d6f8`, `t00012`, `part-0.parquet`).
    "<id>".into()
}

fn is_number(word: &str) -> bool {
    let w = word.strip_prefix(['-', '+']).unwrap_or(word);
    if let Some(hex) = w.strip_prefix("0x") {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    !w.is_empty() && w.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '_') && w.chars().filter(|c| *c == '.').count() <= 1
}

fn is_uuid(word: &str) -> bool {
    let parts: Vec<&str> = word.split('-').collect();
    parts.len() == 5 && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_time(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
}

/// A failure's signature: its class and normalized message. An out-of-memory message keeps
/// only its head: which operator asked last is chance, not cause.
pub fn signature(class: &str, message: &str) -> String {
    let message = match class {
        "resources_exhausted" => message.split_once(": ").map_or(message, |(head, _)| head),
        _ => message.find(" (did you mean ").map_or(message, |at| &message[..at]),
    };
    format!("{class}: {}", normalize(message))
}

/// A failure's signature with what was found in its data: the same error over dirty data is
/// another cause than over clean data.
pub fn signature_with(class: &str, message: &str, data: &[DataFinding]) -> String {
    let base = signature(class, message);
    if data.is_empty() || !DATA_SENSITIVE.contains(&class) {
        return base;
    }
    let kinds: BTreeSet<&str> = data.iter().map(|d| d.kind.as_str()).collect();
    format!("{base} [data: {}]", kinds.into_iter().collect::<Vec<_>>().join(", "))
}

/// One signature in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureReport {
    /// Class and normalized message.
    pub signature: String,
    /// The error class.
    pub class: String,
    /// Its category.
    pub category: Category,
    /// What to do.
    pub remediation: String,
    /// Failed attempts in the window.
    pub count: usize,
    /// In the window before it (same length).
    pub previous_count: usize,
    /// Not seen in any of the previous windows.
    pub new: bool,
    /// First and last failure in the window (milliseconds).
    pub first_seen: i64,
    /// Last.
    pub last_seen: i64,
    /// Tenants affected (sorted).
    pub tenants: Vec<String>,
    /// Regions affected (sorted).
    pub regions: Vec<String>,
    /// Up to five job ids.
    pub sample_jobs: Vec<String>,
    /// Failed attempts whose job later succeeded.
    pub recovered: usize,
    /// Failed attempts whose job did not.
    pub unrecovered: usize,
    /// One message as it was.
    pub example: String,
    /// What was found wrong with the data (distinct findings, up to five).
    pub data_quality: Vec<String>,
    /// The largest memory grant among its attempts (bytes).
    pub max_grant_bytes: Option<u64>,
    /// The alerts its final failures fed (ids).
    pub alerts: Vec<String>,
    /// Some of its final failures finished after the instant the alert evaluator is known to
    /// have taken in (`Report::alerts_evaluated_until`): alerts they feed may still be raised.
    #[serde(default)]
    pub alerts_pending: bool,
}

/// A triage report over `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Window start (milliseconds).
    pub from: i64,
    /// Window end.
    pub to: i64,
    /// Failed attempts in the window.
    pub failures: usize,
    /// Signatures, new first, then by count.
    pub signatures: Vec<SignatureReport>,
    /// Failures that finished up to this instant (milliseconds) have been through the alert
    /// evaluator; later ones may still raise alerts. `None`: not known (a report from files).
    #[serde(default)]
    pub alerts_evaluated_until: Option<i64>,
}

/// The report for the failures in `[from, to)`; `history` windows of the same length before
/// it decide what is new (a signature seen in none of them) and the trend (the window just
/// before). A final failure fed an alert of its tenant, region or everything if it happened
/// while the alert fired or within `alert_window` (milliseconds) before it started. Final
/// failures after `evaluated_until` (when known) may not have reached the alert evaluator yet:
/// their signatures say `alerts_pending`.
pub fn report(failures: &[Failure], from: i64, to: i64, history: u32, alerts: &[FiredAlert], alert_window: i64, evaluated_until: Option<i64>) -> Report {
    let len = (to - from).max(1);
    let earliest = from - len * i64::from(history);
    // Signatures are computed once per distinct (class, message).
    let mut memo: HashMap<(&str, &str), String> = HashMap::new();
    let mut groups: BTreeMap<String, Vec<&Failure>> = BTreeMap::new();
    let mut seen_before: HashMap<String, (usize, bool)> = HashMap::new(); // previous window count, seen in history
    for f in failures {
        if f.at < earliest || f.at >= to {
            continue;
        }
        let sig = if f.data.is_empty() {
            memo.entry((f.class.as_str(), f.message.as_str())).or_insert_with(|| signature(&f.class, &f.message)).clone()
        } else {
            signature_with(&f.class, &f.message, &f.data)
        };
        if f.at >= from {
            groups.entry(sig).or_default().push(f);
        } else {
            let e = seen_before.entry(sig).or_default();
            e.1 = true;
            if f.at >= from - len {
                e.0 += 1;
            }
        }
    }
    let mut out: Vec<SignatureReport> = groups
        .into_iter()
        .map(|(sig, fs)| {
            let first = fs[0];
            let (previous_count, seen) = seen_before.get(&sig).copied().unwrap_or_default();
            let tenants: BTreeSet<&str> = fs.iter().map(|f| f.tenant.as_str()).collect();
            let regions: BTreeSet<&str> = fs.iter().map(|f| f.region.as_str()).collect();
            let mut jobs: Vec<&str> = fs.iter().map(|f| f.job.as_str()).collect();
            jobs.dedup();
            let category = classify_with(&first.class, &first.message, &first.data);
            let mut data_quality: Vec<String> = Vec::new();
            for d in fs.iter().flat_map(|f| &f.data) {
                let text = d.describe();
                if data_quality.len() < 5 && !data_quality.contains(&text) {
                    data_quality.push(text);
                }
            }
            let fed: Vec<String> = alerts
                .iter()
                .filter(|a| {
                    fs.iter().any(|f| {
                        f.job_failed
                            && f.at > a.started - alert_window
                            && a.resolved.is_none_or(|r| f.at < r)
                            && match a.scope.as_str() {
                                "tenant" => a.key == f.tenant,
                                "region" => a.key == f.region,
                                _ => true,
                            }
                    })
                })
                .map(|a| a.id.clone())
                .collect();
            SignatureReport {
                class: first.class.clone(),
                category,
                remediation: category.remediation().to_string(),
                count: fs.len(),
                previous_count,
                new: !seen || category == Category::Internal,
                first_seen: fs.iter().map(|f| f.at).min().unwrap_or(from),
                last_seen: fs.iter().map(|f| f.at).max().unwrap_or(from),
                tenants: tenants.into_iter().map(String::from).collect(),
                regions: regions.into_iter().map(String::from).collect(),
                sample_jobs: jobs.into_iter().take(5).map(String::from).collect(),
                recovered: fs.iter().filter(|f| f.recovered).count(),
                unrecovered: fs.iter().filter(|f| !f.recovered).count(),
                example: first.message.clone(),
                data_quality,
                max_grant_bytes: fs.iter().filter_map(|f| f.grant).max(),
                alerts: fed,
                alerts_pending: evaluated_until.is_some_and(|until| fs.iter().any(|f| f.job_failed && f.at > until)),
                signature: sig,
            }
        })
        .collect();
    out.sort_by(|a, b| b.new.cmp(&a.new).then(b.count.cmp(&a.count)).then_with(|| a.signature.cmp(&b.signature)));
    Report { from, to, failures: out.iter().map(|s| s.count).sum(), signatures: out, alerts_evaluated_until: evaluated_until }
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "# Failure triage\n\n{} failed attempts from {} to {}, {} signatures.\n",
        r.failures,
        crate::replay::format_time(r.from),
        crate::replay::format_time(r.to),
        r.signatures.len()
    );
    for s in &r.signatures {
        let _ = write!(
            out,
            "\n## {}{}\n\n- {}: {}\n- {} failures ({} before), {} recovered by a retry; first {}, last {}\n- tenants: {}; regions: {}\n- jobs: {}\n- example: {}\n",
            if s.new { "NEW " } else { "" },
            s.signature.replace('\n', " "),
            s.category.name(),
            s.remediation,
            s.count,
            s.previous_count,
            s.recovered,
            crate::replay::format_time(s.first_seen),
            crate::replay::format_time(s.last_seen),
            s.tenants.join(", "),
            s.regions.join(", "),
            s.sample_jobs.join(", "),
            s.example.replace('\n', " ")
        );
        if !s.data_quality.is_empty() {
            let _ = writeln!(out, "- data: {}", s.data_quality.join("; "));
        }
        if !s.alerts.is_empty() {
            let _ = writeln!(out, "- alerts fed: {}", s.alerts.join(", "));
        }
        if s.alerts_pending {
            let _ = writeln!(out, "- alerts: its latest failures are still being evaluated; alerts they feed may follow");
        }
    }
    out
}
