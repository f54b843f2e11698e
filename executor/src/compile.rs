//! The segment compiler: a checked [`Segment`] into DataFusion plans, built through the
//! DataFrame API (values become typed literals, never SQL text).
//!
//! Every node written at object X becomes a boolean expression over X's rows that is TRUE
//! exactly for the rows in the node's set (`not` is `IS NOT TRUE`, so NULL never leaks into a
//! set). Each scan reads an object's files through a `ListingTable` with the schema the catalog
//! found, every field cast to its canonical type; Parquet strings are decoded straight into
//! `Utf8View`, so short keys are inlined and joins and aggregates on them compare without
//! chasing offsets.
//!
//! **Per-row answers.** A `related` node is evaluated once per distinct value of X's first join
//! field, and the result is left-joined back onto X. Existence ("something is connected") is a
//! chain of semi-joins walked back from the target's join values. An aggregate walks distinct
//! `(start value, join value)` pairs hop by hop and then joins the target rows that satisfy
//! `where`: `count`, `sum` and `avg` must see each related row once per start value however
//! many chains reach it, while `min`, `max` and `count_distinct` give the same answer over
//! repeats and skip the de-duplication. `count_distinct` is distinct `(start, value)` pairs
//! counted per start: a plain grouped count, far cheaper in memory than per-group distinct sets.
//!
//! **Filtering positions.** Where a node only filters (the whole filter, a `where`, a conjunct
//! of either), a `related` node or its negation needs no per-row answer: X is semi- or
//! anti-joined to the start values in (or outside) its set, with `having` applied to the
//! aggregate before the join. A `count` that only asks whether anything is connected, and a
//! `min` below or a `max` above a threshold, become existence tests with no aggregate; an `or`
//! whose branches are all `related` nodes accepting by start value on one start field joins
//! once against the union of their keys. Distinct key sets (an aggregate's groups) go on the
//! build side of the join; other key sets are left to the engine's statistics. An `or` or `not`
//! mix that needs a node's truth value per row is compiled to its predicate instead.
//!
//! **The conjuncts of an `and`** apply leaves first, then "something is connected" joins (they
//! usually keep few rows; their negations usually keep most, and go last), then aggregate
//! conditions, then the rest. Conjuncts that are `related` nodes (or their negations) over the
//! same one-hop path with row-local `where`s, one an aggregate condition and one failing on
//! nothing connected, become one semi-join (`merged_join`): one scan of the related object
//! filtered by the OR of their `where`s, one aggregate per start value holding each conjunct's
//! own aggregate over `CASE WHEN its where THEN value END`, and the AND of their conditions.
//!
//! **Parts run first** (single-plan mode: `Compiler::next_to_run_first` finds one part per
//! compilation, `run.rs` executes it, until none is left). The key set of an aggregate
//! condition in the segment's own filter whose plan reads at least
//! `RunOptions::key_sets_first_min_rows` rows (default 1M) is executed first and joined as an
//! in-memory table at its real size, its bytes held in the run's pool: it is small next to the
//! rows it filters, but the engine cannot know that before running it and would build its hash
//! table on the wrong side. At the filter, when "something is connected" joins narrowed the
//! root rows before an aggregate condition, those rows run first too, and if they are at most
//! `RunOptions::cut_share` (default ¼) of the root's rows, the aggregate's input is semi-joined
//! to their start values before grouping: a start value outside them could not survive the
//! later join anyway.
//!
//! **Phased mode** materializes, per top-level branch, the distinct signatures (the key plus
//! every root field the filter reads) of the matching rows and intersects or unites them:
//! exact even when keys repeat.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::catalog::TableProvider;
use datafusion::common::{JoinType, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::functions::expr_fn::coalesce;
use datafusion::functions::string::expr_fn::{contains, ends_with, starts_with};
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{avg, count, count_distinct, max, min, sum};
use datafusion::logical_expr::{Expr, cast, ident, in_list, is_not_true, lit, when};
use datafusion::prelude::SessionContext;

use crate::catalog::{Catalog, LoadedObject, arrow_type};
use crate::error::{Error, Result};
use crate::model::{FieldType, RESERVED_PREFIX, SourceFormat};
use crate::segment::{Agg, CmpOp, Having, Leaf, LeafOp, Literal, Node, Number, Related, Segment};

/// The table that reads an object's source files with the schema the catalog found.
pub(crate) fn source_table(o: &LoadedObject) -> Result<Arc<dyn TableProvider>> {
    if o.format == SourceFormat::Iceberg && o.data_files.is_empty() {
        // A table with no snapshot, or none of whose files are alive: no rows.
        let empty = datafusion::datasource::MemTable::try_new(Arc::clone(&o.read_schema), vec![Vec::new()])
            .map_err(|e| Error::Internal(format!("empty table for {:?}: {e}", o.name)))?;
        return Ok(Arc::new(empty));
    }
    let format: Arc<dyn FileFormat> = match o.format {
        SourceFormat::Parquet | SourceFormat::Iceberg => Arc::new(ParquetFormat::default()),
        SourceFormat::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
    };
    let options = ListingOptions::new(format).with_file_extension(o.file_extension.clone());
    let schema = match o.format {
        // Parquet strings are decoded straight into views: short keys (up to 12 bytes) are
        // inlined, so joins and aggregates on them hash and compare without chasing offsets.
        SourceFormat::Parquet | SourceFormat::Iceberg => Arc::new(Schema::new(
            o.read_schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 => Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View)),
                    _ => Arc::clone(f),
                })
                .collect::<Vec<_>>(),
        )),
        SourceFormat::Csv => Arc::clone(&o.read_schema),
    };
    let config = match o.data_files.as_slice() {
        [] => ListingTableConfig::new(o.url.clone()),
        files => ListingTableConfig::new_with_multi_paths(files.to_vec()),
    };
    let config = config.with_listing_options(options).with_schema(schema);
    let table = ListingTable::try_new(config).map_err(|e| Error::Internal(format!("listing table for {:?}: {e}", o.name)))?;
    Ok(Arc::new(table))
}

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
    /// How many `where`s deep the node being compiled is (0: the segment's filter).
    depth: usize,
    /// While finding what is worth running first: what was found, in the order the plan
    /// needs it, and the rows its plan must read to be worth it.
    found: Option<Vec<RunFirst>>,
    found_min_rows: u64,
    /// What already ran, by kind and place: its rows in memory.
    run_first: std::collections::HashMap<(RunFirstKind, String), DataFrame>,
    /// Aggregate conditions whose input is cut to the start values of the root rows still in
    /// the set (by the place of their `related` node): those values, as one column.
    reducers: std::collections::HashMap<String, DataFrame>,
}

