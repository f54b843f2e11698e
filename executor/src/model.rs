//! A tenant's data model: objects (tables), their sources and fields, relationships and
//! guardrails, parsed from the JSON of `spec/segments.md` with every error naming its place.
//!
//! Parsing checks everything that can be checked without data. [`crate::Catalog::load`]
//! then reads the sources' real schemas and finishes the checks that need them.
//! [`Model::confined_to`] is for models sent by tenants: every source must stay inside the
//! tenant's data root (no absolute paths, URLs, `..` or links leading out of it), and the
//! catalog then checks every file a source lists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::json::{did_you_mean, index_place, is_valid_name, key_place, parse_document, type_name, unknown_key};
use crate::storage::ObjectStores;

/// Columns the compiler adds start with this, so field names may not.
pub const RESERVED_PREFIX: &str = "__cohort";

/// The type of a field, as the model declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// A 64-bit signed integer.
    Int,
    /// A 64-bit float.
    Float,
    /// `true` / `false`.
    Bool,
    /// A calendar date (no time zone).
    Date,
    /// An instant, UTC.
    Timestamp,
}

impl FieldType {
    /// The name the model uses for this type.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::Date => "date",
            FieldType::Timestamp => "timestamp",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "string" => FieldType::String,
            "int" => FieldType::Int,
            "float" => FieldType::Float,
            "bool" => FieldType::Bool,
            "date" => FieldType::Date,
            "timestamp" => FieldType::Timestamp,
            _ => return None,
        })
    }
}

/// A field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field's name, as in the source.
    pub name: String,
    /// Its type.
    pub field_type: FieldType,
}

/// The file format of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// Apache Parquet files.
    Parquet,
    /// CSV with a header row.
    Csv,
    /// An Apache Iceberg table (its snapshot's Parquet data files).
    Iceberg,
}

impl SourceFormat {
    /// The file extension a directory or glob of this format is filtered by.
    pub fn extension(self) -> &'static str {
        match self {
            SourceFormat::Parquet => ".parquet",
            SourceFormat::Csv => ".csv",
            SourceFormat::Iceberg => ".parquet",
        }
    }
}

/// Where an object's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Parquet or CSV.
    pub format: SourceFormat,
    /// A file, a directory or a glob; relative paths are relative to the model's base. An
    /// Iceberg source's table folder (or its metadata file).
    pub path: String,
    /// The snapshot of an Iceberg source to read (`None`: its current one).
    pub snapshot_id: Option<i64>,
    /// An Iceberg source named in a catalog: the catalog's name and the table's
    /// (`namespace.table`). The service resolves it to the table's current metadata file
    /// ([`Model::resolve_table`]) before the model is loaded; `path` is empty until then.
    pub table: Option<(String, String)>,
}

/// An object (a table) of the model, as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDef {
    /// The object's name.
    pub name: String,
    /// The field that identifies a row (the data need not honour it).
    pub primary_key: String,
    /// Where the rows are.
    pub source: Source,
    /// The declared schema, or `None` to take it from the source.
    pub fields: Option<Vec<Field>>,
}

/// A relationship: the equality `from.from_field = to.to_field`, walkable both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    /// The relationship's name, used in `via`.
    pub name: String,
    /// One end's object.
    pub from: String,
    /// One end's field.
    pub from_field: String,
    /// The other end's object.
    pub to: String,
    /// The other end's field.
    pub to_field: String,
}

/// Limits that keep a tenant's segments from asking for unbounded work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guardrails {
    /// Longest relationship path a `related` node may walk.
    pub max_hops: usize,
    /// Deepest nesting of filter nodes.
    pub max_depth: usize,
    /// Most `related` nodes in one segment.
    pub max_related: usize,
    /// Longest `in` / `not_in` list.
    pub max_in_list: usize,
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails { max_hops: 4, max_depth: 16, max_related: 64, max_in_list: 10_000 }
    }
}

/// A parsed, structurally valid data model.
#[derive(Debug, Clone)]
pub struct Model {
    /// The objects, in document order.
    pub objects: Vec<ObjectDef>,
    /// The relationships, in document order.
    pub relationships: Vec<Relationship>,
    /// The guardrails, defaults filled in.
    pub guardrails: Guardrails,
    /// The directory relative source paths are resolved against.
    pub base_dir: PathBuf,
    /// The data root every file a source lists must stay inside (canonical), once
    /// [`Model::confined_to`] has checked the paths; `None` for models of the command line.
    pub confinement: Option<PathBuf>,
    /// The `s3://` prefix of a tenant whose data root is in object storage: relative source
    /// paths resolve under it and every file a source lists must stay inside it (set by
    /// [`Model::confined_to_root`]; `base_dir` is then unused).
    pub prefix: Option<S3Prefix>,
    /// The object stores the sources are read through (`s3://` URLs).
    pub stores: Arc<ObjectStores>,
    object_index: HashMap<String, usize>,
}

