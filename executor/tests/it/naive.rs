//! A second evaluator, written straight from the definitions of `spec/segments.md` and
//! sharing no code with the executor: rows in memory, a segment as raw JSON, sets of row
//! indices. Slow on purpose (it enumerates chains), so it is only fed small models.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

/// A value of a row, or NULL.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Null,
    S(String),
    I(i64),
    F(f64),
    B(bool),
    /// Days since the epoch.
    D(i32),
    /// Microseconds since the epoch, UTC.
    T(i64),
}

/// One object's declared fields and rows.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub primary_key: String,
    /// Field name and type name (`string`, `int`, ...).
    pub fields: Vec<(String, String)>,
    pub rows: Vec<Vec<V>>,
}

impl Table {
    fn column(&self, field: &str) -> usize {
        self.fields.iter().position(|(n, _)| n == field).expect("the generator only names declared fields")
    }
}

/// A relationship: `from.from_field = to.to_field`.
#[derive(Debug, Clone)]
pub struct Rel {
    pub name: String,
    pub from: String,
    pub from_field: String,
    pub to: String,
    pub to_field: String,
}

/// The database the naive evaluator reads.
pub struct Db<'a> {
    pub tables: &'a [Table],
    pub rels: &'a [Rel],
    pub as_of_micros: i64,
}

impl Db<'_> {
    fn table(&self, name: &str) -> &Table {
        self.tables.iter().find(|t| t.name == name).expect("known object")
    }

    /// The members of `segment` (JSON), as text, sorted by bytes.
    pub fn members(&self, segment: &Value) -> Vec<String> {
        let root = segment["root"].as_str().expect("root");
        let set = self.eval(root, &segment["filter"]);
        let table = self.table(root);
        let pk = table.column(&table.primary_key);
        let keys: BTreeSet<String> = set
            .iter()
            .filter_map(|&r| match &table.rows[r][pk] {
                V::Null => None,
                V::S(s) => Some(s.clone()),
                V::I(i) => Some(i.to_string()),
                other => panic!("primary key of unexpected type {other:?}"),
            })
            .collect();
        keys.into_iter().collect()
    }

    /// The set of row indices of `object` that `node` denotes.
    fn eval(&self, object: &str, node: &Value) -> BTreeSet<usize> {
        let table = self.table(object);
        let all: BTreeSet<usize> = (0..table.rows.len()).collect();
        if let Some(children) = node.get("and") {
            let mut acc = all;
            for c in children.as_array().expect("array") {
                let s = self.eval(object, c);
                acc = acc.intersection(&s).copied().collect();
            }
            return acc;
        }
        if let Some(children) = node.get("or") {
            let mut acc = BTreeSet::new();
            for c in children.as_array().expect("array") {
                acc.extend(self.eval(object, c));
            }
            return acc;
        }
        if let Some(child) = node.get("not") {
            let s = self.eval(object, child);
            return all.difference(&s).copied().collect();
        }
        if let Some(target) = node.get("related") {
            return self.related(object, target.as_str().expect("name"), node);
        }
        let field = node["field"].as_str().expect("field");
        let column = table.column(field);
        let field_type = &table.fields[column].1;
        all.into_iter().filter(|&r| self.leaf(&table.rows[r][column], field_type, node)).collect()
    }

    fn leaf(&self, v: &V, field_type: &str, node: &Value) -> bool {
        let op = node["op"].as_str().expect("op");
        if op == "is_null" {
            return *v == V::Null;
        }
        if *v == V::Null {
            return false;
        }
        if op == "is_not_null" {
            return true;
        }
        let value = &node["value"];
        let lit = |x: &Value| literal(x, field_type);
        match op {
            "eq" => cmp(v, &lit(value)) == Some(std::cmp::Ordering::Equal),
            "ne" => cmp(v, &lit(value)).is_some_and(|o| o != std::cmp::Ordering::Equal),
            "lt" => cmp(v, &lit(value)) == Some(std::cmp::Ordering::Less),
            "le" => cmp(v, &lit(value)).is_some_and(|o| o != std::cmp::Ordering::Greater),
            "gt" => cmp(v, &lit(value)) == Some(std::cmp::Ordering::Greater),
            "ge" => cmp(v, &lit(value)).is_some_and(|o| o != std::cmp::Ordering::Less),
            "in" => value.as_array().expect("list").iter().any(|x| cmp(v, &lit(x)) == Some(std::cmp::Ordering::Equal)),
            "not_in" => value.as_array().expect("list").iter().all(|x| cmp(v, &lit(x)) != Some(std::cmp::Ordering::Equal)),
            "between" => {
                let b = value.as_array().expect("pair");
                cmp(v, &lit(&b[0])).is_some_and(|o| o != std::cmp::Ordering::Less) && cmp(v, &lit(&b[1])).is_some_and(|o| o != std::cmp::Ordering::Greater)
            }
            "contains" | "starts_with" | "ends_with" => {
                let (V::S(s), Some(needle)) = (v, value.as_str()) else { return false };
                match op {
                    "contains" => s.contains(needle),
                    "starts_with" => s.starts_with(needle),
                    _ => s.ends_with(needle),
                }
            }
            "within_last" | "older_than" => {
                let d = duration_micros(value.as_str().expect("duration"));
                let t = match v {
                    V::T(t) => *t,
                    V::D(days) => i64::from(*days) * 86_400_000_000,
                    _ => return false,
                };
                if op == "within_last" { self.as_of_micros - d <= t && t <= self.as_of_micros } else { t < self.as_of_micros - d }
            }
            other => panic!("the generator made an unknown op {other}"),
        }
    }

    fn related(&self, object: &str, target: &str, node: &Value) -> BTreeSet<usize> {
        let via: Vec<&str> = node["via"].as_array().expect("the generator always gives via").iter().map(|v| v.as_str().expect("name")).collect();
        // The hops: (current object, its field, next object, next field).
        let mut hops = Vec::new();
        let mut current = object.to_string();
        for name in via {
            let rel = self.rels.iter().find(|r| r.name == name).expect("known relationship");
            if rel.from == current {
                hops.push((current.clone(), rel.from_field.clone(), rel.to.clone(), rel.to_field.clone()));
                current = rel.to.clone();
            } else {
                hops.push((current.clone(), rel.to_field.clone(), rel.from.clone(), rel.from_field.clone()));
                current = rel.from.clone();
            }
        }
        assert_eq!(current, target);
        let where_set = match node.get("where") {
            Some(w) => self.eval(target, w),
            None => (0..self.table(target).rows.len()).collect(),
        };
        let table = self.table(object);
        let mut out = BTreeSet::new();
        for r in 0..table.rows.len() {
            // Rows reached along the chain: a set, so each row counts once.
            let mut reached: BTreeSet<usize> = BTreeSet::from([r]);
            for (from, from_field, to, to_field) in &hops {
                let ft = self.table(from);
                let tt = self.table(to);
                let fc = ft.column(from_field);
                let tc = tt.column(to_field);
                let mut next = BTreeSet::new();
                for &x in &reached {
                    let a = &ft.rows[x][fc];
                    if *a == V::Null {
                        continue;
                    }
                    for (y, row) in tt.rows.iter().enumerate() {
                        if cmp(a, &row[tc]) == Some(std::cmp::Ordering::Equal) {
                            next.insert(y);
                        }
                    }
                }
                reached = next;
            }
            let s: Vec<usize> = reached.intersection(&where_set).copied().collect();
            if self.having(target, &s, node.get("having")) {
                out.insert(r);
            }
        }
        out
    }

    fn having(&self, target: &str, s: &[usize], having: Option<&Value>) -> bool {
        let Some(h) = having else { return !s.is_empty() };
        let table = self.table(target);
        let agg = h["agg"].as_str().expect("agg");
        let values: Vec<&V> = match h.get("field").and_then(Value::as_str) {
            Some(f) => {
                let c = table.column(f);
                s.iter().map(|&r| &table.rows[r][c]).filter(|v| **v != V::Null).collect()
            }
            None => Vec::new(),
        };
        let number = |v: &V| match v {
            V::I(i) => *i as f64,
            V::F(f) => *f,
            other => panic!("aggregate over {other:?}"),
        };
        let aggregate: Option<f64> = match agg {
            "count" => Some(s.len() as f64),
            "count_distinct" => {
                let mut distinct: Vec<&V> = Vec::new();
                for v in &values {
                    if !distinct.iter().any(|d| cmp(d, v) == Some(std::cmp::Ordering::Equal)) {
                        distinct.push(v);
                    }
                }
                Some(distinct.len() as f64)
            }
            _ if values.is_empty() => None,
            "sum" => Some(values.iter().map(|v| number(v)).sum()),
            "avg" => Some(values.iter().map(|v| number(v)).sum::<f64>() / values.len() as f64),
            "min" => values.iter().map(|v| number(v)).reduce(f64::min),
            "max" => values.iter().map(|v| number(v)).reduce(f64::max),
            other => panic!("unknown aggregate {other}"),
        };
        let Some(a) = aggregate else { return false };
        let x = h["value"].as_f64().expect("number");
        match h["op"].as_str().expect("op") {
            "eq" => a == x,
            "ne" => a != x,
            "lt" => a < x,
            "le" => a <= x,
            "gt" => a > x,
            "ge" => a >= x,
            other => panic!("unknown comparison {other}"),
        }
    }
}