/// Part of the single plan worth running on its own before the rest, so that the rest is
/// planned with its real size.
pub(crate) struct RunFirst {
    /// The place of the `related` node it belongs to; [`Compiler::use_run_first`] takes it back.
    pub place: String,
    pub kind: RunFirstKind,
    pub plan: DataFrame,
    /// For the rows before an aggregate condition: that condition's place and the field it
    /// starts from, to cut its input with ([`Compiler::use_run_first`]).
    pub cut: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RunFirstKind {
    /// The start values an aggregate condition of the segment's own filter accepts (or
    /// refuses).
    KeySet,
    /// The root rows still in the set just before an aggregate condition of the segment's
    /// own filter (the fields the rest of the filter reads). Once their number is known,
    /// the aggregate can be cut to their start values.
    RowsBefore,
}

impl RunFirstKind {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            RunFirstKind::KeySet => "key set",
            RunFirstKind::RowsBefore => "rows before",
        }
    }
}

impl<'a> Compiler<'a> {
    pub(crate) fn new(catalog: &'a Catalog, ctx: &'a SessionContext, as_of_micros: i64) -> Self {
        Compiler {
            catalog,
            ctx,
            as_of_micros,
            next_related: 0,
            scans: Vec::new(),
            depth: 0,
            found: None,
            found_min_rows: 0,
            run_first: Default::default(),
            reducers: Default::default(),
        }
    }

    /// Compiles `segment` to find the next part worth running before the rest, given what
    /// already ran ([`Compiler::use_run_first`]); `None` when nothing more is.
    ///
    /// Two kinds. The key set of an aggregate condition of the segment's own filter: small
    /// next to the rows it filters, but the engine cannot know that before running it, and
    /// would build its hash tables on the wrong side. And the root rows still in the set
    /// just before such a condition, when others narrowed them: once they are known, the
    /// aggregate needs only their start values' related rows.
    /// Only parts whose plan reads at least `min_rows` rows are worth it.
    pub(crate) fn next_to_run_first(&mut self, segment: &Segment, min_rows: u64) -> Result<Option<RunFirst>> {
        self.found = Some(Vec::new());
        self.found_min_rows = min_rows;
        let compiled = self.members(segment);
        let found = self.found.take().unwrap_or_default();
        self.scans.clear();
        compiled.map(|_| found.into_iter().next())
    }

    /// Uses `rows` (what `place` produced when run first) from now on. For the rows before
    /// an aggregate condition, `cut` also cuts the aggregate to their start values.
    pub(crate) fn use_run_first(&mut self, place: String, kind: RunFirstKind, rows: DataFrame, cut: Option<(String, String)>) -> Result<()> {
        if let (RunFirstKind::RowsBefore, Some((related_place, start_field))) = (kind, cut) {
            let keys = df(rows
                .clone()
                .select(vec![ident(&start_field).alias(REDUCE_KEY)])
                .and_then(|d| d.filter(ident(REDUCE_KEY).is_not_null()))
                .and_then(DataFrame::distinct))?;
            self.reducers.insert(related_place, keys);
        }
        self.run_first.insert((kind, place), rows);
        Ok(())
    }

    /// The single plan: the distinct non-NULL primary keys of the root rows in the filter's set.
    pub(crate) fn members(&mut self, segment: &Segment) -> Result<DataFrame> {
        let frame = self.scan(segment.root)?;
        let rows = self.restrict(frame, segment.root, &segment.filter)?;
        let pk = &self.catalog.objects[segment.root].primary_key;
        df(rows.select(vec![ident(pk).alias(MEMBER)]).and_then(|d| d.filter(ident(MEMBER).is_not_null())).and_then(|d| d.distinct()))
    }

