//! Crossing a spec's axes into cells, then filtering (`--only`) and sharding (`--shard I/N`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{BackendKind, DeviceSelector, Precision, Spec};

/// One unit of work: a model, built with a cache (or none) at a precision by a backend on a
/// device, at a batch size.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cell {
    /// Model id.
    pub model: String,
    /// Cache id; `None` for fp32/fp16 cells, which use no cache.
    pub cache: Option<String>,
    /// Device selector as written in the spec (`cpu`, `all`, `0`, `GPU-…`, `name~…`).
    pub device: String,
    /// Precision flag.
    pub precision: Precision,
    /// Backend.
    pub backend: BackendKind,
    /// Batch size.
    pub batch: usize,
}

impl Cell {
    /// The cell's stable key, unique within a matrix:
    /// `model/cache-or-none/device/precision/backend/bN`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}/b{}",
            self.model,
            self.cache.as_deref().unwrap_or("none"),
            self.device,
            self.precision,
            self.backend,
            self.batch
        )
    }

    /// The value of one filter field of this cell.
    fn field(&self, field: FilterField) -> String {
        match field {
            FilterField::Model => self.model.clone(),
            FilterField::Cache => self.cache.clone().unwrap_or_else(|| "none".into()),
            FilterField::Device => self.device.clone(),
            FilterField::Precision => self.precision.to_string(),
            FilterField::Backend => self.backend.to_string(),
            FilterField::Batch => self.batch.to_string(),
        }
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// Expands a spec into all its cells, in a stable order (model, cache, device, precision,
/// backend, batch, as listed in the spec). fp32/fp16 cells take no cache; int8/best cells
/// are made once per cache of the model.
pub fn expand(spec: &Spec) -> Vec<Cell> {
    let devices: Vec<(String, DeviceSelector)> = spec
        .axes
        .devices
        .iter()
        .filter_map(|d| d.parse().ok().map(|s| (d.trim().to_string(), s)))
        .collect();
    let mut cells = Vec::new();
    for model in &spec.models {
        let caches: Vec<&str> = spec.caches_of(&model.id).map(|c| c.id.as_str()).collect();
        let mut cache_choices: Vec<(Option<&str>, Precision)> = Vec::new();
        for &p in &spec.axes.precisions {
            if p.needs_cache() {
                cache_choices.extend(caches.iter().map(|c| (Some(*c), p)));
            } else {
                cache_choices.push((None, p));
            }
        }
        // Group by cache so that a cache's cells sit together: none first, then each cache.
        cache_choices.sort_by_key(|(c, _)| c.map(|c| caches.iter().position(|x| *x == c)));
        for (cache, precision) in cache_choices {
            for (device, selector) in &devices {
                for &backend in &spec.axes.backends {
                    if !backend.runs_on(selector) {
                        continue;
                    }
                    for &batch in &spec.axes.batch_sizes {
                        cells.push(Cell {
                            model: model.id.clone(),
                            cache: cache.map(str::to_string),
                            device: device.clone(),
                            precision,
                            backend,
                            batch,
                        });
                    }
                }
            }
        }
    }
    cells
}

/// A field that `--only` can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterField {
    Model,
    Cache,
    Device,
    Precision,
    Backend,
    Batch,
}

impl FromStr for FilterField {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, FilterError> {
        Ok(match s {
            "model" => FilterField::Model,
            "cache" => FilterField::Cache,
            "device" | "gpu" => FilterField::Device,
            "precision" => FilterField::Precision,
            "backend" => FilterField::Backend,
            "batch" => FilterField::Batch,
            other => return Err(FilterError::UnknownField(other.to_string())),
        })
    }
}

/// Why a filter expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A condition without `=`.
    #[error("filter condition {0:?} is not of the form key=value (e.g. precision=int8)")]
    NotKeyValue(String),
    /// An unknown key.
    #[error("filter key {0:?} is unknown: use model, cache, device (or gpu), precision, backend or batch")]
    UnknownField(String),
}

/// A cell filter: `key=value` conditions separated by commas. Conditions on different keys
/// must all hold; several conditions on one key mean any of those values. Values may use
/// `*` as a wildcard; the cache of fp32/fp16 cells is `none`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    conditions: Vec<(FilterField, String)>,
}