/// A bucket and a key prefix in it (empty, or ending in `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Prefix {
    /// The bucket.
    pub bucket: String,
    /// The key prefix: empty for the whole bucket, else ending in `/`.
    pub key: String,
}

impl S3Prefix {
    /// The prefix as a URL text, `s3://bucket/key`.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

impl Model {
    /// Reads and parses a model file; relative source paths resolve against its directory.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Unreadable { path: path.display().to_string(), message: e.to_string() })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        Self::from_json(&text, &base)
    }

    /// Parses a model document; relative source paths resolve against `base_dir`.
    pub fn from_json(text: &str, base_dir: &Path) -> Result<Self> {
        let value = parse_document(text).map_err(|m| Error::invalid_model("", m))?;
        Self::from_value(&value, base_dir)
    }

    /// Parses a model from a JSON value.
    pub fn from_value(value: &Value, base_dir: &Path) -> Result<Self> {
        let map = value.as_object().ok_or_else(|| Error::invalid_model("", format!("a model is a JSON object, not {}", type_name(value))))?;
        if let Some(k) = unknown_key(map, &["objects", "relationships", "guardrails"]) {
            return Err(Error::invalid_model(k, "unknown key (a model has objects, relationships, guardrails)"));
        }
        let objects_value = map.get("objects").ok_or_else(|| Error::invalid_model("objects", "required"))?;
        let objects_array =
            objects_value.as_array().ok_or_else(|| Error::invalid_model("objects", format!("must be an array, not {}", type_name(objects_value))))?;
        if objects_array.is_empty() {
            return Err(Error::invalid_model("objects", "a model needs at least one object"));
        }
        let mut objects = Vec::with_capacity(objects_array.len());
        let mut object_index = HashMap::with_capacity(objects_array.len());
        for (i, o) in objects_array.iter().enumerate() {
            let place = index_place("objects", i);
            let object = parse_object(o, &place)?;
            if object_index.insert(object.name.clone(), i).is_some() {
                return Err(Error::invalid_model(key_place(&place, "name"), format!("{:?} names another object already", object.name)));
            }
            objects.push(object);
        }

        let mut relationships = Vec::new();
        if let Some(rels) = map.get("relationships") {
            let rels = rels.as_array().ok_or_else(|| Error::invalid_model("relationships", format!("must be an array, not {}", type_name(rels))))?;
            let mut seen = HashMap::new();
            for (i, r) in rels.iter().enumerate() {
                let place = index_place("relationships", i);
                let rel = parse_relationship(r, &place, &objects, &object_index)?;
                if seen.insert(rel.name.clone(), i).is_some() {
                    return Err(Error::invalid_model(key_place(&place, "name"), format!("{:?} names another relationship already", rel.name)));
                }
                relationships.push(rel);
            }
        }

        let guardrails = match map.get("guardrails") {
            None | Some(Value::Null) => Guardrails::default(),
            Some(g) => parse_guardrails(g)?,
        };

        Ok(Model {
            objects,
            relationships,
            guardrails,
            base_dir: base_dir.to_path_buf(),
            confinement: None,
            prefix: None,
            stores: Arc::new(ObjectStores::default()),
            object_index,
        })
    }