    /// One phase: the distinct signatures (primary key plus every root field the filter reads)
    /// of the root rows in `branch`'s set. Rows with equal signatures fall in the same sets, so
    /// intersecting and uniting signature sets is exact even with duplicate keys.
    pub(crate) fn phase(&mut self, root: usize, branch: &Node, signature: &[String]) -> Result<DataFrame> {
        let rows = self.matching_rows(root, branch)?;
        df(rows.select(signature.iter().map(ident).collect::<Vec<Expr>>()).and_then(DataFrame::distinct))
    }

    /// The columns of the root that decide membership: the key and the fields read at the root.
    pub(crate) fn signature(&self, segment: &Segment) -> Vec<String> {
        let mut fields = BTreeSet::new();
        fields.insert(self.catalog.objects[segment.root].primary_key.clone());
        fields_read(&segment.filter, &mut fields);
        fields.into_iter().collect()
    }

    /// The rows of `object` in `node`'s set, all of the object's fields kept.
    fn matching_rows(&mut self, object: usize, node: &Node) -> Result<DataFrame> {
        let frame = self.scan(object)?;
        let frame = self.restrict(frame, object, node)?;
        let fields: Vec<Expr> = self.catalog.objects[object].fields.iter().map(|f| ident(&f.name)).collect();
        df(frame.select(fields))
    }

    /// `frame` (rows of `object`) restricted to the rows in `node`'s set.
    ///
    /// Where a node only filters — the whole filter, a `where`, a conjunct of either — a
    /// `related` node (or its negation) needs no per-row answer: it becomes a semi- or
    /// anti-join against the start values it accepts or refuses, and the leaves of an `and`
    /// are applied first so the joins probe fewer rows. Any other node is compiled to its
    /// predicate by [`Compiler::node`].
    fn restrict(&mut self, frame: DataFrame, object: usize, node: &Node) -> Result<DataFrame> {
        match node {
            Node::And(children) => {
                let (leaves, others): (Vec<&Node>, Vec<&Node>) = children.iter().partition(|c| matches!(c, Node::Leaf(_)));
                let mut frame = frame;
                let predicate = leaves.iter().filter_map(|c| if let Node::Leaf(l) = c { Some(self.leaf(l)) } else { None }).reduce(Expr::and);
                if let Some(predicate) = predicate {
                    frame = df(frame.filter(predicate))?;
                }
                // Conditions that something is connected first: they usually keep few rows
                // (their negations usually keep most, and go last). Aggregate conditions in
                // between: at the segment's filter, once rows that something is connected to
                // are known, an aggregate needs only their start values' related rows.
                let (connected, others): (Vec<&Node>, Vec<&Node>) =
                    others.into_iter().partition(|c| matches!(c, Node::Related(_) | Node::Or(_)) && aggregate_condition(c).is_none());
                let (aggregates, others): (Vec<&Node>, Vec<&Node>) = others.into_iter().partition(|c| aggregate_condition(c).is_some());
                // Conditions on the same related object, one of them an aggregate, are
                // answered by one aggregate over one scan: each group stands in the order at
                // its first aggregate.
                let groups = same_object_groups(&aggregates.iter().chain(&others).chain(&connected).copied().collect::<Vec<_>>());
                let grouped_later = |c: &&Node| groups.iter().any(|g| g[1..].iter().any(|m| std::ptr::eq(*m, *c)));
                let order: Vec<&Node> = connected.iter().chain(&aggregates).chain(&others).filter(|c| !grouped_later(c)).copied().collect();
                let narrowed = connected.iter().any(|c| !grouped_later(c));
                for (i, child) in order.iter().enumerate() {
                    if let (Some(related), true, 0) = (aggregate_condition(child), narrowed, self.depth) {
                        frame = self.rows_before(frame, object, related, &order[i..])?;
                    }
                    frame = match groups.iter().find(|g| std::ptr::eq(g[0], *child)) {
                        Some(group) => self.merged_join(frame, group)?,
                        None => self.restrict(frame, object, child)?,
                    };
                }
                Ok(frame)
            }
            Node::Related(related) => self.related_join(frame, related, false),
            Node::Not(child) => match child.as_ref() {
                Node::Related(related) => self.related_join(frame, related, true),
                _ => self.restrict_by_predicate(frame, node),
            },
            Node::Or(children) => match self.union_join(&frame, children)? {
                Some(joined) => Ok(joined),
                None => self.restrict_by_predicate(frame, node),
            },
            Node::Leaf(_) => self.restrict_by_predicate(frame, node),
        }
    }

    /// The rows before the aggregate condition `related` of the segment's filter (`rest`:
    /// the conjuncts from it on): the rows that ran first, if they did; else `frame`, noted as
    /// worth running first when the aggregate reads enough rows.
    fn rows_before(&mut self, frame: DataFrame, object: usize, related: &Related, rest: &[&Node]) -> Result<DataFrame> {
        if let Some(rows) = self.run_first.get(&(RunFirstKind::RowsBefore, related.place.clone())) {
            return Ok(rows.clone());
        }
        let rows_read: u64 = related.path.iter().map(|hop| self.catalog.objects[hop.to_object].rows_or_estimate()).sum();
        if let Some(found) = &mut self.found
            && rows_read >= self.found_min_rows
        {
            let mut fields = BTreeSet::new();
            fields.insert(self.catalog.objects[object].primary_key.clone());
            rest.iter().for_each(|n| fields_read(n, &mut fields));
            let plan = df(frame.clone().select(fields.iter().map(ident).collect::<Vec<Expr>>()))?;
            found.push(RunFirst {
                place: related.place.clone(),
                kind: RunFirstKind::RowsBefore,
                plan,
                cut: Some((related.place.clone(), start_field(related)?)),
            });
        }
        Ok(frame)
    }

