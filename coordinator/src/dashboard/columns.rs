//! Outputs that are JSON objects, offered as columns (pure; no I/O).
//!
//! A first pass over the dataset feeds each output to a [`ColumnScan`],
//! which keeps the union of the objects' top-level keys (at most
//! [`MAX_COLUMNS`], keys of at most [`MAX_KEY`] bytes: memory stays small
//! whatever the dataset) and the kinds of value seen under each. Its
//! [`Columns`] then name and type one column per key for the second,
//! streaming pass: [`csv_cell`] for the CSV export with `columns=json`,
//! [`Cell`] for the Parquet export.
//!
//! Typing by the values seen (nulls aside): only booleans make a boolean
//! column; only integers that fit an `i64`, an integer column; numbers
//! with at least one non-integer (or an integer beyond `i64`), a float
//! column; anything else (strings, nested arrays and objects, mixed kinds)
//! a text column, where strings stand as they are and other values as
//! their JSON text. A row whose output is no JSON object, or lacks the
//! key, has an empty cell (null in Parquet); its `output` column keeps the
//! output whole either way. A value that does not fit its column's type
//! (a row validated between the two passes) is null there.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Most columns made of JSON keys; later keys are counted in
/// [`Columns::dropped_keys`] and left in `output`.
pub const MAX_COLUMNS: usize = 256;
/// Longest key made into a column, in bytes.
pub const MAX_KEY: usize = 256;
/// Longest column name, in bytes (a longer key is cut, then told apart).
pub const MAX_NAME: usize = 64;

/// The provenance columns every export has; JSON columns never take
/// their names.
pub const FIXED_COLUMNS: &[&str] = &[
    "job",
    "unit",
    "name",
    "input_hash",
    "module_hash",
    "output_hash",
    "hosts",
    "engines",
    "fuel",
    "validated_ms",
    "output",
    "output_bytes",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Bool,
    Int,
    Float,
    Text,
}

/// One JSON key as a column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The key in the outputs.
    pub key: String,
    /// The column's name: the key, cleaned of control characters, cut to
    /// [`MAX_NAME`] bytes and made unique.
    pub name: String,
    pub ty: ColumnType,
}

/// The JSON columns of a dataset, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Columns {
    pub columns: Vec<Column>,
    /// Keys seen but not made into columns (past [`MAX_COLUMNS`], or
    /// longer than [`MAX_KEY`]), counted once per row they appear in.
    pub dropped_keys: u64,
    /// Rows whose output is a JSON object.
    pub object_rows: u64,
}

/// Kinds of value seen under one key.
#[derive(Clone, Copy, Debug, Default)]
struct Kinds {
    bool: bool,
    int: bool,
    float: bool,
    other: bool,
}

/// The first pass: the union of keys and their kinds.
#[derive(Debug, Default)]
pub struct ColumnScan {
    keys: BTreeMap<String, Kinds>,
    dropped_keys: u64,
    object_rows: u64,
}

/// `output` as a JSON object, if it is one (whitespace around it allowed).
pub fn object(output: &[u8]) -> Option<Map<String, Value>> {
    let start = output.iter().position(|b| !b.is_ascii_whitespace())?;
    if output[start] != b'{' {
        return None;
    }
    serde_json::from_slice(output).ok()
}

impl ColumnScan {
    pub fn add(&mut self, output: &[u8]) {
        let Some(obj) = object(output) else { return };
        self.object_rows += 1;
        for (k, v) in obj {
            if !self.keys.contains_key(&k) {
                if self.keys.len() >= MAX_COLUMNS || k.len() > MAX_KEY {
                    self.dropped_keys += 1;
                    continue;
                }
                self.keys.insert(k.clone(), Kinds::default());
            }
            let Some(kinds) = self.keys.get_mut(&k) else {
                continue;
            };
            match v {
                Value::Null => {}
                Value::Bool(_) => kinds.bool = true,
                Value::Number(n) if n.as_i64().is_some() => kinds.int = true,
                Value::Number(_) => kinds.float = true,
                Value::String(_) | Value::Array(_) | Value::Object(_) => kinds.other = true,
            }
        }
    }

