//! The segment compiler: a checked [`Segment`] into DataFusion plans, built through the
//! DataFrame API (values become typed literals, never SQL text).
//!
//! Every node written at object X becomes a boolean expression over X's rows that is TRUE
//! exactly for the rows in the node's set (`not` is `IS NOT TRUE`, so NULL never leaks into a
//! set). A `related` node is evaluated once per distinct value of X's first join field: the
//! rows of the related object that satisfy `where`, reached through distinct
//! `(start value, join value)` pairs hop by hop (so each related row counts once however many
//! chains reach it), aggregated by start value and left-joined back onto X.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{JoinType, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::functions::expr_fn::coalesce;
use datafusion::functions::string::expr_fn::{contains, ends_with, starts_with};
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{avg, count_distinct, max, min, sum};
use datafusion::logical_expr::{Expr, cast, ident, in_list, is_not_true, lit};
use datafusion::prelude::SessionContext;

use crate::catalog::{Catalog, LoadedObject, arrow_type};
use crate::error::{Error, Result};
use crate::model::{FieldType, SourceFormat};
use crate::segment::{Agg, CmpOp, Having, Leaf, LeafOp, Literal, Node, Number, Related, Segment};

/// The table that reads an object's source files with the schema the catalog found.
pub(crate) fn source_table(o: &LoadedObject) -> Result<Arc<ListingTable>> {
    let format: Arc<dyn FileFormat> = match o.format {
        SourceFormat::Parquet => Arc::new(ParquetFormat::default()),
        SourceFormat::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
    };
    let options = ListingOptions::new(format).with_file_extension(o.file_extension.clone());
    let config = ListingTableConfig::new(o.url.clone()).with_listing_options(options).with_schema(Arc::clone(&o.read_schema));
    let table = ListingTable::try_new(config).map_err(|e| Error::Internal(format!("listing table for {:?}: {e}", o.name)))?;
    Ok(Arc::new(table))
}

/// Columns the compiler adds start with this; the model rejects field names that do.
pub const RESERVED_PREFIX: &str = "__cohort";

const START: &str = "__cohort_start";
const WALK: &str = "__cohort_walk";
const KEY: &str = "__cohort_key";
const MEMBER: &str = "__cohort_member";

/// Compiles segments over one catalog for one `as_of` instant, inside one session.
pub(crate) struct Compiler<'a> {
    catalog: &'a Catalog,
    ctx: &'a SessionContext,
    as_of_micros: i64,
    next_related: usize,
    /// Objects scanned, once per scan, for the bytes-scanned estimate of CSV sources.
    pub scans: Vec<usize>,
}

impl<'a> Compiler<'a> {
    pub(crate) fn new(catalog: &'a Catalog, ctx: &'a SessionContext, as_of_micros: i64) -> Self {
        Compiler { catalog, ctx, as_of_micros, next_related: 0, scans: Vec::new() }
    }

    /// The single plan: the distinct non-NULL primary keys of the root rows in the filter's set.
    pub(crate) fn members(&mut self, segment: &Segment) -> Result<DataFrame> {
        let rows = self.matching_rows(segment.root, &segment.filter)?;
        let pk = &self.catalog.objects[segment.root].primary_key;
        Ok(df(rows.select(vec![ident(pk).alias(MEMBER)])
            .and_then(|d| d.filter(ident(MEMBER).is_not_null()))
            .and_then(|d| d.distinct()))?)
    }

    /// One phase: the distinct signatures (primary key plus every root field the filter reads)
    /// of the root rows in `branch`'s set. Rows with equal signatures fall in the same sets, so
    /// intersecting and uniting signature sets is exact even with duplicate keys.
    pub(crate) fn phase(&mut self, root: usize, branch: &Node, signature: &[String]) -> Result<DataFrame> {
        let rows = self.matching_rows(root, branch)?;
        Ok(df(rows.select(signature.iter().map(ident).collect::<Vec<Expr>>()).and_then(DataFrame::distinct))?)
    }

    /// The columns of the root that decide membership: the key and the fields read at the root.
    pub(crate) fn signature(&self, segment: &Segment) -> Vec<String> {
        let mut fields = BTreeSet::new();
        fields.insert(self.catalog.objects[segment.root].primary_key.clone());
        fn walk(node: &Node, fields: &mut BTreeSet<String>) {
            match node {
                Node::Leaf(l) => {
                    fields.insert(l.field.clone());
                }
                Node::And(c) | Node::Or(c) => c.iter().for_each(|n| walk(n, fields)),
                Node::Not(n) => walk(n, fields),
                Node::Related(r) => {
                    if let Some(first) = r.path.first() {
                        fields.insert(first.from_field.clone());
                    }
                }
            }
        }
        walk(&segment.filter, &mut fields);
        fields.into_iter().collect()
    }