    fn restrict_by_predicate(&mut self, frame: DataFrame, node: &Node) -> Result<DataFrame> {
        let (frame, predicate) = self.node(frame, node)?;
        df(frame.filter(predicate))
    }

    /// A `related` node in a filtering position: `frame` semi-joined to the start values in
    /// its set (anti-joined to those outside it when `negated`).
    fn related_join(&mut self, frame: DataFrame, related: &Related, negated: bool) -> Result<DataFrame> {
        let start_field = start_field(related)?;
        let scanned_before = self.scans.len();
        let test = match self.run_first.get(&(RunFirstKind::KeySet, related.place.clone())) {
            Some(keys) => {
                let key = keys.schema().field(0).name().clone();
                KeyTest::Keys { keys: keys.clone(), key, outside: !accepts_by_start_value(related), distinct: true }
            }
            None => self.key_test(related)?,
        };
        if let KeyTest::Keys { keys, key, distinct: true, .. } = &test {
            let name = format!("{RESERVED_PREFIX}_k{}_key", self.run_first.len());
            self.note_key_set(&related.place, scanned_before, || df(keys.clone().select(vec![ident(key).alias(&name)])))?;
        }
        match test {
            KeyTest::All(all) if all != negated => Ok(frame),
            KeyTest::All(_) => df(frame.filter(lit(false))),
            KeyTest::Keys { keys, key, outside, distinct } => semi_join(frame, &start_field, keys, &key, outside != negated, distinct),
        }
    }

    /// Conjuncts on the same related object over the same one-hop path (`group`, from
    /// [`same_object_groups`], its first an aggregate condition): `frame` semi-joined to the
    /// start values that satisfy all of them, from one scan of the object and one aggregate
    /// per start value holding each conjunct's own aggregate over the rows of its own `where`.
    /// A start value with no row in any `where` satisfies none of them: the group holds a
    /// condition that fails on nothing connected.
    fn merged_join(&mut self, frame: DataFrame, group: &[&Node]) -> Result<DataFrame> {
        let members: Vec<(&Related, bool)> = group.iter().filter_map(|n| related_conjunct(n)).collect();
        let (first, _) = *members.first().ok_or_else(|| Error::Internal("an empty group of conditions".into()))?;
        let hop = first.path.first().ok_or_else(|| Error::Internal(format!("{}: empty path", first.place)))?;
        let place = format!("{} (with {} more)", first.place, members.len() - 1);
        let scanned_before = self.scans.len();
        let keys = match self.run_first.get(&(RunFirstKind::KeySet, place.clone())) {
            Some(keys) => keys.clone(),
            None => {
                let target = self.scan(first.object)?;
                self.depth += 1;
                let mut flags = Vec::with_capacity(members.len());
                for (related, _) in &members {
                    flags.push(match &related.where_ {
                        Some(where_) => self.node(target.clone(), where_)?.1,
                        None => lit(true),
                    });
                }
                self.depth -= 1;
                let any = flags.iter().cloned().reduce(Expr::or).unwrap_or(lit(true));
                let mut columns = vec![ident(&hop.to_field).alias(START)];
                let mut aggregates = Vec::with_capacity(members.len());
                let mut holds = Vec::with_capacity(members.len());
                for (i, ((related, negated), flag)) in members.iter().zip(flags).enumerate() {
                    let (input, value) = (format!("{RESERVED_PREFIX}_m{i}_input"), format!("{RESERVED_PREFIX}_m{i}_value"));
                    let read = match related.having.as_ref().and_then(|h| h.field.as_ref()) {
                        Some((field, _)) => ident(field),
                        None => lit(1i64),
                    };
                    columns.push(df(when(flag.is_true(), read).end())?.alias(&input));
                    let column = ident(&input);
                    aggregates.push(
                        match related.having.as_ref().map(|h| h.agg) {
                            None | Some(Agg::Count) => count(column),
                            Some(Agg::CountDistinct) => count_distinct(column),
                            Some(Agg::Sum) => sum(column),
                            Some(Agg::Avg) => avg(column),
                            Some(Agg::Min) => min(column),
                            Some(Agg::Max) => max(column),
                        }
                        .alias(&value),
                    );
                    let condition = match &related.having {
                        None => ident(&value).gt(lit(0i64)),
                        Some(having) => having_predicate(ident(&value), having),
                    };
                    holds.push(if *negated { is_not_true(condition) } else { condition });
                }
                let input = df(target.filter(any.and(ident(&hop.to_field).is_not_null())).and_then(|d| d.select(columns)))?;
                let input = self.cut_to_rows_before(input, &first.place)?;
                let holds = holds.into_iter().reduce(Expr::and).unwrap_or(lit(true));
                let name = format!("{RESERVED_PREFIX}_k{}_key", self.run_first.len());
                df(input.aggregate(vec![ident(START)], aggregates).and_then(|d| d.filter(holds)).and_then(|d| d.select(vec![ident(START).alias(&name)])))?
            }
        };
        let key = keys.schema().field(0).name().clone();
        self.note_key_set(&place, scanned_before, || Ok(keys.clone()))?;
        semi_join(frame, &hop.from_field, keys, &key, false, true)
    }