    pub fn finish(self) -> Columns {
        let bases: Vec<String> = self.keys.keys().map(|k| base_name(k)).collect();
        let clean = |b: &String| {
            !FIXED_COLUMNS.contains(&b.as_str()) && bases.iter().filter(|o| *o == b).count() == 1
        };
        // Names that need no suffix are kept first, so `unit` (a
        // provenance column) becomes `unit_3` when a key `unit_2` exists.
        let mut taken: Vec<String> = FIXED_COLUMNS.iter().map(|s| s.to_string()).collect();
        taken.extend(bases.iter().filter(|b| clean(b)).cloned());
        let columns = self
            .keys
            .into_iter()
            .zip(&bases)
            .map(|((key, k), base)| {
                let ty = match (k.bool, k.int, k.float, k.other) {
                    (true, false, false, false) => ColumnType::Bool,
                    (false, true, false, false) => ColumnType::Int,
                    (false, _, true, false) => ColumnType::Float,
                    _ => ColumnType::Text,
                };
                let name = if clean(base) {
                    base.clone()
                } else {
                    let n = unique_name(base, &taken);
                    taken.push(n.clone());
                    n
                };
                Column { key, name, ty }
            })
            .collect();
        Columns {
            columns,
            dropped_keys: self.dropped_keys,
            object_rows: self.object_rows,
        }
    }
}

/// `key` cleaned for a column name: control characters become `_`, it is
/// cut to [`MAX_NAME`] bytes, and an empty key is `_`.
fn base_name(key: &str) -> String {
    let mut base: String = key
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    peergrid_proto::text::truncate(&mut base, MAX_NAME);
    if base.is_empty() {
        base.push('_');
    }
    base
}

/// `base` (see [`base_name`]) as a name not in `taken`: itself if free,
/// else with `_2`, `_3`, … (cut to stay within [`MAX_NAME`]).
fn unique_name(base: &str, taken: &[String]) -> String {
    let free = |n: &str| !taken.iter().any(|t| t == n);
    if free(base) {
        return base.to_string();
    }
    (2u64..)
        .map(|i| {
            let suffix = format!("_{i}");
            let mut n = base.to_string();
            peergrid_proto::text::truncate(&mut n, MAX_NAME - suffix.len());
            n.push_str(&suffix);
            n
        })
        .find(|n| free(n))
        .unwrap_or_else(|| base.to_string())
}

/// A CSV cell for `value` (absent: empty): strings as they are, other
/// values as JSON text, null as empty.
pub fn csv_cell(value: Option<&Value>) -> Cow<'_, str> {
    match value {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(v) => Cow::Owned(v.to_string()),
    }
}

/// A typed cell for the Parquet export.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(Cow<'a, str>),
}

