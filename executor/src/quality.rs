//! Data-quality facts, measured cheaply on a sample: the dirt that makes a job run out of
//! memory or time although its grant would do for clean data. For the objects a segment
//! reads, the first rows of each source are read (only the key fields: the root's primary key
//! and both ends of every relationship the segment walks): a primary key repeated or missing
//! on a large share of them, or one value of a join key holding a large share of the rows
//! (extreme skew that concentrates the work on one key), is a finding.
//! Triage attaches the findings to the failed attempt and groups such failures apart.
//!
//! The defaults ([`ProbeOptions`]): at most 200,000 rows per object, under a memory pool of its
//! own of 256 MiB; an object with fewer than 1,000 sampled rows is not judged; a primary key
//! repeated or NULL on 20% or more of the rows, or one value holding 30% or more of a join
//! key's non-NULL values, is a [`DataFinding`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{cast, ident};

use crate::catalog::Catalog;
use crate::compile::source_table;
use crate::error::{Error, Result};
use crate::run::{RunOptions, session};
use crate::segment::{Node, Segment};

pub use cohort_common::DataFinding;

/// How much to read and what counts as a finding.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Rows read per object, at most.
    pub sample_rows: usize,
    /// Objects with fewer sampled rows are not judged (small data cannot exhaust a grant).
    pub min_rows: u64,
    /// Share of rows whose primary key repeats an earlier row's, at or above which it is a finding.
    pub duplicate_share: f64,
    /// Share of rows with a NULL primary key, at or above which it is a finding.
    pub null_share: f64,
    /// Share of a join key's non-NULL values held by its most common value.
    pub skew_share: f64,
    /// Memory the probe may use.
    pub memory_limit_bytes: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions { sample_rows: 200_000, min_rows: 1_000, duplicate_share: 0.2, null_share: 0.2, skew_share: 0.3, memory_limit_bytes: 256 << 20 }
    }
}

/// Measures the key fields `segment` reads (the root's primary key, and both ends of every
/// relationship it walks) on a sample of each object's rows; returns the findings.
pub async fn probe_data(catalog: &Catalog, segment: &Segment, options: &ProbeOptions) -> Result<Vec<DataFinding>> {
    // Per object, the key fields to look at.
    let mut fields: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    fields.entry(segment.root).or_default().insert(catalog.objects[segment.root].primary_key.clone());
    fn walk(node: &Node, fields: &mut BTreeMap<usize, BTreeSet<String>>) {
        match node {
            Node::Leaf(_) => {}
            Node::And(c) | Node::Or(c) => c.iter().for_each(|n| walk(n, fields)),
            Node::Not(n) => walk(n, fields),
            Node::Related(r) => {
                for hop in &r.path {
                    fields.entry(hop.from_object).or_default().insert(hop.from_field.clone());
                    fields.entry(hop.to_object).or_default().insert(hop.to_field.clone());
                }
                if let Some(w) = &r.where_ {
                    walk(w, fields);
                }
            }
        }
    }
    walk(&segment.filter, &mut fields);

    let mut run = RunOptions::new(0);
    run.memory_limit_bytes = Some(options.memory_limit_bytes);
    let (ctx, _) = session(&run)?;
    catalog.register_stores(&ctx)?;
    let mut findings = Vec::new();
    for (object, names) in fields {
        let o = &catalog.objects[object];
        let table = source_table(o)?;
        let columns: Vec<&String> = names.iter().filter(|n| o.read_schema.field_with_name(n).is_ok()).collect();
        if columns.is_empty() {
            continue;
        }
        let frame = ctx
            .read_table(table)
            .and_then(|f| f.select(columns.iter().map(|c| cast(ident(c.as_str()), DataType::Utf8).alias(c.as_str())).collect::<Vec<_>>()))
            .and_then(|f| f.limit(0, Some(options.sample_rows)))
            .map_err(|e| Error::Internal(format!("data probe of {:?}: {e}", o.name)))?;
        let batches = frame.collect().await.map_err(|e| Error::from_datafusion(e, options.memory_limit_bytes))?;
        let sampled: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        if sampled < options.min_rows {
            continue;
        }
        for (i, name) in columns.iter().enumerate() {
            let mut counts: HashMap<&str, u64> = HashMap::new();
            let mut nulls = 0u64;
            for b in &batches {
                let Some(values) = b.column(i).as_string_opt::<i32>() else {
                    return Err(Error::Internal(format!("data probe of {:?}.{name}: not cast to text", o.name)));
                };
                for v in values.iter() {
                    match v {
                        Some(v) => *counts.entry(v).or_default() += 1,
                        None => nulls += 1,
                    }
                }
            }
            let non_null = sampled - nulls;
            let finding = |kind: &str, share: f64| DataFinding { kind: kind.into(), object: o.name.clone(), field: name.to_string(), share, sampled };
            if **name == o.primary_key {
                let repeated = non_null - counts.len() as u64;
                let share = repeated as f64 / sampled as f64;
                if share >= options.duplicate_share {
                    findings.push(finding("duplicate_keys", share));
                }
                let share = nulls as f64 / sampled as f64;
                if share >= options.null_share {
                    findings.push(finding("null_keys", share));
                }
            } else if non_null >= options.min_rows {
                let top = counts.values().copied().max().unwrap_or(0);
                let share = top as f64 / non_null as f64;
                if share >= options.skew_share {
                    findings.push(finding("key_skew", share));
                }
            }
        }
    }
    Ok(findings)
}
