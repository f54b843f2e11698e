//! The segment language: parsed from JSON and checked against a [`Catalog`] into a typed
//! tree ([`Segment`], [`Node`]) in which every field is known, every value has its field's
//! type and every `related` node carries its resolved relationship path.
//!
//! A path named with `via` is walked relationship by relationship, each either way, and must
//! end at the related object within the model's `max_hops`. Without `via`, the path is the
//! unique shortest one (breadth-first over the relationships walked either way, self-loops
//! never shortening a path, within `max_hops`); more than one shortest path is an error that
//! lists candidates to name with `via`. [`PlanShape`] counts what a plan will do (objects,
//! joins, `related` predicates, hops, depth): what the plan choice and the estimator read.

use std::collections::VecDeque;

use chrono::{DateTime, NaiveDate};
use serde_json::Value;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::json::{did_you_mean, index_place, key_place, parse_document, type_name, unknown_key};
use crate::model::FieldType;

/// A checked segment: its root object and filter.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The segment's name.
    pub name: String,
    /// The index of the root object in the catalog.
    pub root: usize,
    /// The filter over the root object.
    pub filter: Node,
}

/// A filter node; each denotes a set of rows of the object it is written at.
#[derive(Debug, Clone)]
pub enum Node {
    /// A predicate on one field.
    Leaf(Leaf),
    /// Intersection of the children's sets.
    And(Vec<Node>),
    /// Union of the children's sets.
    Or(Vec<Node>),
    /// The rows not in the child's set.
    Not(Box<Node>),
    /// Rows connected to rows of another object that satisfy `where` and `having`.
    Related(Box<Related>),
}

/// A predicate on one field of the current object.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The field's name.
    pub field: String,
    /// The field's type.
    pub field_type: FieldType,
    /// The operator and its typed operands.
    pub op: LeafOp,
}

/// A value of a field's type, taken from the segment.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// For `string` fields.
    String(String),
    /// For `int` fields.
    Int(i64),
    /// For `float` fields.
    Float(f64),
    /// For `bool` fields.
    Bool(bool),
    /// For `date` fields: days since 1970-01-01.
    Date(i32),
    /// For `timestamp` fields: microseconds since the epoch, UTC.
    Timestamp(i64),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            _ => return None,
        })
    }
}

/// A leaf operator with its operands.
#[derive(Debug, Clone)]
pub enum LeafOp {
    /// `eq ne lt le gt ge`.
    Cmp(CmpOp, Literal),
    /// `in`: the field equals one of the values.
    In(Vec<Literal>),
    /// `not_in`: the field is not NULL and equals none of the values.
    NotIn(Vec<Literal>),
    /// `between`: `low <= field <= high`.
    Between(Literal, Literal),
    /// `contains`.
    Contains(String),
    /// `starts_with`.
    StartsWith(String),
    /// `ends_with`.
    EndsWith(String),
    /// `is_null`.
    IsNull,
    /// `is_not_null`.
    IsNotNull,
    /// `within_last`: `as_of - d <= field <= as_of`, `d` in seconds.
    WithinLast(i64),
    /// `older_than`: `field < as_of - d`, `d` in seconds.
    OlderThan(i64),
}

/// A `related` node with its resolved path.
#[derive(Debug, Clone)]
pub struct Related {
    /// The JSON path of the node, for explanations and errors.
    pub place: String,
    /// The index of the related object.
    pub object: usize,
    /// The hops from the current object to the related object.
    pub path: Vec<Hop>,
    /// The filter on the related object's rows, if any.
    pub where_: Option<Node>,
    /// The aggregate condition, if any.
    pub having: Option<Having>,
}

/// One step of a relationship path: rows of `from_object` join rows of `to_object` where
/// `from_object.from_field = to_object.to_field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The relationship walked.
    pub relationship: String,
    /// The object the step starts at.
    pub from_object: usize,
    /// Its field in the equality.
    pub from_field: String,
    /// The object the step arrives at.
    pub to_object: usize,
    /// Its field in the equality.
    pub to_field: String,
}

/// An aggregate over the connected rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// Number of connected rows.
    Count,
    /// Number of distinct non-NULL values.
    CountDistinct,
    /// Sum of the non-NULL values.
    Sum,
    /// Mean of the non-NULL values.
    Avg,
    /// Smallest non-NULL value.
    Min,
    /// Largest non-NULL value.
    Max,
}