    /// While finding what to run first: notes the key set of the segment's own filter at
    /// `place` (built by `plan`), unless it already ran or its plan — the scans since
    /// `scanned_before` — reads fewer rows than it takes to be worth it.
    fn note_key_set(&mut self, place: &str, scanned_before: usize, plan: impl FnOnce() -> Result<DataFrame>) -> Result<()> {
        let rows_read: u64 = self.scans[scanned_before..].iter().map(|&o| self.catalog.objects[o].rows_or_estimate()).sum();
        let key = (RunFirstKind::KeySet, place.to_string());
        if self.found.is_some() && self.depth == 0 && rows_read >= self.found_min_rows && !self.run_first.contains_key(&key) {
            let plan = plan()?;
            if let Some(found) = &mut self.found {
                found.push(RunFirst { place: key.1, kind: RunFirstKind::KeySet, plan, cut: None });
            }
        }
        Ok(())
    }

    /// `input` (one row per related row, start values in `START`) cut to the start values of
    /// the rows before the aggregate condition at `place`, when they ran first and are few.
    fn cut_to_rows_before(&self, input: DataFrame, place: &str) -> Result<DataFrame> {
        match self.reducers.get(place) {
            Some(keys) => df(input.join(keys.clone(), JoinType::LeftSemi, &[START], &[REDUCE_KEY], None)),
            None => Ok(input),
        }
    }

    /// An `or` in a filtering position whose branches are all `related` nodes that accept
    /// rows by their start value on the same field (no `not`, no condition that holds with
    /// nothing connected): one semi-join against the union of the values they accept,
    /// instead of a per-row answer from each. `None` when the branches do not fit.
    fn union_join(&mut self, frame: &DataFrame, children: &[Node]) -> Result<Option<DataFrame>> {
        let mut field: Option<&str> = None;
        for child in children {
            let Node::Related(related) = child else { return Ok(None) };
            let Some(first) = related.path.first() else { return Ok(None) };
            if !accepts_by_start_value(related) || field.is_some_and(|f| f != first.from_field) {
                return Ok(None);
            }
            field = Some(&first.from_field);
        }
        let Some(field) = field else { return Ok(None) };
        let mut union: Option<DataFrame> = None;
        let mut all_distinct = true;
        for child in children {
            let Node::Related(related) = child else { return Ok(None) };
            let KeyTest::Keys { keys, key, outside: false, distinct } = self.key_test(related)? else {
                return Err(Error::Internal(format!("{}: expected the values it accepts", related.place)));
            };
            all_distinct &= distinct;
            let keys = df(keys.select(vec![ident(&key).alias(UNION_KEY)]))?;
            union = Some(match union {
                None => keys,
                Some(acc) => df(acc.union(keys))?,
            });
        }
        let Some(union) = union else { return Ok(None) };
        Ok(Some(semi_join(frame.clone(), field, union, UNION_KEY, false, all_distinct)?))
    }

    /// The start values that decide a `related` node's set.
    ///
    /// With `having`, the per-start aggregate is filtered before the join. A start value with
    /// no connected rows never reaches the aggregate; whether it belongs to the set is
    /// decided by the having condition on an empty set (`count lt 3` holds for it, `sum gt 0`
    /// does not), and then the keys are the values that fail the condition instead. A
    /// `count` that only asks whether anything is connected is an existence test.
    fn key_test(&mut self, related: &Related) -> Result<KeyTest> {
        Ok(match related.having.as_ref().map(|h| (h, CountTest::of(h))) {
            None | Some((_, Some(CountTest::AnyConnected))) => {
                let (keys, key) = self.existence_keys(related, None)?;
                KeyTest::Keys { keys, key, outside: false, distinct: false }
            }
            Some((_, Some(CountTest::NoneConnected))) => {
                let (keys, key) = self.existence_keys(related, None)?;
                KeyTest::Keys { keys, key, outside: true, distinct: false }
            }
            Some((_, Some(CountTest::Always))) => KeyTest::All(true),
            Some((_, Some(CountTest::Never))) => KeyTest::All(false),
            Some((having, None)) => match (having.agg, having.op, &having.field) {
                // The smallest value is below v exactly when some value is (NULLs compare to
                // nothing); likewise the largest above v: an existence test, no aggregate.
                (Agg::Min, CmpOp::Lt | CmpOp::Le, Some((field, _))) | (Agg::Max, CmpOp::Gt | CmpOp::Ge, Some((field, _))) => {
                    let (keys, key) = self.existence_keys(related, Some(having_predicate(ident(field), having)))?;
                    KeyTest::Keys { keys, key, outside: false, distinct: false }
                }
                _ => {
                    let (grouped, key, value) = self.aggregated(related, having)?;
                    // Only start values with connected rows are here: no NULL count to coalesce.
                    let holds = having_predicate(ident(&value), having);
                    let empty_holds = holds_for_empty_set(having);
                    let accepted = if empty_holds { is_not_true(holds) } else { holds };
                    let keys = df(grouped.filter(accepted).and_then(|d| d.select(vec![ident(&key)])))?;
                    KeyTest::Keys { keys, key, outside: empty_holds, distinct: true }
                }
            },
        })
    }