fn duration_micros(text: &str) -> i64 {
    let (n, unit) = text.split_at(text.len() - 1);
    let n: i64 = n.parse().expect("digits");
    n * match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        _ => 1,
    } * 1_000_000
}

/// A segment value as a row value of the field's type.
pub fn literal(x: &Value, field_type: &str) -> V {
    match field_type {
        "string" => V::S(x.as_str().expect("string").to_string()),
        "int" => V::I(x.as_i64().expect("int")),
        "float" => V::F(x.as_f64().expect("float")),
        "bool" => V::B(x.as_bool().expect("bool")),
        "date" => V::D(days(x.as_str().expect("date"))),
        "timestamp" => V::T(micros(x.as_str().expect("timestamp"))),
        other => panic!("unknown type {other}"),
    }
}

pub fn days(text: &str) -> i32 {
    let d = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("date");
    (d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

pub fn micros(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).expect("timestamp").timestamp_micros()
}

/// Compares two non-NULL values of one type; `None` when either is NULL.
pub fn cmp(a: &V, b: &V) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (V::Null, _) | (_, V::Null) => None,
        (V::S(x), V::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (V::I(x), V::I(y)) => Some(x.cmp(y)),
        (V::F(x), V::F(y)) => x.partial_cmp(y),
        (V::B(x), V::B(y)) => Some(x.cmp(y)),
        (V::D(x), V::D(y)) => Some(x.cmp(y)),
        (V::T(x), V::T(y)) => Some(x.cmp(y)),
        (x, y) => panic!("comparing values of different types: {x:?} {y:?}"),
    }
}

/// Unused-field guard for tables built by hand.
#[allow(dead_code)]
pub fn index_by_name(tables: &[Table]) -> HashMap<&str, &Table> {
    tables.iter().map(|t| (t.name.as_str(), t)).collect()
}