/// `having`: an aggregate compared with a number.
#[derive(Debug, Clone)]
pub struct Having {
    /// The aggregate.
    pub agg: Agg,
    /// The aggregated field and its type (`None` for `count`).
    pub field: Option<(String, FieldType)>,
    /// The comparison.
    pub op: CmpOp,
    /// The number compared with.
    pub value: Number,
}

/// A JSON number, kept exact when it is an integer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// An integer that fits in 64 bits.
    Int(i64),
    /// Any other finite number.
    Float(f64),
}

/// What the plan of a segment looks like, for reports and the estimator.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlanShape {
    /// Distinct objects the segment reads.
    pub objects: usize,
    /// Relationship hops walked, summed over all `related` nodes.
    pub joins: usize,
    /// `related` nodes.
    pub related_predicates: usize,
    /// The longest path of one `related` node.
    pub max_hops: usize,
    /// The deepest nesting of filter nodes.
    pub depth: usize,
    /// The root filter's top-level branches (1 unless it is `and`/`or`).
    pub top_level_branches: usize,
}

impl Segment {
    /// Reads and checks a segment file against `catalog`.
    pub fn from_file(path: &std::path::Path, catalog: &Catalog) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Unreadable { path: path.display().to_string(), message: e.to_string() })?;
        Self::from_json(&text, catalog)
    }

    /// Parses and checks a segment document against `catalog`.
    pub fn from_json(text: &str, catalog: &Catalog) -> Result<Self> {
        let value = parse_document(text).map_err(|m| Error::invalid_segment("", m))?;
        Self::from_value(&value, catalog)
    }

    /// Checks a segment given as a JSON value against `catalog`.
    pub fn from_value(value: &Value, catalog: &Catalog) -> Result<Self> {
        let map = value.as_object().ok_or_else(|| Error::invalid_segment("", format!("a segment is a JSON object, not {}", type_name(value))))?;
        if let Some(k) = unknown_key(map, &["name", "root", "filter"]) {
            return Err(Error::invalid_segment(k, "unknown key (a segment has name, root, filter)"));
        }
        let name = match map.get("name") {
            Some(Value::String(s)) => s.clone(),
            None => String::new(),
            Some(other) => return Err(Error::invalid_segment("name", format!("must be a string, not {}", type_name(other)))),
        };
        let root_name = match map.get("root") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(Error::invalid_segment("root", format!("must be a string, not {}", type_name(other)))),
            None => return Err(Error::invalid_segment("root", "required: the object whose keys are the members")),
        };
        let (root, _) = catalog.object(root_name).ok_or_else(|| {
            Error::invalid_segment("root", format!("{root_name:?} is not an object of the model{}", did_you_mean(root_name, catalog.model.object_names())))
        })?;
        let filter_value = map.get("filter").ok_or_else(|| Error::invalid_segment("filter", "required"))?;
        let mut checker = Checker { catalog, related_count: 0 };
        let filter = checker.node(filter_value, "filter", root, 1)?;
        Ok(Segment { name, root, filter })
    }

    /// The objects this segment reads (indexes into the catalog's objects), the root first
    /// among them in no particular order.
    pub fn objects_read(&self) -> std::collections::BTreeSet<usize> {
        self.walk_shape().1
    }

    /// The shape of the plan this segment compiles to.
    pub fn shape(&self) -> PlanShape {
        self.walk_shape().0
    }

    fn walk_shape(&self) -> (PlanShape, std::collections::BTreeSet<usize>) {
        let mut objects = std::collections::BTreeSet::new();
        objects.insert(self.root);
        let mut shape = PlanShape {
            top_level_branches: match &self.filter {
                Node::And(c) | Node::Or(c) => c.len(),
                _ => 1,
            },
            ..PlanShape::default()
        };
        fn walk(node: &Node, depth: usize, shape: &mut PlanShape, objects: &mut std::collections::BTreeSet<usize>) {
            shape.depth = shape.depth.max(depth);
            match node {
                Node::Leaf(_) => {}
                Node::And(c) | Node::Or(c) => c.iter().for_each(|n| walk(n, depth + 1, shape, objects)),
                Node::Not(n) => walk(n, depth + 1, shape, objects),
                Node::Related(r) => {
                    shape.related_predicates += 1;
                    shape.joins += r.path.len();
                    shape.max_hops = shape.max_hops.max(r.path.len());
                    for hop in &r.path {
                        objects.insert(hop.to_object);
                    }
                    if let Some(w) = &r.where_ {
                        walk(w, depth + 1, shape, objects);
                    }
                }
            }
        }
        walk(&self.filter, 1, &mut shape, &mut objects);
        shape.objects = objects.len();
        (shape, objects)
    }
}