    /// A scan of one object with every field cast to its canonical type.
    pub(crate) fn scan(&mut self, object: usize) -> Result<DataFrame> {
        let o = &self.catalog.objects[object];
        self.scans.push(object);
        let table = source_table(o)?;
        let schema = table.schema();
        let frame = df(self.ctx.read_table(table))?;
        let projection = o
            .fields
            .iter()
            .map(|f| {
                let actual = schema.field_with_name(&f.name).map(|a| a.data_type().clone());
                let column = ident(&f.name);
                // Strings travel as views in every plan, whatever the source's encoding.
                let wanted = match f.field_type {
                    FieldType::String => DataType::Utf8View,
                    other => arrow_type(other),
                };
                let expr = match actual {
                    Ok(t) if t == wanted => column,
                    _ => cast(column, wanted),
                };
                expr.alias(&f.name)
            })
            .collect::<Vec<_>>();
        df(frame.select(projection))
    }

    /// Compiles `node` at `object` over `frame`: the frame with any joins the node needs, and
    /// the predicate that is TRUE for the rows in its set.
    fn node(&mut self, frame: DataFrame, node: &Node) -> Result<(DataFrame, Expr)> {
        match node {
            Node::Leaf(leaf) => Ok((frame, self.leaf(leaf))),
            Node::And(children) | Node::Or(children) => {
                let mut frame = frame;
                let mut predicate: Option<Expr> = None;
                for child in children {
                    let (next, p) = self.node(frame, child)?;
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
                let (frame, p) = self.node(frame, child)?;
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

    /// Compiles a `related` node where its answer is needed per row: joins its per-start-value
    /// result onto `frame`.
    fn related(&mut self, frame: DataFrame, related: &Related) -> Result<(DataFrame, Expr)> {
        let start_field = start_field(related)?;
        let existence = |compiler: &mut Self, frame: DataFrame| -> Result<(DataFrame, String)> {
            let (keys, key) = compiler.existence_keys(related, None)?;
            let keys = df(keys.distinct())?;
            Ok((df(frame.join(keys, JoinType::Left, &[start_field.as_str()], &[key.as_str()], None))?, key))
        };
        let having = match related.having.as_ref().map(|h| (h, CountTest::of(h))) {
            None | Some((_, Some(CountTest::AnyConnected))) => {
                let (frame, key) = existence(self, frame)?;
                return Ok((frame, ident(&key).is_not_null()));
            }
            Some((_, Some(CountTest::NoneConnected))) => {
                let (frame, key) = existence(self, frame)?;
                return Ok((frame, ident(&key).is_null()));
            }
            Some((_, Some(CountTest::Always))) => return Ok((frame, lit(true))),
            Some((_, Some(CountTest::Never))) => return Ok((frame, lit(false))),
            Some((having, None)) => having,
        };
        let (grouped, key, value) = self.aggregated(related, having)?;
        let frame = df(frame.join(grouped, JoinType::Left, &[start_field.as_str()], &[key.as_str()], None))?;
        let aggregated = match having.agg {
            Agg::Count | Agg::CountDistinct => coalesce(vec![ident(&value), lit(0i64)]),
            _ => ident(&value),
        };
        Ok((frame, having_predicate(aggregated, having)))
    }

    /// Fresh names for the key and value columns of one `related` node's result.
    fn related_names(&mut self) -> (String, String) {
        let n = self.next_related;
        self.next_related += 1;
        (format!("{RESERVED_PREFIX}_r{n}_key"), format!("{RESERVED_PREFIX}_r{n}_value"))
    }

    /// The related object's rows in the `where` set.
    fn targets(&mut self, related: &Related) -> Result<DataFrame> {
        let target = self.scan(related.object)?;
        match &related.where_ {
            Some(where_) => {
                self.depth += 1;
                let restricted = self.restrict(target, related.object, where_);
                self.depth -= 1;
                restricted
            }
            None => Ok(target),
        }
    }

    /// The start values with at least one connected row in the `where` set (repeats and
    /// all), as one column; and that column's name.
    fn existence_keys(&mut self, related: &Related, also: Option<Expr>) -> Result<(DataFrame, String)> {
        let (key, _) = self.related_names();
        let mut target = self.targets(related)?;
        if let Some(predicate) = also {
            target = df(target.filter(predicate))?;
        }
        let last = related.path.last().ok_or_else(|| Error::Internal(format!("{}: empty path", related.place)))?;
        // Walk back from the target's join values with semi-joins.
        let mut keys = df(target.select(vec![ident(&last.to_field).alias(KEY)]))?;
        for i in (1..related.path.len()).rev() {
            // Rows of the object hop `i` leaves from, joined to the values collected so far;
            // carry back the field by which hop `i - 1` arrived at that object.
            let hop = &related.path[i];
            let arrived_by = related.path[i - 1].to_field.as_str();
            let step = self.scan(hop.from_object)?;
            keys =
                df(step.join(keys, JoinType::LeftSemi, &[hop.from_field.as_str()], &[KEY], None).and_then(|d| d.select(vec![ident(arrived_by).alias(KEY)])))?;
        }
        let keys = df(keys.filter(ident(KEY).is_not_null()).and_then(|d| d.select(vec![ident(KEY).alias(&key)])))?;
        Ok((keys, key))
    }

    /// The aggregate of the `having` per start value with connected rows: a frame of
    /// (key, value) columns and their names.
    fn aggregated(&mut self, related: &Related, having: &Having) -> Result<(DataFrame, String, String)> {
        let (key, value) = self.related_names();
        let target = self.targets(related)?;
        let first = related.path.first().ok_or_else(|| Error::Internal(format!("{}: empty path", related.place)))?;
        let last = related.path.last().ok_or_else(|| Error::Internal(format!("{}: empty path", related.place)))?;
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
                pairs = df(pairs
                    .join(step, JoinType::Inner, &[WALK], &[hop.to_field.as_str()], None)
                    .and_then(|d| d.select(vec![ident(START), ident(&next.from_field).alias(WALK)]))
                    .and_then(|d| d.filter(ident(WALK).is_not_null()))
                    .and_then(distinct))?;
            }
            let aggregated_field = wildcard_fields(self.catalog, related.object, having)?;
            df(pairs.join(target, JoinType::Inner, &[WALK], &[last.to_field.as_str()], None).and_then(|d| d.select(vec![ident(START), aggregated_field])))?
        };
        // Only the start values of the rows still in the set matter, when they are known.
        let grouped_input = self.cut_to_rows_before(grouped_input, &related.place)?;
        // `count_distinct` as distinct (start, value) pairs counted per start: a plain grouped
        // count, far cheaper in memory than per-group distinct sets.
        let (grouped_input, aggregate) = if having.agg == Agg::CountDistinct {
            let pairs = df(grouped_input.filter(ident(AGG_INPUT).is_not_null()).and_then(DataFrame::distinct))?;
            (pairs, count_all().alias(VALUE_COLUMN))
        } else {
            (grouped_input, aggregate_expr(having).alias(VALUE_COLUMN))
        };
        let grouped = df(grouped_input
            .aggregate(vec![ident(START)], vec![aggregate])
            .and_then(|d| d.select(vec![ident(START).alias(&key), ident(VALUE_COLUMN).alias(&value)])))?;
        Ok((grouped, key, value))
    }
}

const UNION_KEY: &str = "__cohort_union_key";
const REDUCE_KEY: &str = "__cohort_reduce_key";

/// The `related` node of a conjunct and whether the conjunct negates it.
fn related_conjunct(node: &Node) -> Option<(&Related, bool)> {
    match node {
        Node::Related(r) => Some((r, false)),
        Node::Not(n) => match n.as_ref() {
            Node::Related(r) => Some((r, true)),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `node` decides each row on its own fields (no `related` inside).
fn row_local(node: &Node) -> bool {
    match node {
        Node::Leaf(_) => true,
        Node::And(c) | Node::Or(c) => c.iter().all(row_local),
        Node::Not(n) => row_local(n),
        Node::Related(_) => false,
    }
}

/// Groups of conjuncts that [`Compiler::merged_join`] answers together: `related` nodes (or
/// their negations) over the same one-hop path with `where`s that look at the related row
/// alone, at least one an aggregate condition (placed first) and at least one accepting
/// nothing unconnected.
fn same_object_groups<'n>(conjuncts: &[&'n Node]) -> Vec<Vec<&'n Node>> {
    let mut groups: Vec<((&str, usize, &str), Vec<&'n Node>)> = Vec::new();
    for &node in conjuncts {
        let Some((related, _)) = related_conjunct(node) else { continue };
        let [hop] = related.path.as_slice() else { continue };
        let always_or_never = related.having.as_ref().and_then(CountTest::of).is_some_and(|t| matches!(t, CountTest::Always | CountTest::Never));
        if always_or_never || !related.where_.as_ref().is_none_or(row_local) {
            continue;
        }
        let key = (hop.from_field.as_str(), related.object, hop.to_field.as_str());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(node),
            None => groups.push((key, vec![node])),
        }
    }
    groups
        .into_iter()
        .map(|(_, mut members)| {
            if let Some(i) = members.iter().position(|n| aggregate_condition(n).is_some()) {
                let first = members.remove(i);
                members.insert(0, first);
            }
            members
        })
        .filter(|members| {
            members.len() >= 2
                && aggregate_condition(members[0]).is_some()
                && members.iter().filter_map(|n| related_conjunct(n)).any(|(r, negated)| !negated && accepts_by_start_value(r))
        })
        .collect()
}

/// The fields of the current object that `node` reads: its leaves' fields and the fields its
/// `related` nodes start from.
fn fields_read(node: &Node, fields: &mut BTreeSet<String>) {
    match node {
        Node::Leaf(l) => {
            fields.insert(l.field.clone());
        }
        Node::And(c) | Node::Or(c) => c.iter().for_each(|n| fields_read(n, fields)),
        Node::Not(n) => fields_read(n, fields),
        Node::Related(r) => {
            if let Some(first) = r.path.first() {
                fields.insert(first.from_field.clone());
            }
        }
    }
}

/// The `related` node of a conjunct that needs an aggregate per start value (itself or its
/// negation): the conditions whose input is worth cutting to the rows still in the set.
pub(crate) fn aggregate_condition(node: &Node) -> Option<&Related> {
    let (related, _) = related_conjunct(node)?;
    let having = related.having.as_ref()?;
    if CountTest::of(having).is_some() {
        return None;
    }
    // The smallest below v or the largest above v is an existence test (see `key_test`).
    let existence = matches!((having.agg, having.op, &having.field), (Agg::Min, CmpOp::Lt | CmpOp::Le, Some(_)) | (Agg::Max, CmpOp::Gt | CmpOp::Ge, Some(_)));
    (!existence).then_some(related)
}

/// What decides a `related` node's set in a filtering position.
// Short-lived, one per `related` node: boxing the frame would buy nothing.
#[allow(clippy::large_enum_variant)]
enum KeyTest {
    /// The rows whose start value is among `keys`' column `key` (`outside`: is not).
    Keys {
        /// One column of start values, repeats allowed.
        keys: DataFrame,
        /// Its name.
        key: String,
        /// The set is the rows whose start value is *not* among them.
        outside: bool,
        /// Each value appears once.
        distinct: bool,
    },
    /// Every row (`true`) or none.
    All(bool),
}

/// The rows of `frame` whose `field` is among the values of `keys`' column `key` (not among
/// them when `anti`). `distinct`: each value appears once in `keys` (an aggregate's groups),
/// which then are no more than the start values they were grouped by: the hash table is
/// built on them. Otherwise the engine builds on whichever side its statistics say is
/// smaller.
fn semi_join(frame: DataFrame, field: &str, keys: DataFrame, key: &str, anti: bool, distinct: bool) -> Result<DataFrame> {
    match (distinct, anti) {
        (true, false) => df(keys.join(frame, JoinType::RightSemi, &[key], &[field], None)),
        (true, true) => df(keys.join(frame, JoinType::RightAnti, &[key], &[field], None)),
        (false, false) => df(frame.join(keys, JoinType::LeftSemi, &[field], &[key], None)),
        (false, true) => df(frame.join(keys, JoinType::LeftAnti, &[field], &[key], None)),
    }
}

/// The field of the current object a `related` node's path starts from.
fn start_field(related: &Related) -> Result<String> {
    let first = related.path.first().ok_or_else(|| Error::Internal(format!("{}: empty path", related.place)))?;
    Ok(first.from_field.clone())
}

/// Whether [`Compiler::key_test`] gives the values a `related` node accepts (not those it
/// refuses, and not every row or none).
fn accepts_by_start_value(related: &Related) -> bool {
    match &related.having {
        None => true,
        Some(having) => match CountTest::of(having) {
            Some(test) => test == CountTest::AnyConnected,
            None => !holds_for_empty_set(having),
        },
    }
}

/// A `count` condition that only asks whether anything is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CountTest {
    /// Holds for every count of 1 or more, not for 0 (`count ge 1`, `count gt 0`).
    AnyConnected,
    /// Holds for 0 only (`count eq 0`, `count lt 1`).
    NoneConnected,
    /// Holds for every count (`count ge 0`).
    Always,
    /// Holds for none (`count lt 0`).
    Never,
}

impl CountTest {
    /// The test `having` reduces to, if it is a `count` that looks only at zero or not.
    fn of(having: &Having) -> Option<CountTest> {
        if having.agg != Agg::Count {
            return None;
        }
        let v = match having.value {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        };
        // Over the counts 1, 2, 3, …: does the condition hold for all, or for none?
        let (all_positive, no_positive) = match having.op {
            CmpOp::Eq => (false, v < 1.0 || v.fract() != 0.0),
            CmpOp::Ne => (v < 1.0 || v.fract() != 0.0, false),
            CmpOp::Lt => (false, v <= 1.0),
            CmpOp::Le => (false, v < 1.0),
            CmpOp::Gt => (v < 1.0, false),
            CmpOp::Ge => (v <= 1.0, false),
        };
        match (holds_for_empty_set(having), all_positive, no_positive) {
            (false, true, _) => Some(CountTest::AnyConnected),
            (true, _, true) => Some(CountTest::NoneConnected),
            (true, true, _) => Some(CountTest::Always),
            (false, _, true) => Some(CountTest::Never),
            _ => None,
        }
    }
}

/// Whether a start value with no connected rows satisfies `having`: `count` and
/// `count_distinct` are 0 over an empty set; the other aggregates are NULL, which satisfies
/// nothing.
fn holds_for_empty_set(having: &Having) -> bool {
    if !matches!(having.agg, Agg::Count | Agg::CountDistinct) {
        return false;
    }
    let zero_against = |ordering: Option<std::cmp::Ordering>| match (ordering, having.op) {
        (None, _) => false,
        (Some(o), CmpOp::Eq) => o.is_eq(),
        (Some(o), CmpOp::Ne) => o.is_ne(),
        (Some(o), CmpOp::Lt) => o.is_lt(),
        (Some(o), CmpOp::Le) => o.is_le(),
        (Some(o), CmpOp::Gt) => o.is_gt(),
        (Some(o), CmpOp::Ge) => o.is_ge(),
    };
    match having.value {
        Number::Int(i) => zero_against(Some(0i64.cmp(&i))),
        Number::Float(f) => zero_against(0f64.partial_cmp(&f)),
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