/// `value` in a column of type `ty`; `Null` when absent, null, or of a
/// kind the column cannot hold.
pub fn cell(ty: ColumnType, value: Option<&Value>) -> Cell<'_> {
    match (ty, value) {
        (_, None | Some(Value::Null)) => Cell::Null,
        (ColumnType::Bool, Some(Value::Bool(b))) => Cell::Bool(*b),
        (ColumnType::Int, Some(Value::Number(n))) => n.as_i64().map_or(Cell::Null, Cell::Int),
        (ColumnType::Float, Some(Value::Number(n))) => n.as_f64().map_or(Cell::Null, Cell::Float),
        (ColumnType::Text, Some(v)) => Cell::Text(csv_cell(Some(v))),
        _ => Cell::Null,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn scan(outputs: &[&str]) -> Columns {
        let mut s = ColumnScan::default();
        for o in outputs {
            s.add(o.as_bytes());
        }
        s.finish()
    }

    fn types(c: &Columns) -> Vec<(&str, ColumnType)> {
        c.columns.iter().map(|c| (c.name.as_str(), c.ty)).collect()
    }

    #[test]
    fn keys_are_unioned_and_typed_by_the_values_seen() {
        let c = scan(&[
            "{\"snr\": 3, \"freq\": 1.5, \"ok\": true, \"tag\": \"a\", \"n\": null}\n",
            "{\"snr\": 4, \"freq\": 2, \"ok\": false, \"tag\": 5, \"extra\": [1, 2]}",
            "not json",
            "[1, 2]",
            "  {\"n\": 1e400}",
            "{\"big\": 18446744073709551615}",
        ]);
        assert_eq!(
            types(&c),
            [
                ("big", ColumnType::Float),
                ("extra", ColumnType::Text),
                ("freq", ColumnType::Float),
                ("n", ColumnType::Text),
                ("ok", ColumnType::Bool),
                ("snr", ColumnType::Int),
                ("tag", ColumnType::Text),
            ]
        );
        // "  {\"n\": 1e400}" is not valid JSON for serde_json (out of range).
        assert_eq!(c.object_rows, 3);
        assert_eq!(c.dropped_keys, 0);
    }

    #[test]
    fn columns_are_bounded_in_number_and_key_length() {
        let mut s = ColumnScan::default();
        let many: Map<String, Value> = (0..MAX_COLUMNS + 10)
            .map(|i| (format!("k{i:04}"), Value::from(i)))
            .collect();
        s.add(serde_json::to_string(&many).unwrap().as_bytes());
        s.add(format!("{{\"{}\": 1}}", "x".repeat(MAX_KEY + 1)).as_bytes());
        let c = s.finish();
        assert_eq!(c.columns.len(), MAX_COLUMNS);
        assert_eq!(c.dropped_keys, 11);
        assert!(c.columns.iter().all(|c| c.name.len() <= MAX_NAME));
    }

    #[test]
    fn names_are_clean_and_unique_and_never_a_provenance_column() {
        let c = scan(&[
            "{\"unit\": 1, \"unit_2\": 2, \"a\\u001bb\": 3, \"\": 4, \"output\": 5}",
            &format!("{{\"{0}a\": 1, \"{0}b\": 2}}", "é".repeat(40)),
        ]);
        let names: Vec<&str> = c.columns.iter().map(|c| c.name.as_str()).collect();
        assert!(names.contains(&"_"), "{names:?}");
        assert!(names.contains(&"a_b"), "{names:?}");
        assert!(names.contains(&"unit_3"), "{names:?}");
        assert!(names.contains(&"unit_2"), "{names:?}");
        assert!(names.contains(&"output_2"), "{names:?}");
        let long: Vec<&&str> = names.iter().filter(|n| n.starts_with('é')).collect();
        assert_eq!(long.len(), 2, "{names:?}");
        assert_ne!(long[0], long[1]);
        assert!(long.iter().all(|n| n.len() <= MAX_NAME));
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(!names.iter().any(|n| FIXED_COLUMNS[..2].contains(n)));
    }

    #[test]
    fn cells_follow_their_column_type() {
        let v: Value = serde_json::json!({"i": 3, "f": 2.5, "s": "x", "o": {"a": [1]}, "b": true});
        assert_eq!(cell(ColumnType::Int, v.get("i")), Cell::Int(3));
        assert_eq!(cell(ColumnType::Float, v.get("i")), Cell::Float(3.0));
        assert_eq!(cell(ColumnType::Int, v.get("f")), Cell::Null);
        assert_eq!(cell(ColumnType::Bool, v.get("s")), Cell::Null);
        assert_eq!(cell(ColumnType::Bool, v.get("b")), Cell::Bool(true));
        assert_eq!(
            cell(ColumnType::Text, v.get("o")),
            Cell::Text("{\"a\":[1]}".into())
        );
        assert_eq!(cell(ColumnType::Text, v.get("s")), Cell::Text("x".into()));
        assert_eq!(cell(ColumnType::Text, v.get("missing")), Cell::Null);
        assert_eq!(csv_cell(v.get("s")), "x");
        assert_eq!(csv_cell(v.get("i")), "3");
        assert_eq!(csv_cell(v.get("b")), "true");
        assert_eq!(csv_cell(None), "");
    }
}