impl Filter {
    /// Parses `model=resnet*,precision=int8,precision=best`.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let mut conditions = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| FilterError::NotKeyValue(part.to_string()))?;
            conditions.push((k.trim().parse()?, v.trim().to_string()));
        }
        Ok(Filter { conditions })
    }

    /// Joins several filters (repeated `--only` flags) into one.
    pub fn and(mut self, other: Filter) -> Filter {
        self.conditions.extend(other.conditions);
        self
    }

    /// Whether the filter lets every cell through.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Whether a cell passes.
    pub fn matches(&self, cell: &Cell) -> bool {
        let mut fields: Vec<FilterField> = self.conditions.iter().map(|(f, _)| *f).collect();
        fields.dedup();
        fields.iter().all(|&field| {
            let value = cell.field(field);
            self.conditions
                .iter()
                .filter(|(f, _)| *f == field)
                .any(|(_, pattern)| glob_match(pattern, &value))
        })
    }
}

impl FilterField {
    fn name(self) -> &'static str {
        match self {
            FilterField::Model => "model",
            FilterField::Cache => "cache",
            FilterField::Device => "device",
            FilterField::Precision => "precision",
            FilterField::Backend => "backend",
            FilterField::Batch => "batch",
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .conditions
            .iter()
            .map(|(k, v)| format!("{}={v}", k.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Why a filter selects no cell of `cells`: each condition whose key has no matching value,
/// with the values the matrix has for that key; or, when every condition matches some cell,
/// that their combination matches none.
pub fn explain_empty(filter: &Filter, cells: &[Cell]) -> String {
    let mut why = Vec::new();
    let mut fields: Vec<FilterField> = filter.conditions.iter().map(|(f, _)| *f).collect();
    fields.dedup();
    for field in fields {
        let mut values: Vec<String> = cells.iter().map(|c| c.field(field)).collect();
        values.sort();
        values.dedup();
        let patterns: Vec<&str> = filter
            .conditions
            .iter()
            .filter(|(f, _)| *f == field)
            .map(|(_, p)| p.as_str())
            .collect();
        if !values
            .iter()
            .any(|v| patterns.iter().any(|p| glob_match(p, v)))
        {
            why.push(format!(
                "{} {} is none of the matrix's: {}",
                field.name(),
                patterns.join(" or "),
                values.join(", ")
            ));
        }
    }
    if why.is_empty() {
        why.push("each condition matches some cell, but no cell matches all of them".into());
    }
    format!(
        "--only {filter} selects no cell of the matrix ({})\nfix: check the ids and values with `calibench plan MATRIX`",
        why.join("; ")
    )
}

/// `*`-only glob matching.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// One of N slices of a cell list, `--shard I/N` with I counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based index of this shard.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("shard {s:?} is not of the form I/N with 1 <= I <= N (e.g. 2/4)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The cells of this shard. Cells are ordered by key and dealt round-robin, so shards
    /// differ in size by at most one, and the split depends only on the set of cells.
    pub fn select(&self, cells: &[Cell]) -> Vec<Cell> {
        let keys: Vec<String> = cells.iter().map(Cell::key).collect();
        let mut order: Vec<usize> = (0..cells.len()).collect();
        order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]));
        let mut mine = vec![false; cells.len()];
        for (rank, &i) in order.iter().enumerate() {
            mine[i] = rank % self.count == self.index - 1;
        }
        // Keep the spec's order within the shard.
        cells
            .iter()
            .zip(mine)
            .filter(|(_, m)| *m)
            .map(|(c, _)| c.clone())
            .collect()
    }
}

/// Expands, filters and shards in one go: what `plan` prints and `run` runs.
pub fn select(spec: &Spec, filter: &Filter, shard: Option<Shard>) -> Vec<Cell> {
    let cells: Vec<Cell> = expand(spec)
        .into_iter()
        .filter(|c| filter.matches(c))
        .collect();
    match shard {
        Some(s) => s.select(&cells),
        None => cells,
    }
}