    /// Pins Iceberg sources to snapshots, by object name (what a re-run of a job reads: the
    /// snapshots its first attempt read). Names of other objects are ignored.
    pub fn pin_snapshots<'a>(mut self, pins: impl IntoIterator<Item = (&'a str, i64)>) -> Self {
        for (name, id) in pins {
            if let Some(&i) = self.object_index.get(name)
                && self.objects[i].source.format == SourceFormat::Iceberg
            {
                self.objects[i].source.snapshot_id = Some(id);
            }
        }
        self
    }

    /// The Iceberg sources named in a catalog: object index, catalog, `namespace.table`.
    pub fn catalog_tables(&self) -> Vec<(usize, String, String)> {
        self.objects.iter().enumerate().filter_map(|(i, o)| o.source.table.clone().map(|(c, t)| (i, c, t))).collect()
    }

    /// Resolves object `index`'s catalog table to `location`, its metadata file as the
    /// catalog names it (`s3://…`, `file://…` or an absolute path). For a confined model the
    /// location must lie inside the data root; it becomes a path relative to it.
    pub fn resolve_table(mut self, index: usize, location: &str) -> Result<Self> {
        let place = format!("objects[{index}].source.table");
        if index >= self.objects.len() {
            return Err(Error::invalid_model(place, "no such object"));
        }
        let outside = || Error::invalid_model(&place, format!("the catalog's table is at {location:?}, outside the tenant's data root: refused"));
        let path = if let Some(prefix) = &self.prefix {
            let root = prefix.url();
            let relative = location.replacen("s3a://", "s3://", 1).strip_prefix(&root).map(str::to_string).ok_or_else(outside)?;
            if escapes_root(&relative) {
                return Err(outside());
            }
            relative
        } else if let Some(root) = &self.confinement {
            let local = location.strip_prefix("file://").unwrap_or(location);
            let real = Path::new(local).canonicalize().map_err(|e| Error::invalid_model(&place, format!("the catalog's table at {location:?}: {e}")))?;
            real.strip_prefix(root).map_err(|_| outside())?.display().to_string()
        } else {
            location.to_string()
        };
        self.objects[index].source.path = path;
        self.objects[index].source.table = None;
        Ok(self)
    }

    /// Whether a source is pinned to a snapshot.
    pub fn pinned(&self) -> bool {
        self.objects.iter().any(|o| o.source.snapshot_id.is_some())
    }

    /// The model read through `stores` (the settings of its `s3://` sources).
    pub fn with_stores(mut self, stores: Arc<ObjectStores>) -> Self {
        self.stores = stores;
        self
    }

    /// Binds a model a tenant sent to the tenant's data root and confines it there: a local
    /// folder ([`Model::confined_to`]) or an `s3://bucket/prefix/`, under which every relative
    /// source path resolves and every listed file must stay (no absolute paths, no URLs, no
    /// `..`).
    pub fn confined_to_root(mut self, root: &str) -> Result<Self> {
        let Some((bucket, key)) = crate::storage::split_s3(root) else {
            self.base_dir = PathBuf::from(root);
            return self.confined_to(Path::new(root));
        };
        for (i, object) in self.objects.iter().enumerate() {
            if escapes_root(&object.source.path) {
                return Err(Error::invalid_model(
                    format!("objects[{i}].source.path"),
                    format!("{:?} leaves the tenant's data root: use a path relative to it, without \"..\"", object.source.path),
                ));
            }
        }
        self.prefix = Some(S3Prefix { bucket, key });
        Ok(self)
    }

    /// Checks that every source stays inside `root` (for models sent by tenants): no absolute
    /// paths, no URLs, no `..`, and no symbolic link that leads out of it. The model keeps the
    /// root: [`crate::Catalog::load`] then checks every file a source lists (a link inside a
    /// listed folder, or matched by a glob, that resolves outside the root is refused).
    pub fn confined_to(mut self, root: &Path) -> Result<Self> {
        let root = root.canonicalize().map_err(|e| Error::invalid_model("", format!("the data root {} is not usable: {e}", root.display())))?;
        for (i, object) in self.objects.iter().enumerate() {
            let place = format!("objects[{i}].source.path");
            let path = Path::new(&object.source.path);
            if escapes_root(&object.source.path) {
                return Err(Error::invalid_model(
                    place,
                    format!("{:?} leaves the tenant's data root: use a path relative to it, without \"..\"", object.source.path),
                ));
            }
            // The longest part without glob characters must resolve inside the root.
            let literal: std::path::PathBuf = path.components().take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '['])).collect();
            if let Ok(real) = self.base_dir.join(&literal).canonicalize()
                && !real.starts_with(&root)
            {
                return Err(Error::invalid_model(place, format!("{:?} is a link that leads out of the tenant's data root", object.source.path)));
            }
        }
        self.confinement = Some(root);
        Ok(self)
    }

    /// The object called `name`, with its index.
    pub fn object(&self, name: &str) -> Option<(usize, &ObjectDef)> {
        self.object_index.get(name).map(|&i| (i, &self.objects[i]))
    }

    /// The names of all objects, for suggestions.
    pub fn object_names(&self) -> impl Iterator<Item = &str> {
        self.objects.iter().map(|o| o.name.as_str())
    }
}

/// Whether a source path could leave a data root: a URL, an absolute path, or one with `..`.
fn escapes_root(text: &str) -> bool {
    let path = Path::new(text);
    text.contains("://") || path.is_absolute() || path.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
}

