//! Writing generated rows: a table's declared schema, a row-at-a-time batch builder and a
//! Parquet part writer that flushes every [`BATCH_ROWS`] rows, so memory stays flat however
//! many rows an object gets. The column types are the executor's own (`FieldType`,
//! `arrow_type`), so what is written is what the catalog expects.

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use indicatif::ProgressBar;
use serde_json::{Value, json};

/// Rows per record batch handed to the Parquet writer.
pub const BATCH_ROWS: usize = 64 * 1024;

/// Rows per Parquet row group (several batches; small enough for parallel scans).
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// The model's field types and their Arrow types are the executor's own.
pub use cohort_executor::{FieldType, arrow_type};

/// An object of a generated model: its name, key, and fields in column order.
#[derive(Debug, Clone)]
pub struct Table {
    /// The object's name; also its folder under the output directory.
    pub name: String,
    /// The primary key field.
    pub primary_key: String,
    /// The fields, in the order the columns are written.
    pub fields: Vec<(String, FieldType)>,
}

impl Table {
    /// A table from static field names.
    pub fn new(name: &str, primary_key: &str, fields: &[(&str, FieldType)]) -> Table {
        Table { name: name.to_string(), primary_key: primary_key.to_string(), fields: fields.iter().map(|(n, t)| (n.to_string(), *t)).collect() }
    }

    /// The Arrow schema of its Parquet files (every column nullable: the data is dirty).
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.fields.iter().map(|(n, t)| Field::new(n, arrow_type(*t), true)).collect::<Vec<_>>()))
    }

    /// The object's entry in `model.json`.
    pub fn model_json(&self) -> Value {
        json!({
            "name": self.name,
            "primary_key": self.primary_key,
            "source": {"format": "parquet", "path": format!("{}/", self.name)},
            "fields": self.fields.iter().map(|(n, t)| json!({"name": n, "type": t.name()})).collect::<Vec<_>>(),
        })
    }
}

/// A relationship of a generated model: `from.from_field = to.to_field`.
#[derive(Debug, Clone)]
pub struct Relationship {
    /// Its name (used in `via`).
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

impl Relationship {
    /// A relationship from string slices.
    pub fn new(name: &str, from: &str, from_field: &str, to: &str, to_field: &str) -> Relationship {
        Relationship { name: name.to_string(), from: from.to_string(), from_field: from_field.to_string(), to: to.to_string(), to_field: to_field.to_string() }
    }

    /// Its entry in `model.json`.
    pub fn model_json(&self) -> Value {
        json!({
            "name": self.name,
            "from": self.from,
            "from_field": self.from_field,
            "to": self.to,
            "to_field": self.to_field,
        })
    }
}

/// One column being filled.
enum Column {
    String(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Column {
    fn new(field_type: FieldType) -> Column {
        match field_type {
            FieldType::String => Column::String(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 12)),
            FieldType::Int => Column::Int(Int64Builder::with_capacity(BATCH_ROWS)),
            FieldType::Float => Column::Float(Float64Builder::with_capacity(BATCH_ROWS)),
            FieldType::Bool => Column::Bool(BooleanBuilder::with_capacity(BATCH_ROWS)),
            FieldType::Date => Column::Date(Date32Builder::with_capacity(BATCH_ROWS)),
            FieldType::Timestamp => Column::Timestamp(TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC")),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::String(b) => Arc::new(b.finish()),
            Column::Int(b) => Arc::new(b.finish()),
            Column::Float(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Column::String(_) => "string",
            Column::Int(_) => "int",
            Column::Float(_) => "float",
            Column::Bool(_) => "bool",
            Column::Date(_) => "date",
            Column::Timestamp(_) => "timestamp",
        }
    }
}

/// Writes one Parquet part file of a table, a row at a time: set every column with the
/// typed setters (columns by index, in the table's field order), then call
/// [`PartWriter::end_row`].
///
/// Setting a column with the wrong type is a bug in a generator and panics.
pub struct PartWriter {
    path: PathBuf,
    schema: SchemaRef,
    columns: Vec<Column>,
    writer: ArrowWriter<BufWriter<File>>,
    pending_rows: usize,
    rows_written: u64,
    progress: ProgressBar,
}

impl fmt::Debug for PartWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartWriter").field("path", &self.path).field("rows_written", &self.rows_written).finish()
    }
}

impl PartWriter {
    /// Creates `dir/<table>/part-<part>.parquet` (the table's folder must exist).
    pub fn create(dir: &Path, table: &Table, part: usize, progress: &ProgressBar) -> anyhow::Result<PartWriter> {
        let path = dir.join(&table.name).join(format!("part-{part}.parquet"));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let schema = table.schema();
        let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).set_max_row_group_row_count(Some(ROW_GROUP_ROWS)).build();
        let writer = ArrowWriter::try_new(BufWriter::with_capacity(1 << 20, file), Arc::clone(&schema), Some(properties))
            .with_context(|| format!("starting the Parquet writer for {}", path.display()))?;
        Ok(PartWriter {
            path,
            columns: table.fields.iter().map(|(_, t)| Column::new(*t)).collect(),
            schema,
            writer,
            pending_rows: 0,
            rows_written: 0,
            progress: progress.clone(),
        })
    }