/// [`select`], refusing a filter that selects nothing (a typo in `--only` must not turn into
/// a run that passes because nothing ran). An empty shard is not an error: more runners than
/// cells leaves some with none.
pub fn select_checked(
    spec: &Spec,
    filter: &Filter,
    shard: Option<Shard>,
) -> Result<Vec<Cell>, String> {
    let all = expand(spec);
    if !filter.is_empty() && !all.iter().any(|c| filter.matches(c)) {
        return Err(explain_empty(filter, &all));
    }
    Ok(select(spec, filter, shard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::path::Path;

    fn spec() -> Spec {
        Spec::parse_str(
            r#"
version = 1
name = "t"
[axes]
precisions = ["fp32", "fp16", "int8", "best"]
backends = ["reference", "cuda"]
devices = ["cpu", "0", "name~H100"]
batch_sizes = [1, 8]
[[models]]
id = "a"
path = "a.onnx"
[[models]]
id = "b"
path = "b.onnx"
[[caches]]
id = "a-h100"
model = "a"
path = "1.cache"
[[caches]]
id = "a-l4"
model = "a"
path = "2.cache"
[[caches]]
id = "b-h100"
model = "b"
path = "3.cache"
"#,
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn expansion_counts() {
        // Per model: (2 precisions without cache + 2 × caches) × (cpu: reference, 2 GPUs: cuda) × 2 batches.
        // a: (2 + 4) × 3 × 2 = 36; b: (2 + 2) × 3 × 2 = 24.
        let cells = expand(&spec());
        assert_eq!(cells.len(), 60);
        let keys: HashSet<String> = cells.iter().map(Cell::key).collect();
        assert_eq!(keys.len(), 60, "keys are unique");
        assert!(keys.contains("a/a-l4/name~H100/int8/cuda/b8"));
        assert!(keys.contains("b/none/cpu/fp16/reference/b1"));
        assert!(!keys
            .iter()
            .any(|k| k.contains("/cpu/") && k.contains("/cuda/")));
        assert!(cells
            .iter()
            .all(|c| c.precision.needs_cache() == c.cache.is_some()));
    }

    #[test]
    fn filters() {
        let cells = expand(&spec());
        let f = Filter::parse("model=a,precision=int8,precision=best,device=cpu").unwrap();
        let picked: Vec<&Cell> = cells.iter().filter(|c| f.matches(c)).collect();
        // 2 precisions × 2 caches × 2 batches on cpu.
        assert_eq!(picked.len(), 8);
        let f = Filter::parse("cache=a-*,batch=8").unwrap();
        assert_eq!(cells.iter().filter(|c| f.matches(c)).count(), 2 * 2 * 3);
        let f = Filter::parse("cache=none").unwrap();
        assert_eq!(cells.iter().filter(|c| f.matches(c)).count(), 2 * 2 * 3 * 2);
        assert!(Filter::parse("").unwrap().is_empty());
        assert_eq!(
            Filter::parse("colour=red"),
            Err(FilterError::UnknownField("colour".into()))
        );
        assert!(matches!(
            Filter::parse("int8"),
            Err(FilterError::NotKeyValue(_))
        ));
    }

    #[test]
    fn glob() {
        assert!(glob_match("a*", "abc"));
        assert!(glob_match("*c", "abc"));
        assert!(glob_match("a*c", "abc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "a-b-c"));
        assert!(!glob_match("a*b*c", "a-c"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(!glob_match("abc", "abcd"));
    }

    #[test]
    fn shard_parsing() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["0/4", "5/4", "1/0", "x/2", "3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn shards_partition_the_cells(n in 1usize..12, drop in proptest::collection::vec(any::<bool>(), 60)) {
            let cells: Vec<Cell> = expand(&spec()).into_iter().zip(drop).filter(|(_, d)| !d).map(|(c, _)| c).collect();
            let mut seen = HashSet::new();
            let mut sizes = Vec::new();
            for i in 1..=n {
                let part = Shard { index: i, count: n }.select(&cells);
                sizes.push(part.len());
                for c in part {
                    prop_assert!(seen.insert(c.key()), "cell in two shards");
                }
            }
            prop_assert_eq!(seen.len(), cells.len());
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(max - min <= 1, "uneven shards {:?}", sizes);
            // Deterministic: the same input gives the same shard.
            prop_assert_eq!(Shard { index: 1, count: n }.select(&cells), Shard { index: 1, count: n }.select(&cells));
        }
    }
}