struct Checker<'a> {
    catalog: &'a Catalog,
    related_count: usize,
}

const NODE_KEYS: &str = "a filter node is one of {field, op, value}, {and: [...]}, {or: [...]}, {not: node}, {related: OBJECT, via?, where?, having?}";

impl Checker<'_> {
    fn node(&mut self, value: &Value, place: &str, object: usize, depth: usize) -> Result<Node> {
        let guardrails = self.catalog.model.guardrails;
        if depth > guardrails.max_depth {
            return Err(Error::invalid_segment(place, format!("filter nesting deeper than the model's max_depth guardrail ({})", guardrails.max_depth)));
        }
        let map = value.as_object().ok_or_else(|| Error::invalid_segment(place, format!("a filter node is a JSON object, not {}", type_name(value))))?;
        let kind = ["field", "and", "or", "not", "related"].into_iter().filter(|k| map.contains_key(*k)).collect::<Vec<_>>();
        match kind.as_slice() {
            ["field"] => self.leaf(map, place, object).map(Node::Leaf),
            [k @ ("and" | "or")] => {
                if let Some(extra) = unknown_key(map, &[k]) {
                    return Err(Error::invalid_segment(key_place(place, extra), format!("unknown key beside {k:?}")));
                }
                let here = key_place(place, k);
                let items =
                    map[*k].as_array().ok_or_else(|| Error::invalid_segment(&here, format!("must be an array of nodes, not {}", type_name(&map[*k]))))?;
                if items.is_empty() {
                    return Err(Error::invalid_segment(&here, "needs at least one node"));
                }
                let children = items.iter().enumerate().map(|(i, v)| self.node(v, &index_place(&here, i), object, depth + 1)).collect::<Result<Vec<_>>>()?;
                Ok(if *k == "and" { Node::And(children) } else { Node::Or(children) })
            }
            ["not"] => {
                if let Some(extra) = unknown_key(map, &["not"]) {
                    return Err(Error::invalid_segment(key_place(place, extra), "unknown key beside \"not\""));
                }
                let child = self.node(&map["not"], &key_place(place, "not"), object, depth + 1)?;
                Ok(Node::Not(Box::new(child)))
            }
            ["related"] => self.related(map, place, object, depth).map(|r| Node::Related(Box::new(r))),
            [] => Err(Error::invalid_segment(
                place,
                match map.keys().next() {
                    Some(k) => format!("unknown node {k:?}{}; {NODE_KEYS}", did_you_mean(k, ["field", "and", "or", "not", "related"])),
                    None => format!("empty node; {NODE_KEYS}"),
                },
            )),
            several => Err(Error::invalid_segment(place, format!("a node is exactly one kind, this one has {}", several.join(" and ")))),
        }
    }

    fn leaf(&self, map: &serde_json::Map<String, Value>, place: &str, object: usize) -> Result<Leaf> {
        if let Some(k) = unknown_key(map, &["field", "op", "value"]) {
            return Err(Error::invalid_segment(key_place(place, k), "unknown key (a leaf has field, op, value)"));
        }
        let o = &self.catalog.objects[object];
        let field_place = key_place(place, "field");
        let field_name = match &map["field"] {
            Value::String(s) => s.as_str(),
            other => return Err(Error::invalid_segment(&field_place, format!("must be a string, not {}", type_name(other)))),
        };
        let field = o.field(field_name).ok_or_else(|| Error::invalid_segment(&field_place, o.no_such_field(field_name)))?;
        let field_type = field.field_type;
        let op_place = key_place(place, "op");
        let op_name = match map.get("op") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(Error::invalid_segment(&op_place, format!("must be a string, not {}", type_name(other)))),
            None => return Err(Error::invalid_segment(&op_place, "required")),
        };
        let value_place = key_place(place, "value");
        let value = map.get("value");
        let need_value = || value.ok_or_else(|| Error::invalid_segment(&value_place, format!("required by {op_name:?}")));
        let guardrails = self.catalog.model.guardrails;
        let op = match op_name {
            "is_null" | "is_not_null" => {
                if value.is_some() {
                    return Err(Error::invalid_segment(&value_place, format!("{op_name:?} takes no value")));
                }
                if op_name == "is_null" { LeafOp::IsNull } else { LeafOp::IsNotNull }
            }
            "in" | "not_in" => {
                let items = need_value()?.as_array().ok_or_else(|| Error::invalid_segment(&value_place, format!("{op_name:?} takes an array")))?;
                if items.len() > guardrails.max_in_list {
                    return Err(Error::invalid_segment(
                        &value_place,
                        format!("{} values, more than the model's max_in_list guardrail ({})", items.len(), guardrails.max_in_list),
                    ));
                }
                let literals =
                    items.iter().enumerate().map(|(i, v)| literal(v, field_type, field_name, &index_place(&value_place, i))).collect::<Result<Vec<_>>>()?;
                if op_name == "in" { LeafOp::In(literals) } else { LeafOp::NotIn(literals) }
            }
            "between" => {
                let items = need_value()?
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .ok_or_else(|| Error::invalid_segment(&value_place, "\"between\" takes an array of two values, [low, high]"))?;
                LeafOp::Between(
                    literal(&items[0], field_type, field_name, &index_place(&value_place, 0))?,
                    literal(&items[1], field_type, field_name, &index_place(&value_place, 1))?,
                )
            }
            "contains" | "starts_with" | "ends_with" => {
                if field_type != FieldType::String {
                    return Err(Error::invalid_segment(&op_place, format!("{op_name:?} applies to string fields; {field_name:?} is {}", field_type.name())));
                }
                let s = match need_value()? {
                    Value::String(s) => s.clone(),
                    other => {
                        return Err(Error::invalid_segment(&value_place, format!("must be a string, not {}", type_name(other))));
                    }
                };
                match op_name {
                    "contains" => LeafOp::Contains(s),
                    "starts_with" => LeafOp::StartsWith(s),
                    _ => LeafOp::EndsWith(s),
                }
            }
            "within_last" | "older_than" => {
                if !matches!(field_type, FieldType::Date | FieldType::Timestamp) {
                    return Err(Error::invalid_segment(
                        &op_place,
                        format!("{op_name:?} applies to date and timestamp fields; {field_name:?} is {}", field_type.name()),
                    ));
                }
                let seconds = duration(need_value()?, &value_place)?;
                if op_name == "within_last" { LeafOp::WithinLast(seconds) } else { LeafOp::OlderThan(seconds) }
            }
            other => match CmpOp::parse(other) {
                Some(cmp) => LeafOp::Cmp(cmp, literal(need_value()?, field_type, field_name, &value_place)?),
                None => {
                    return Err(Error::invalid_segment(
                        &op_place,
                        format!(
                            "{other:?} is not an operator (eq ne lt le gt ge in not_in between contains starts_with ends_with is_null is_not_null within_last older_than){}",
                            did_you_mean(
                                other,
                                [
                                    "eq",
                                    "ne",
                                    "lt",
                                    "le",
                                    "gt",
                                    "ge",
                                    "in",
                                    "not_in",
                                    "between",
                                    "contains",
                                    "starts_with",
                                    "ends_with",
                                    "is_null",
                                    "is_not_null",
                                    "within_last",
                                    "older_than"
                                ]
                            )
                        ),
                    ));
                }
            },
        };
        Ok(Leaf { field: field_name.to_string(), field_type, op })
    }

    fn related(&mut self, map: &serde_json::Map<String, Value>, place: &str, object: usize, depth: usize) -> Result<Related> {
        if let Some(k) = unknown_key(map, &["related", "via", "where", "having"]) {
            return Err(Error::invalid_segment(
                key_place(place, k),
                format!("unknown key (a related node has related, via, where, having){}", did_you_mean(k, ["via", "where", "having"])),
            ));
        }
        let guardrails = self.catalog.model.guardrails;
        self.related_count += 1;
        if self.related_count > guardrails.max_related {
            return Err(Error::invalid_segment(place, format!("more related predicates than the model's max_related guardrail ({})", guardrails.max_related)));
        }
        let here = key_place(place, "related");
        let target_name = match &map["related"] {
            Value::String(s) => s.as_str(),
            other => return Err(Error::invalid_segment(&here, format!("must be an object name, not {}", type_name(other)))),
        };
        let (target, _) = self.catalog.object(target_name).ok_or_else(|| {
            Error::invalid_segment(
                &here,
                format!("{target_name:?} is not an object of the model{}", did_you_mean(target_name, self.catalog.model.object_names())),
            )
        })?;
        let path = match map.get("via") {
            Some(via) => self.via(via, &key_place(place, "via"), object, target)?,
            None => {
                if target == object {
                    return Err(Error::invalid_segment(&here, format!("{target_name:?} is the current object: a related node on itself needs \"via\"")));
                }
                self.shortest_path(object, target, &here)?
            }
        };
        let where_ = match map.get("where") {
            Some(w) => Some(self.node(w, &key_place(place, "where"), target, depth + 1)?),
            None => None,
        };
        let having = match map.get("having") {
            Some(h) => Some(self.having(h, &key_place(place, "having"), target)?),
            None => None,
        };
        Ok(Related { place: place.to_string(), object: target, path, where_, having })
    }

    fn via(&self, value: &Value, place: &str, start: usize, target: usize) -> Result<Vec<Hop>> {
        let items =
            value.as_array().ok_or_else(|| Error::invalid_segment(place, format!("must be an array of relationship names, not {}", type_name(value))))?;
        if items.is_empty() {
            return Err(Error::invalid_segment(place, "names at least one relationship"));
        }
        let max_hops = self.catalog.model.guardrails.max_hops;
        if items.len() > max_hops {
            return Err(Error::invalid_segment(place, format!("a path of {} hops, more than the model's max_hops guardrail ({max_hops})", items.len())));
        }
        let model = &self.catalog.model;
        let mut current = start;
        let mut hops = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_place = index_place(place, i);
            let name = item.as_str().ok_or_else(|| Error::invalid_segment(&item_place, format!("must be a relationship name, not {}", type_name(item))))?;
            let rel = model.relationships.iter().find(|r| r.name == name).ok_or_else(|| {
                Error::invalid_segment(
                    &item_place,
                    format!("{name:?} is not a relationship of the model{}", did_you_mean(name, model.relationships.iter().map(|r| r.name.as_str()))),
                )
            })?;
            let current_name = &self.catalog.objects[current].name;
            let hop = if &rel.from == current_name {
                let to = self.index(&rel.to)?;
                Hop { relationship: rel.name.clone(), from_object: current, from_field: rel.from_field.clone(), to_object: to, to_field: rel.to_field.clone() }
            } else if &rel.to == current_name {
                let to = self.index(&rel.from)?;
                Hop { relationship: rel.name.clone(), from_object: current, from_field: rel.to_field.clone(), to_object: to, to_field: rel.from_field.clone() }
            } else {
                return Err(Error::invalid_segment(&item_place, format!("{name:?} joins {:?} and {:?}; it does not touch {current_name:?}", rel.from, rel.to)));
            };
            current = hop.to_object;
            hops.push(hop);
        }
        if current != target {
            return Err(Error::invalid_segment(
                place,
                format!("the path ends at {:?}, not at {:?}", self.catalog.objects[current].name, self.catalog.objects[target].name),
            ));
        }
        Ok(hops)
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.catalog.object(name).map(|(i, _)| i).ok_or_else(|| Error::Internal(format!("relationship names unknown object {name:?}")))
    }

    /// The unique shortest path from `start` to `target`, walking relationships either way.
    fn shortest_path(&self, start: usize, target: usize, place: &str) -> Result<Vec<Hop>> {
        let catalog = self.catalog;
        let n = catalog.objects.len();
        let max_hops = catalog.model.guardrails.max_hops;
        // Adjacency: for each object, the hops that leave it (self-loops never shorten a path).
        let mut adjacency: Vec<Vec<Hop>> = vec![Vec::new(); n];
        for rel in &catalog.model.relationships {
            let (Some((from, _)), Some((to, _))) = (catalog.object(&rel.from), catalog.object(&rel.to)) else {
                return Err(Error::Internal(format!("relationship {:?} names an unknown object", rel.name)));
            };
            if from == to {
                continue;
            }
            adjacency[from].push(Hop {
                relationship: rel.name.clone(),
                from_object: from,
                from_field: rel.from_field.clone(),
                to_object: to,
                to_field: rel.to_field.clone(),
            });
            adjacency[to].push(Hop {
                relationship: rel.name.clone(),
                from_object: to,
                from_field: rel.to_field.clone(),
                to_object: from,
                to_field: rel.from_field.clone(),
            });
        }
        // Breadth-first: distances and the number of shortest paths (saturating at 2).
        let mut distance = vec![usize::MAX; n];
        let mut paths = vec![0u8; n];
        distance[start] = 0;
        paths[start] = 1;
        let mut queue = VecDeque::from([start]);
        while let Some(u) = queue.pop_front() {
            if distance[u] >= distance[target] || distance[u] >= max_hops {
                continue;
            }
            for hop in &adjacency[u] {
                let v = hop.to_object;
                if distance[v] == usize::MAX {
                    distance[v] = distance[u] + 1;
                    paths[v] = paths[u];
                    queue.push_back(v);
                } else if distance[v] == distance[u] + 1 {
                    paths[v] = paths[v].saturating_add(paths[u]).min(2);
                }
            }
        }
        let target_name = &catalog.objects[target].name;
        let start_name = &catalog.objects[start].name;
        if distance[target] == usize::MAX {
            return Err(Error::invalid_segment(
                place,
                format!("no path from {start_name:?} to {target_name:?} within the model's max_hops guardrail ({max_hops})"),
            ));
        }
        // Walk back from the target along edges that descend in distance.
        let mut candidates: Vec<Vec<Hop>> = Vec::new();
        let mut stack: Vec<(usize, Vec<Hop>)> = vec![(target, Vec::new())];
        while let Some((node, suffix)) = stack.pop() {
            if candidates.len() >= 6 {
                break;
            }
            if node == start {
                candidates.push(suffix);
                continue;
            }
            for hop in &adjacency[node] {
                let prev = hop.to_object;
                if distance[prev] != usize::MAX && distance[prev] + 1 == distance[node] {
                    let forward = Hop {
                        relationship: hop.relationship.clone(),
                        from_object: prev,
                        from_field: hop.to_field.clone(),
                        to_object: node,
                        to_field: hop.from_field.clone(),
                    };
                    let mut path = Vec::with_capacity(suffix.len() + 1);
                    path.push(forward);
                    path.extend(suffix.iter().cloned());
                    stack.push((prev, path));
                }
            }
        }
        if paths[target] > 1 || candidates.len() > 1 {
            let listed = candidates
                .iter()
                .take(5)
                .map(|p| format!("[{}]", p.iter().map(|h| format!("{:?}", h.relationship)).collect::<Vec<_>>().join(", ")))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::invalid_segment(
                place,
                format!(
                    "more than one shortest path from {start_name:?} to {target_name:?}; pick one with \"via\": {listed}{}",
                    if candidates.len() > 5 { ", …" } else { "" }
                ),
            ));
        }
        candidates.pop().ok_or_else(|| Error::Internal(format!("no path found back from {target_name:?} although one was counted")))
    }

    fn having(&self, value: &Value, place: &str, object: usize) -> Result<Having> {
        let map = value
            .as_object()
            .ok_or_else(|| Error::invalid_segment(place, format!("must be an object {{agg, field?, op, value}}, not {}", type_name(value))))?;
        if let Some(k) = unknown_key(map, &["agg", "field", "op", "value"]) {
            return Err(Error::invalid_segment(key_place(place, k), "unknown key (having has agg, field, op, value)"));
        }
        let agg_place = key_place(place, "agg");
        let agg_name = map
            .get("agg")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid_segment(&agg_place, "required: count, count_distinct, sum, avg, min or max"))?;
        let agg = match agg_name {
            "count" => Agg::Count,
            "count_distinct" => Agg::CountDistinct,
            "sum" => Agg::Sum,
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            other => {
                return Err(Error::invalid_segment(
                    &agg_place,
                    format!(
                        "{other:?} is not an aggregate (count, count_distinct, sum, avg, min, max){}",
                        did_you_mean(other, ["count", "count_distinct", "sum", "avg", "min", "max"])
                    ),
                ));
            }
        };
        let o = &self.catalog.objects[object];
        let field_place = key_place(place, "field");
        let field = match map.get("field") {
            None if agg == Agg::Count => None,
            None => return Err(Error::invalid_segment(&field_place, format!("required by {agg_name:?}"))),
            Some(Value::String(name)) => {
                let f = o.field(name).ok_or_else(|| Error::invalid_segment(&field_place, o.no_such_field(name)))?;
                if matches!(agg, Agg::Sum | Agg::Avg | Agg::Min | Agg::Max) && !matches!(f.field_type, FieldType::Int | FieldType::Float) {
                    return Err(Error::invalid_segment(&field_place, format!("{agg_name:?} needs an int or float field; {name:?} is {}", f.field_type.name())));
                }
                Some((name.clone(), f.field_type))
            }
            Some(other) => return Err(Error::invalid_segment(&field_place, format!("must be a string, not {}", type_name(other)))),
        };
        let op_place = key_place(place, "op");
        let op = map
            .get("op")
            .and_then(Value::as_str)
            .and_then(CmpOp::parse)
            .ok_or_else(|| Error::invalid_segment(&op_place, "required: one of eq ne lt le gt ge"))?;
        let value_place = key_place(place, "value");
        let value = match map.get("value") {
            Some(Value::Number(n)) => number(n).ok_or_else(|| Error::invalid_segment(&value_place, "not a finite number"))?,
            Some(other) => return Err(Error::invalid_segment(&value_place, format!("must be a number, not {}", type_name(other)))),
            None => return Err(Error::invalid_segment(&value_place, "required")),
        };
        Ok(Having { agg, field, op, value })
    }
}

