//! One finding about a tenant's data. The executor measures findings on a sample of the rows a
//! failed attempt read (its `quality` module); the control plane stores them with the attempt;
//! triage groups failures by them and words them for the report.

use serde::{Deserialize, Serialize};

/// Something wrong with a tenant's data, measured on a sample of the rows: the kind of trouble
/// that makes a job run out of memory or time although its grant would do for clean data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFinding {
    /// `duplicate_keys`, `null_keys` (of a primary key) or `key_skew` (one value of a join
    /// key holds a large share of the rows).
    pub kind: String,
    /// The object.
    pub object: String,
    /// Its field.
    pub field: String,
    /// The share of the sampled rows concerned (0 to 1).
    pub share: f64,
    /// Rows sampled.
    pub sampled: u64,
}

impl DataFinding {
    /// The finding in words: `orders.customer_id: 42% of 10000 sampled rows share one key value`.
    pub fn describe(&self) -> String {
        let what = match self.kind.as_str() {
            "duplicate_keys" => "rows repeat a primary key",
            "null_keys" => "rows have no primary key",
            "key_skew" => "rows share one key value",
            other => other,
        };
        format!("{}.{}: {:.0}% of {} sampled {what}", self.object, self.field, self.share * 100.0, self.sampled)
    }
}