    fn mismatch(&self, column: usize, wanted: &str) -> ! {
        panic!(
            "datagen bug: column {column} of {} is {}, set as {wanted}",
            self.path.display(),
            self.columns.get(column).map(Column::kind).unwrap_or("missing")
        )
    }

    /// Sets a string column.
    pub fn string(&mut self, column: usize, value: Option<&str>) {
        match self.columns.get_mut(column) {
            Some(Column::String(b)) => b.append_option(value),
            _ => self.mismatch(column, "string"),
        }
    }

    /// Sets a string column to formatted text, without an intermediate allocation.
    pub fn string_fmt(&mut self, column: usize, args: fmt::Arguments<'_>) {
        match self.columns.get_mut(column) {
            Some(Column::String(b)) => {
                // Writing into a StringBuilder cannot fail; `append_value("")` ends the value.
                let _ = fmt::Write::write_fmt(b, args);
                b.append_value("");
            }
            _ => self.mismatch(column, "string"),
        }
    }

    /// Sets an int column.
    pub fn int(&mut self, column: usize, value: Option<i64>) {
        match self.columns.get_mut(column) {
            Some(Column::Int(b)) => b.append_option(value),
            _ => self.mismatch(column, "int"),
        }
    }

    /// Sets a float column.
    pub fn float(&mut self, column: usize, value: Option<f64>) {
        match self.columns.get_mut(column) {
            Some(Column::Float(b)) => b.append_option(value),
            _ => self.mismatch(column, "float"),
        }
    }

    /// Sets a bool column.
    pub fn bool(&mut self, column: usize, value: Option<bool>) {
        match self.columns.get_mut(column) {
            Some(Column::Bool(b)) => b.append_option(value),
            _ => self.mismatch(column, "bool"),
        }
    }

    /// Sets a date column (days since 1970-01-01).
    pub fn date(&mut self, column: usize, value: Option<i32>) {
        match self.columns.get_mut(column) {
            Some(Column::Date(b)) => b.append_option(value),
            _ => self.mismatch(column, "date"),
        }
    }

    /// Sets a timestamp column (microseconds since the epoch, UTC).
    pub fn timestamp(&mut self, column: usize, value: Option<i64>) {
        match self.columns.get_mut(column) {
            Some(Column::Timestamp(b)) => b.append_option(value),
            _ => self.mismatch(column, "timestamp"),
        }
    }

    /// Ends the current row; writes a batch every [`BATCH_ROWS`] rows.
    pub fn end_row(&mut self) -> anyhow::Result<()> {
        self.pending_rows += 1;
        if self.pending_rows >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        let batch =
            RecordBatch::try_new(Arc::clone(&self.schema), arrays).with_context(|| format!("building a batch for {} (datagen bug)", self.path.display()))?;
        self.writer.write(&batch).with_context(|| format!("writing {}", self.path.display()))?;
        self.progress.inc(self.pending_rows as u64);
        self.rows_written += self.pending_rows as u64;
        self.pending_rows = 0;
        Ok(())
    }

    /// Writes the last batch and the footer; returns the number of rows in the file.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        self.flush()?;
        let path = self.path.clone();
        let inner = self.writer.into_inner().with_context(|| format!("closing {}", path.display()))?;
        inner.into_inner().map_err(|e| e.into_error()).with_context(|| format!("flushing {}", path.display()))?;
        Ok(self.rows_written)
    }
}