fn number(n: &serde_json::Number) -> Option<Number> {
    if let Some(i) = n.as_i64() { Some(Number::Int(i)) } else { n.as_f64().filter(|f| f.is_finite()).map(Number::Float) }
}

/// Converts a JSON value to a literal of the field's type, or says why it does not fit.
fn literal(value: &Value, field_type: FieldType, field: &str, place: &str) -> Result<Literal> {
    let mismatch = || {
        Error::invalid_segment(
            place,
            format!(
                "{} does not fit {field:?}, a {} field (it takes {})",
                describe(value),
                field_type.name(),
                match field_type {
                    FieldType::String => "a string",
                    FieldType::Int => "an integer",
                    FieldType::Float => "a number",
                    FieldType::Bool => "true or false",
                    FieldType::Date => "a date \"YYYY-MM-DD\"",
                    FieldType::Timestamp => "an RFC 3339 timestamp",
                }
            ),
        )
    };
    Ok(match (field_type, value) {
        (FieldType::String, Value::String(s)) => Literal::String(s.clone()),
        (FieldType::Int, Value::Number(n)) => Literal::Int(n.as_i64().ok_or_else(mismatch)?),
        (FieldType::Float, Value::Number(n)) => Literal::Float(n.as_f64().filter(|f| f.is_finite()).ok_or_else(mismatch)?),
        (FieldType::Bool, Value::Bool(b)) => Literal::Bool(*b),
        (FieldType::Date, Value::String(s)) => Literal::Date(parse_date(s).ok_or_else(mismatch)?),
        (FieldType::Timestamp, Value::String(s)) => Literal::Timestamp(parse_timestamp(s).ok_or_else(mismatch)?),
        _ => return Err(mismatch()),
    })
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) if s.len() <= 40 => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => type_name(other).to_string(),
    }
}

/// Parses `YYYY-MM-DD` into days since the epoch.
pub fn parse_date(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    let shape = b.len() == 10 && b[4] == b'-' && b[7] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from(date.signed_duration_since(epoch).num_days()).ok()
}

/// Parses an RFC 3339 timestamp into microseconds since the epoch, UTC.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok()?.to_utc().timestamp_micros().into()
}

/// Parses a duration `<n>d|h|m|s` into seconds.
fn duration(value: &Value, place: &str) -> Result<i64> {
    let bad = || Error::invalid_segment(place, format!("{} is not a duration like \"30d\", \"12h\", \"15m\" or \"90s\"", describe(value)));
    let s = value.as_str().ok_or_else(bad)?;
    // The unit is the last character, however many bytes it takes.
    let (digits, unit) = s.split_at(s.char_indices().next_back().map_or(0, |(i, _)| i));
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(bad()),
    };
    // Longer than ten thousand years cannot be compared with any timestamp.
    n.checked_mul(scale)
        .filter(|secs| *secs <= 10_000 * 366 * 86_400)
        .ok_or_else(|| Error::invalid_segment(place, format!("{s:?} is longer than any timestamp range")))
}
