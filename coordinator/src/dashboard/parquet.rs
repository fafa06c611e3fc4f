//! The Parquet export (`GET /api/v1/jobs/{id}/results?format=parquet`),
//! written with the `parquet` crate's low-level column writers (no Arrow).
//!
//! Columns, typed: `job`, `unit`, `fuel` (INT64), `validated_ms`
//! (INT64, timestamp in milliseconds, UTC), `name` and the three hashes
//! (hex strings), `hosts` and `engines` (lists of strings), `output` (the
//! output as text, exactly the bytes the JSONL export carries; null when
//! it is not UTF-8) and `output_bytes` (the raw bytes of such an output,
//! else null), then one optional column per JSON key of the outputs
//! ([`super::columns`]): BOOLEAN, INT64, DOUBLE or string. The file's
//! key-value metadata carries the job, its licence and citation (JSON) and
//! its `CITATION.cff`.
//!
//! Parquet writes a file front to back, its footer last, so it streams:
//! rows are gathered into a row group of at most [`GROUP_ROWS`] rows and
//! [`GROUP_BYTES`] bytes of outputs, which is written (column after
//! column) and dropped before the next is gathered. Memory stays bounded
//! by one row group whatever the dataset's size. The bytes depend only on
//! the rows, the columns and the metadata, so the manifest's checksum of
//! the file holds for the download.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as Physical};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DataType, DoubleType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::{Type, TypePtr};

use super::columns::{Cell, ColumnType, Columns, object};
use crate::store::DatasetRow;

/// Most rows in one row group.
pub const GROUP_ROWS: usize = 10_000;
/// Most output bytes gathered in one row group (past its first row).
pub const GROUP_BYTES: usize = 32 * 1024 * 1024;

/// One optional column's values and definition levels (1: a value, 0:
/// null).
#[derive(Default)]
struct Optional<T> {
    values: Vec<T>,
    def: Vec<i16>,
}

impl<T> Optional<T> {
    fn push(&mut self, v: Option<T>) {
        match v {
            Some(v) => {
                self.values.push(v);
                self.def.push(1);
            }
            None => self.def.push(0),
        }
    }
}

/// A required list of strings: one level per element (definition 1,
/// repetition 0 for a row's first, 1 for the rest), or one level
/// (definition 0) for an empty list.
#[derive(Default)]
struct List {
    values: Vec<ByteArray>,
    def: Vec<i16>,
    rep: Vec<i16>,
}

impl List {
    fn push(&mut self, items: &[String]) {
        if items.is_empty() {
            self.def.push(0);
            self.rep.push(0);
        }
        for (i, s) in items.iter().enumerate() {
            self.values.push(ByteArray::from(s.as_str()));
            self.def.push(1);
            self.rep.push(i16::from(i > 0));
        }
    }
}

enum JsonColumn {
    Bool(Optional<bool>),
    Int(Optional<i64>),
    Float(Optional<f64>),
    Text(Optional<ByteArray>),
}

impl JsonColumn {
    fn new(ty: ColumnType) -> JsonColumn {
        match ty {
            ColumnType::Bool => JsonColumn::Bool(Optional::default()),
            ColumnType::Int => JsonColumn::Int(Optional::default()),
            ColumnType::Float => JsonColumn::Float(Optional::default()),
            ColumnType::Text => JsonColumn::Text(Optional::default()),
        }
    }

    fn push(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (JsonColumn::Bool(c), Cell::Bool(b)) => c.push(Some(b)),
            (JsonColumn::Int(c), Cell::Int(i)) => c.push(Some(i)),
            (JsonColumn::Float(c), Cell::Float(f)) => c.push(Some(f)),
            (JsonColumn::Text(c), Cell::Text(t)) => c.push(Some(ByteArray::from(t.as_bytes()))),
            (JsonColumn::Bool(c), _) => c.push(None),
            (JsonColumn::Int(c), _) => c.push(None),
            (JsonColumn::Float(c), _) => c.push(None),
            (JsonColumn::Text(c), _) => c.push(None),
        }
    }
}