fn get_name(map: &serde_json::Map<String, Value>, key: &str, place: &str, what: &str) -> Result<String> {
    let at = key_place(place, key);
    let value = map.get(key).ok_or_else(|| Error::invalid_model(&at, "required"))?;
    let name = value.as_str().ok_or_else(|| Error::invalid_model(&at, format!("must be a string, not {}", type_name(value))))?;
    if name.starts_with(RESERVED_PREFIX) {
        return Err(Error::invalid_model(at, format!("{name:?}: names starting with {:?} are reserved", RESERVED_PREFIX)));
    }
    if !is_valid_name(name) {
        return Err(Error::invalid_model(at, format!("{name:?} is not a valid {what} name (letters, digits and _, not starting with a digit, at most 128)")));
    }
    Ok(name.to_string())
}

fn parse_object(value: &Value, place: &str) -> Result<ObjectDef> {
    let map = value.as_object().ok_or_else(|| Error::invalid_model(place, format!("an object is a JSON object, not {}", type_name(value))))?;
    if let Some(k) = unknown_key(map, &["name", "primary_key", "source", "fields"]) {
        return Err(Error::invalid_model(key_place(place, k), "unknown key (an object has name, primary_key, source, fields)"));
    }
    let name = get_name(map, "name", place, "object")?;
    let primary_key = get_name(map, "primary_key", place, "field")?;

    let source_place = key_place(place, "source");
    let source_value = map.get("source").ok_or_else(|| Error::invalid_model(&source_place, "required"))?;
    let source_map =
        source_value.as_object().ok_or_else(|| Error::invalid_model(&source_place, format!("must be an object, not {}", type_name(source_value))))?;
    if let Some(k) = unknown_key(source_map, &["format", "path", "snapshot_id", "catalog", "table"]) {
        return Err(Error::invalid_model(
            key_place(&source_place, k),
            "unknown key (a source has format and path; an iceberg one may have snapshot_id, or catalog and table instead of path)",
        ));
    }
    let format = match source_map.get("format").and_then(Value::as_str) {
        Some("parquet") => SourceFormat::Parquet,
        Some("csv") => SourceFormat::Csv,
        Some("iceberg") => SourceFormat::Iceberg,
        Some(other) => {
            return Err(Error::invalid_model(key_place(&source_place, "format"), format!("{other:?} is not a format (parquet, csv or iceberg)")));
        }
        None => return Err(Error::invalid_model(key_place(&source_place, "format"), "required: \"parquet\", \"csv\" or \"iceberg\"")),
    };
    let snapshot_id = match source_map.get("snapshot_id") {
        None | Some(Value::Null) => None,
        Some(v) if format != SourceFormat::Iceberg => {
            return Err(Error::invalid_model(key_place(&source_place, "snapshot_id"), format!("{v}: only an iceberg source has snapshots")));
        }
        Some(v) => {
            Some(v.as_i64().ok_or_else(|| Error::invalid_model(key_place(&source_place, "snapshot_id"), format!("must be an integer snapshot id, not {v}")))?)
        }
    };
    let table = match (source_map.get("catalog"), source_map.get("table")) {
        (None, None) => None,
        (Some(Value::String(c)), Some(Value::String(t))) if format == SourceFormat::Iceberg => {
            let valid_table = t.split('.').count() >= 2 && t.split('.').all(|part| !part.trim().is_empty());
            if c.trim().is_empty() || !valid_table {
                return Err(Error::invalid_model(
                    key_place(&source_place, "table"),
                    format!("catalog {c:?} and table {t:?}: a catalog name and a table as namespace.table"),
                ));
            }
            if source_map.contains_key("path") {
                return Err(Error::invalid_model(key_place(&source_place, "path"), "a table from a catalog has no path (the catalog knows where it is)"));
            }
            Some((c.clone(), t.clone()))
        }
        (Some(_), Some(_)) if format != SourceFormat::Iceberg => {
            return Err(Error::invalid_model(key_place(&source_place, "catalog"), "only an iceberg source comes from a catalog"));
        }
        _ => return Err(Error::invalid_model(key_place(&source_place, "catalog"), "a table from a catalog needs both catalog and table, as strings")),
    };
    let path = match source_map.get("path") {
        None if table.is_some() => String::new(),
        Some(Value::String(p)) if !p.trim().is_empty() => p.clone(),
        Some(Value::String(_)) => return Err(Error::invalid_model(key_place(&source_place, "path"), "must not be empty")),
        Some(other) => {
            return Err(Error::invalid_model(key_place(&source_place, "path"), format!("must be a string, not {}", type_name(other))));
        }
        None => return Err(Error::invalid_model(key_place(&source_place, "path"), "required")),
    };

    let fields = match map.get("fields") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let fields_place = key_place(place, "fields");
            let mut fields: Vec<Field> = Vec::with_capacity(items.len());
            for (j, f) in items.iter().enumerate() {
                let fplace = index_place(&fields_place, j);
                let fmap = f.as_object().ok_or_else(|| Error::invalid_model(&fplace, format!("a field is an object, not {}", type_name(f))))?;
                if let Some(k) = unknown_key(fmap, &["name", "type"]) {
                    return Err(Error::invalid_model(key_place(&fplace, k), "unknown key (a field has name, type)"));
                }
                let fname = get_name(fmap, "name", &fplace, "field")?;
                let type_place = key_place(&fplace, "type");
                let tname = fmap
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::invalid_model(&type_place, "required: string, int, float, bool, date or timestamp"))?;
                let field_type = FieldType::parse(tname).ok_or_else(|| {
                    Error::invalid_model(
                        &type_place,
                        format!(
                            "{tname:?} is not a type (string, int, float, bool, date, timestamp){}",
                            did_you_mean(tname, ["string", "int", "float", "bool", "date", "timestamp"])
                        ),
                    )
                })?;
                if fields.iter().any(|x| x.name == fname) {
                    return Err(Error::invalid_model(key_place(&fplace, "name"), format!("{fname:?} names another field of {name:?} already")));
                }
                fields.push(Field { name: fname, field_type });
            }
            Some(fields)
        }
        Some(other) => {
            return Err(Error::invalid_model(key_place(place, "fields"), format!("must be an array, not {}", type_name(other))));
        }
    };

    if let Some(fields) = &fields {
        check_primary_key(&name, &primary_key, fields, &key_place(place, "primary_key"))?;
    }
    Ok(ObjectDef { name, primary_key, source: Source { format, path, snapshot_id, table }, fields })
}