    /// The rows of `object` in `node`'s set, all of the object's fields kept.
    fn matching_rows(&mut self, object: usize, node: &Node) -> Result<DataFrame> {
        let frame = self.scan(object)?;
        let (frame, predicate) = self.node(frame, object, node)?;
        let fields: Vec<Expr> = self.catalog.objects[object].fields.iter().map(|f| ident(&f.name)).collect();
        Ok(df(frame.filter(predicate).and_then(|d| d.select(fields)))?)
    }

    /// A scan of one object with every field cast to its canonical type.
    pub(crate) fn scan(&mut self, object: usize) -> Result<DataFrame> {
        let o = &self.catalog.objects[object];
        self.scans.push(object);
        let frame = df(self.ctx.read_table(source_table(o)?))?;
        let projection = o
            .fields
            .iter()
            .map(|f| {
                let actual = o.read_schema.field_with_name(&f.name).map(|a| a.data_type().clone());
                let column = ident(&f.name);
                let wanted = arrow_type(f.field_type);
                let expr = match actual {
                    Ok(t) if t == wanted => column,
                    Ok(DataType::Utf8View | DataType::LargeUtf8) if f.field_type == FieldType::String => column,
                    _ => cast(column, wanted),
                };
                expr.alias(&f.name)
            })
            .collect::<Vec<_>>();
        df(frame.select(projection))
    }

    /// Compiles `node` at `object` over `frame`: the frame with any joins the node needs, and
    /// the predicate that is TRUE for the rows in its set.
    fn node(&mut self, frame: DataFrame, object: usize, node: &Node) -> Result<(DataFrame, Expr)> {
        match node {
            Node::Leaf(leaf) => Ok((frame, self.leaf(leaf))),
            Node::And(children) | Node::Or(children) => {
                let mut frame = frame;
                let mut predicate: Option<Expr> = None;
                for child in children {
                    let (next, p) = self.node(frame, object, child)?;
                    frame = next;
                    predicate = Some(match (predicate, matches!(node, Node::And(_))) {
                        (None, _) => p,
                        (Some(acc), true) => acc.and(p),
                        (Some(acc), false) => acc.or(p),
                    });
                }
                let predicate = predicate.ok_or_else(|| Error::Internal("empty and/or reached the compiler".into()))?;
                Ok((frame, predicate))
            }
            Node::Not(child) => {
                let (frame, p) = self.node(frame, object, child)?;
                Ok((frame, is_not_true(p)))
            }
            Node::Related(related) => self.related(frame, related),
        }
    }

    fn literal(&self, literal: &Literal) -> Expr {
        lit(match literal {
            Literal::String(s) => ScalarValue::Utf8(Some(s.clone())),
            Literal::Int(i) => ScalarValue::Int64(Some(*i)),
            Literal::Float(f) => ScalarValue::Float64(Some(*f)),
            Literal::Bool(b) => ScalarValue::Boolean(Some(*b)),
            Literal::Date(d) => ScalarValue::Date32(Some(*d)),
            Literal::Timestamp(t) => timestamp(*t),
        })
    }