/// The rows of one row group, column by column.
#[derive(Default)]
struct Group {
    job: Vec<i64>,
    unit: Vec<i64>,
    name: Vec<ByteArray>,
    input_hash: Vec<ByteArray>,
    module_hash: Vec<ByteArray>,
    output_hash: Vec<ByteArray>,
    hosts: List,
    engines: List,
    fuel: Vec<i64>,
    validated_ms: Vec<i64>,
    output: Optional<ByteArray>,
    output_bytes: Optional<ByteArray>,
    json: Vec<JsonColumn>,
    rows: usize,
    bytes: usize,
}

/// Writes a Parquet file row by row into `W`.
pub struct ParquetSink<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    columns: Columns,
    group: Group,
}

fn int(i: u64) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

fn leaf(
    name: &str,
    physical: Physical,
    rep: Repetition,
    logical: Option<LogicalType>,
) -> anyhow::Result<TypePtr> {
    Ok(Arc::new(
        Type::primitive_type_builder(name, physical)
            .with_repetition(rep)
            .with_logical_type(logical)
            .build()?,
    ))
}

fn string_list(name: &str) -> anyhow::Result<TypePtr> {
    let element = leaf(
        "element",
        Physical::BYTE_ARRAY,
        Repetition::REQUIRED,
        Some(LogicalType::String),
    )?;
    let list = Type::group_type_builder("list")
        .with_repetition(Repetition::REPEATED)
        .with_fields(vec![element])
        .build()?;
    Ok(Arc::new(
        Type::group_type_builder(name)
            .with_repetition(Repetition::REQUIRED)
            .with_logical_type(Some(LogicalType::List))
            .with_fields(vec![Arc::new(list)])
            .build()?,
    ))
}

/// The file's schema for `columns`.
fn schema(columns: &Columns) -> anyhow::Result<TypePtr> {
    const REQUIRED: Repetition = Repetition::REQUIRED;
    const OPTIONAL: Repetition = Repetition::OPTIONAL;
    let string = || Some(LogicalType::String);
    let mut fields = vec![
        leaf("job", Physical::INT64, REQUIRED, None)?,
        leaf("unit", Physical::INT64, REQUIRED, None)?,
        leaf("name", Physical::BYTE_ARRAY, REQUIRED, string())?,
        leaf("input_hash", Physical::BYTE_ARRAY, REQUIRED, string())?,
        leaf("module_hash", Physical::BYTE_ARRAY, REQUIRED, string())?,
        leaf("output_hash", Physical::BYTE_ARRAY, REQUIRED, string())?,
        string_list("hosts")?,
        string_list("engines")?,
        leaf("fuel", Physical::INT64, REQUIRED, None)?,
        leaf(
            "validated_ms",
            Physical::INT64,
            REQUIRED,
            Some(LogicalType::timestamp(true, TimeUnit::MILLIS)),
        )?,
        leaf("output", Physical::BYTE_ARRAY, OPTIONAL, string())?,
        leaf("output_bytes", Physical::BYTE_ARRAY, OPTIONAL, None)?,
    ];
    for c in &columns.columns {
        let (physical, logical) = match c.ty {
            ColumnType::Bool => (Physical::BOOLEAN, None),
            ColumnType::Int => (Physical::INT64, None),
            ColumnType::Float => (Physical::DOUBLE, None),
            ColumnType::Text => (Physical::BYTE_ARRAY, string()),
        };
        fields.push(leaf(&c.name, physical, OPTIONAL, logical)?);
    }
    Ok(Arc::new(
        Type::group_type_builder("peergrid_dataset")
            .with_fields(fields)
            .build()?,
    ))
}

/// Writes the next column of `rg`.
fn put<T: DataType, W: Write + Send>(
    rg: &mut SerializedRowGroupWriter<'_, W>,
    values: &[T::T],
    def: Option<&[i16]>,
    rep: Option<&[i16]>,
) -> anyhow::Result<()> {
    let mut column = rg
        .next_column()?
        .context("the Parquet schema has fewer columns than the rows")?;
    column.typed::<T>().write_batch(values, def, rep)?;
    column.close()?;
    Ok(())
}