/// The primary key must be a declared `string` or `int` field.
pub(crate) fn check_primary_key(object: &str, primary_key: &str, fields: &[Field], place: &str) -> Result<()> {
    match fields.iter().find(|f| f.name == primary_key) {
        None => Err(Error::invalid_model(
            place,
            format!("{primary_key:?} is not a field of {object:?}{}", did_you_mean(primary_key, fields.iter().map(|f| f.name.as_str()))),
        )),
        Some(f) if !matches!(f.field_type, FieldType::String | FieldType::Int) => {
            Err(Error::invalid_model(place, format!("{primary_key:?} is a {} field; a primary key must be string or int", f.field_type.name())))
        }
        Some(_) => Ok(()),
    }
}

fn parse_relationship(value: &Value, place: &str, objects: &[ObjectDef], index: &HashMap<String, usize>) -> Result<Relationship> {
    let map = value.as_object().ok_or_else(|| Error::invalid_model(place, format!("a relationship is a JSON object, not {}", type_name(value))))?;
    if let Some(k) = unknown_key(map, &["name", "from", "from_field", "to", "to_field"]) {
        return Err(Error::invalid_model(key_place(place, k), "unknown key (a relationship has name, from, from_field, to, to_field)"));
    }
    let name = get_name(map, "name", place, "relationship")?;
    let from = get_name(map, "from", place, "object")?;
    let from_field = get_name(map, "from_field", place, "field")?;
    let to = get_name(map, "to", place, "object")?;
    let to_field = get_name(map, "to_field", place, "field")?;
    for (key, object) in [("from", &from), ("to", &to)] {
        if !index.contains_key(object) {
            return Err(Error::invalid_model(
                key_place(place, key),
                format!("{object:?} is not an object of the model{}", did_you_mean(object, objects.iter().map(|o| o.name.as_str()))),
            ));
        }
    }
    Ok(Relationship { name, from, from_field, to, to_field })
}

fn parse_guardrails(value: &Value) -> Result<Guardrails> {
    let map = value.as_object().ok_or_else(|| Error::invalid_model("guardrails", format!("must be an object, not {}", type_name(value))))?;
    let keys = ["max_hops", "max_depth", "max_related", "max_in_list"];
    if let Some(k) = unknown_key(map, &keys) {
        return Err(Error::invalid_model(key_place("guardrails", k), format!("unknown guardrail{}", did_you_mean(k, keys))));
    }
    let mut g = Guardrails::default();
    for (key, slot) in
        [("max_hops", &mut g.max_hops), ("max_depth", &mut g.max_depth), ("max_related", &mut g.max_related), ("max_in_list", &mut g.max_in_list)]
    {
        if let Some(v) = map.get(key) {
            let n = v
                .as_u64()
                .filter(|n| *n >= 1 && *n <= 1_000_000)
                .ok_or_else(|| Error::invalid_model(key_place("guardrails", key), "must be a whole number from 1 to 1000000"))?;
            *slot = n as usize;
        }
    }
    Ok(g)
}