    fn leaf(&self, leaf: &Leaf) -> Expr {
        let column = ident(&leaf.field);
        match &leaf.op {
            LeafOp::Cmp(op, value) => compare(column, *op, self.literal(value)),
            LeafOp::In(values) if values.is_empty() => lit(false),
            LeafOp::NotIn(values) if values.is_empty() => column.is_not_null(),
            LeafOp::In(values) => in_list(column, values.iter().map(|v| self.literal(v)).collect(), false),
            LeafOp::NotIn(values) => in_list(column, values.iter().map(|v| self.literal(v)).collect(), true),
            LeafOp::Between(low, high) => column.between(self.literal(low), self.literal(high)),
            LeafOp::Contains(s) => contains(column, lit(s.clone())),
            LeafOp::StartsWith(s) => starts_with(column, lit(s.clone())),
            LeafOp::EndsWith(s) => ends_with(column, lit(s.clone())),
            LeafOp::IsNull => column.is_null(),
            LeafOp::IsNotNull => column.is_not_null(),
            LeafOp::WithinLast(seconds) => {
                let lower = self.as_of_micros.saturating_sub(seconds.saturating_mul(1_000_000));
                match leaf.field_type {
                    // A date counts from its start of day, UTC.
                    FieldType::Date => column
                        .clone()
                        .gt_eq(lit(ScalarValue::Date32(Some(ceil_days(lower)))))
                        .and(column.lt_eq(lit(ScalarValue::Date32(Some(floor_days(self.as_of_micros)))))),
                    _ => column.clone().gt_eq(lit(timestamp(lower))).and(column.lt_eq(lit(timestamp(self.as_of_micros)))),
                }
            }
            LeafOp::OlderThan(seconds) => {
                let bound = self.as_of_micros.saturating_sub(seconds.saturating_mul(1_000_000));
                match leaf.field_type {
                    FieldType::Date => column.lt(lit(ScalarValue::Date32(Some(ceil_days(bound))))),
                    _ => column.lt(lit(timestamp(bound))),
                }
            }
        }
    }

    /// Compiles a `related` node: joins its per-start-value result onto `frame`.
    fn related(&mut self, frame: DataFrame, related: &Related) -> Result<(DataFrame, Expr)> {
        let n = self.next_related;
        self.next_related += 1;
        let key = format!("{RESERVED_PREFIX}_r{n}_key");
        let value = format!("{RESERVED_PREFIX}_r{n}_value");
        let first = related.path.first().ok_or_else(|| Error::Internal(format!("{}: empty path", related.place)))?;
        let start_field = first.from_field.clone();

        // The related object's rows in the `where` set.
        let mut target = self.scan(related.object)?;
        if let Some(where_) = &related.where_ {
            let (joined, predicate) = self.node(target, related.object, where_)?;
            target = df(joined.filter(predicate))?;
        }
        let last = related.path.last().ok_or_else(|| Error::Internal(format!("{}: empty path", related.place)))?;

        let Some(having) = &related.having else {
            // Existence: walk back from the target's join values with semi-joins.
            let mut keys = df(target.select(vec![ident(&last.to_field).alias(KEY)]))?;
            for i in (1..related.path.len()).rev() {
                // Rows of the object hop `i` leaves from, joined to the values collected so far;
                // carry back the field by which hop `i - 1` arrived at that object.
                let hop = &related.path[i];
                let arrived_by = related.path[i - 1].to_field.as_str();
                let step = self.scan(hop.from_object)?;
                keys = df(step.join(keys, JoinType::LeftSemi, &[hop.from_field.as_str()], &[KEY], None)
                    .and_then(|d| d.select(vec![ident(arrived_by).alias(KEY)])))?;
            }
            let keys = df(keys.filter(ident(KEY).is_not_null())
                .and_then(DataFrame::distinct)
                .and_then(|d| d.select(vec![ident(KEY).alias(&key)])))?;
            let frame = df(frame.join(keys, JoinType::Left, &[start_field.as_str()], &[key.as_str()], None))?;
            return Ok((frame, ident(&key).is_not_null()));
        };

        // Aggregates: each target row must count once per start value, so walk distinct
        // (start value, current join value) pairs hop by hop, then join the target rows.
        // `count`, `sum` and `avg` must see each related row once per start value; the others
        // give the same answer over repeats, so their walk can skip the de-duplication.
        let each_row_once = matches!(having.agg, Agg::Count | Agg::Sum | Agg::Avg);
        let distinct = |d: DataFrame| if each_row_once { d.distinct() } else { Ok(d) };
        let grouped_input = if related.path.len() == 1 {
            df(target.select(vec![ident(&last.to_field).alias(START), wildcard_fields(self.catalog, related.object, having)?]))?
        } else {
            let first_object = first.to_object;
            let second = &related.path[1];
            let mut pairs = df(self
                .scan(first_object)?
                .select(vec![ident(&first.to_field).alias(START), ident(&second.from_field).alias(WALK)])
            .and_then(|d| d.filter(ident(START).is_not_null().and(ident(WALK).is_not_null())))
            .and_then(distinct))?;
            for (i, hop) in related.path.iter().enumerate().skip(1).take(related.path.len() - 2) {
                let next = &related.path[i + 1];
                let step = self.scan(hop.to_object)?;
                pairs = df(pairs.join(step, JoinType::Inner, &[WALK], &[hop.to_field.as_str()], None)
                    .and_then(|d| d.select(vec![ident(START), ident(&next.from_field).alias(WALK)]))
                    .and_then(|d| d.filter(ident(WALK).is_not_null()))
                    .and_then(distinct))?;
            }
            let aggregated_field = wildcard_fields(self.catalog, related.object, having)?;
            df(pairs
                .join(target, JoinType::Inner, &[WALK], &[last.to_field.as_str()], None)
                .and_then(|d| d.select(vec![ident(START), aggregated_field])))?
        };
        // `count_distinct` as distinct (start, value) pairs counted per start: a plain grouped
        // count, far cheaper in memory than per-group distinct sets.
        let (grouped_input, aggregate) = if having.agg == Agg::CountDistinct {
            let pairs = df(grouped_input
                .filter(ident(AGG_INPUT).is_not_null())
                .and_then(DataFrame::distinct))?;
            (pairs, count_all().alias(VALUE_COLUMN))
        } else {
            (grouped_input, aggregate_expr(having).alias(VALUE_COLUMN))
        };
        let grouped = df(grouped_input.aggregate(vec![ident(START)], vec![aggregate])
            .and_then(|d| d.select(vec![ident(START).alias(&key), ident(VALUE_COLUMN).alias(&value)])))?;
        let frame = df(frame.join(grouped, JoinType::Left, &[start_field.as_str()], &[key.as_str()], None))?;
        let aggregated = match having.agg {
            Agg::Count | Agg::CountDistinct => coalesce(vec![ident(&value), lit(0i64)]),
            _ => ident(&value),
        };
        Ok((frame, having_predicate(aggregated, having)))
    }
}