impl<W: Write + Send> ParquetSink<W> {
    /// Starts a file for rows with the JSON `columns`, with `metadata` as
    /// its key-value metadata.
    pub fn new(
        out: W,
        columns: Columns,
        metadata: Vec<(String, String)>,
    ) -> anyhow::Result<ParquetSink<W>> {
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(GROUP_ROWS))
            .set_key_value_metadata(Some(
                metadata
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .collect(),
            ))
            .build();
        let writer = SerializedFileWriter::new(out, schema(&columns)?, Arc::new(props))?;
        let mut sink = ParquetSink {
            writer,
            columns,
            group: Group::default(),
        };
        sink.group.json = sink.new_json();
        Ok(sink)
    }

    fn new_json(&self) -> Vec<JsonColumn> {
        self.columns
            .columns
            .iter()
            .map(|c| JsonColumn::new(c.ty))
            .collect()
    }

    pub fn push(&mut self, row: &DatasetRow) -> anyhow::Result<()> {
        let g = &mut self.group;
        g.job.push(int(row.job));
        g.unit.push(int(row.unit));
        g.name.push(ByteArray::from(row.name.as_str()));
        g.input_hash
            .push(ByteArray::from(row.input_hash.to_hex().as_str()));
        g.module_hash
            .push(ByteArray::from(row.module_hash.to_hex().as_str()));
        g.output_hash
            .push(ByteArray::from(row.output_hash.to_hex().as_str()));
        g.hosts.push(&row.hosts);
        g.engines.push(&row.engines);
        g.fuel.push(int(row.fuel));
        g.validated_ms.push(int(row.validated_ms));
        let text = std::str::from_utf8(&row.output).is_ok();
        let bytes = || ByteArray::from(row.output.clone());
        g.output.push(text.then(bytes));
        g.output_bytes.push((!text).then(bytes));
        let obj = if self.columns.columns.is_empty() {
            None
        } else {
            object(&row.output)
        };
        for (c, col) in self.columns.columns.iter().zip(&mut g.json) {
            let value = obj.as_ref().and_then(|o| o.get(&c.key));
            col.push(super::columns::cell(c.ty, value));
        }
        g.rows += 1;
        g.bytes += row.output.len() + row.name.len();
        if g.rows >= GROUP_ROWS || g.bytes >= GROUP_BYTES {
            self.write_group()?;
        }
        Ok(())
    }

    /// Writes the gathered rows as one row group and empties the buffer.
    fn write_group(&mut self) -> anyhow::Result<()> {
        if self.group.rows == 0 {
            return Ok(());
        }
        let fresh = Group {
            json: self.new_json(),
            ..Group::default()
        };
        let g = std::mem::replace(&mut self.group, fresh);
        let mut rg = self.writer.next_row_group()?;
        put::<Int64Type, _>(&mut rg, &g.job, None, None)?;
        put::<Int64Type, _>(&mut rg, &g.unit, None, None)?;
        for strings in [&g.name, &g.input_hash, &g.module_hash, &g.output_hash] {
            put::<ByteArrayType, _>(&mut rg, strings, None, None)?;
        }
        for list in [&g.hosts, &g.engines] {
            put::<ByteArrayType, _>(&mut rg, &list.values, Some(&list.def), Some(&list.rep))?;
        }
        put::<Int64Type, _>(&mut rg, &g.fuel, None, None)?;
        put::<Int64Type, _>(&mut rg, &g.validated_ms, None, None)?;
        for o in [&g.output, &g.output_bytes] {
            put::<ByteArrayType, _>(&mut rg, &o.values, Some(&o.def), None)?;
        }
        for col in &g.json {
            match col {
                JsonColumn::Bool(o) => put::<BoolType, _>(&mut rg, &o.values, Some(&o.def), None)?,
                JsonColumn::Int(o) => put::<Int64Type, _>(&mut rg, &o.values, Some(&o.def), None)?,
                JsonColumn::Float(o) => {
                    put::<DoubleType, _>(&mut rg, &o.values, Some(&o.def), None)?
                }
                JsonColumn::Text(o) => {
                    put::<ByteArrayType, _>(&mut rg, &o.values, Some(&o.def), None)?
                }
            }
        }
        rg.close()?;
        Ok(())
    }

    /// Writes what is gathered and the footer.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.write_group()?;
        self.writer.close()?;
        Ok(())
    }
}