const VALUE_COLUMN: &str = "__cohort_value";

/// The column the aggregate reads, named so it survives the pair joins (`count` reads none).
fn wildcard_fields(catalog: &Catalog, object: usize, having: &Having) -> Result<Expr> {
    match &having.field {
        Some((name, _)) => {
            let o = &catalog.objects[object];
            o.field(name).ok_or_else(|| Error::Internal(format!("having field {name:?} vanished")))?;
            Ok(ident(name).alias(AGG_INPUT))
        }
        None => Ok(lit(1i64).alias(AGG_INPUT)),
    }
}

const AGG_INPUT: &str = "__cohort_agg_input";

fn aggregate_expr(having: &Having) -> Expr {
    let input = ident(AGG_INPUT);
    match having.agg {
        Agg::Count => count_all(),
        Agg::CountDistinct => count_distinct(input),
        Agg::Sum => sum(input),
        Agg::Avg => avg(input),
        Agg::Min => min(input),
        Agg::Max => max(input),
    }
}

fn having_predicate(aggregated: Expr, having: &Having) -> Expr {
    let integral_result = match having.agg {
        Agg::Count | Agg::CountDistinct => true,
        Agg::Avg => false,
        Agg::Sum | Agg::Min | Agg::Max => matches!(having.field, Some((_, FieldType::Int))),
    };
    match (integral_result, having.value) {
        (true, Number::Int(i)) => compare(cast(aggregated, DataType::Int64), having.op, lit(i)),
        (_, Number::Int(i)) => compare(cast(aggregated, DataType::Float64), having.op, lit(i as f64)),
        (_, Number::Float(f)) => compare(cast(aggregated, DataType::Float64), having.op, lit(f)),
    }
}

fn compare(left: Expr, op: CmpOp, right: Expr) -> Expr {
    match op {
        CmpOp::Eq => left.eq(right),
        CmpOp::Ne => left.not_eq(right),
        CmpOp::Lt => left.lt(right),
        CmpOp::Le => left.lt_eq(right),
        CmpOp::Gt => left.gt(right),
        CmpOp::Ge => left.gt_eq(right),
    }
}

fn timestamp(micros: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into()))
}

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// The first date whose start of day is at or after `micros`.
fn ceil_days(micros: i64) -> i32 {
    let days = micros.div_euclid(MICROS_PER_DAY) + i64::from(micros.rem_euclid(MICROS_PER_DAY) != 0);
    days.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// The last date whose start of day is at or before `micros`.
fn floor_days(micros: i64) -> i32 {
    micros.div_euclid(MICROS_PER_DAY).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Plan-building errors are bugs in the compiler (the segment was checked already).
fn df<T>(result: datafusion::error::Result<T>) -> Result<T> {
    result.map_err(|e| Error::Internal(format!("building the plan: {e}")))
}
