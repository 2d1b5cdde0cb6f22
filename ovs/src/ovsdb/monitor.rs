//! Monitors: a replica of the monitored rows, kept current from `update`/`update2`
//! notifications and re-synchronized after a reconnect.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::error::OvsdbError;
use super::schema::{ColumnType, DbSchema};
use super::value::{as_uuid, map_entries, set_elements, string_map_of};

/// A row: column name → value in OVSDB notation. Set columns are always `["set", [...]]` and
/// map columns `["map", [...]]`, whatever form the server used.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row(pub Map<String, Value>);

impl Row {
    /// A column's raw value.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0.get(column)
    }
    /// A string column (or the single element of an optional string column).
    pub fn str(&self, column: &str) -> Option<String> {
        self.get(column).and_then(|v| set_elements(v).first().and_then(|x| x.as_str().map(str::to_string)))
    }
    /// An integer column (or the single element of an optional integer column).
    pub fn int(&self, column: &str) -> Option<i64> {
        self.get(column).and_then(|v| set_elements(v).first().and_then(Value::as_i64))
    }
    /// The uuids in a reference column.
    pub fn uuids(&self, column: &str) -> Vec<String> {
        self.get(column).map(|v| set_elements(v).iter().filter_map(|x| as_uuid(x).map(str::to_string)).collect()).unwrap_or_default()
    }
    /// A string-to-string map column.
    pub fn string_map(&self, column: &str) -> BTreeMap<String, String> {
        self.get(column).map(string_map_of).unwrap_or_default()
    }
}

/// One row change seen by a monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct RowUpdate {
    /// Table.
    pub table: String,
    /// Row uuid.
    pub uuid: String,
    /// The row before (None for an insert).
    pub old: Option<Row>,
    /// The row after (None for a delete).
    pub new: Option<Row>,
}

/// What to monitor in one table.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorRequest {
    /// Table.
    pub table: String,
    /// Columns (None = all).
    pub columns: Option<Vec<String>>,
}

impl MonitorRequest {
    /// All columns of `table`.
    pub fn all(table: &str) -> MonitorRequest {
        MonitorRequest { table: table.into(), columns: None }
    }
}

/// The receiving end of a monitor: batches of row changes, the initial rows first.
#[derive(Debug)]
pub struct Monitor {
    pub(crate) rx: mpsc::UnboundedReceiver<Vec<RowUpdate>>,
}

impl Monitor {
    /// The next batch of changes; `None` once the client has shut down.
    pub async fn next(&mut self) -> Option<Vec<RowUpdate>> {
        self.rx.recv().await
    }

    /// Waits for a change that satisfies `pred`, discarding others.
    pub async fn wait_for(&mut self, timeout: Duration, mut pred: impl FnMut(&RowUpdate) -> bool) -> Result<RowUpdate, OvsdbError> {
        tokio::time::timeout(timeout, async {
            while let Some(batch) = self.rx.recv().await {
                if let Some(u) = batch.into_iter().find(|u| pred(u)) {
                    return Ok(u);
                }
            }
            Err(OvsdbError::Shutdown)
        })
        .await
        .map_err(|_| OvsdbError::Timeout(timeout))?
    }
}

/// The client task's side of a monitor.
pub(crate) struct MonitorState {
    pub(crate) db: String,
    requests: Vec<MonitorRequest>,
    schema: DbSchema,
    cache: HashMap<String, HashMap<String, Row>>,
    tx: mpsc::UnboundedSender<Vec<RowUpdate>>,
}

impl MonitorState {
    pub(crate) fn new(db: String, requests: Vec<MonitorRequest>, schema: DbSchema, tx: mpsc::UnboundedSender<Vec<RowUpdate>>) -> Result<Self, OvsdbError> {
        for r in &requests {
            let cols = schema.tables.get(&r.table).ok_or_else(|| OvsdbError::NotFound(format!("table {} is not in database {db}", r.table)))?;
            for c in r.columns.iter().flatten() {
                if !cols.contains_key(c) && c != "_uuid" && c != "_version" {
                    return Err(OvsdbError::NotFound(format!("column {}.{c} is not in database {db}", r.table)));
                }
            }
        }
        Ok(MonitorState { db, requests, schema, cache: HashMap::new(), tx })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The third parameter of `monitor_cond` / `monitor`.
    pub(crate) fn request_json(&self) -> Value {
        let mut o = Map::new();
        for r in &self.requests {
            let mut req = Map::new();
            if let Some(c) = &r.columns {
                req.insert("columns".into(), json!(c));
            }
            o.insert(r.table.clone(), json!([Value::Object(req)]));
        }
        Value::Object(o)
    }

    fn columns(&self, table: &str) -> Vec<(String, ColumnType)> {
        let Some(cols) = self.schema.tables.get(table) else { return Vec::new() };
        match self.requests.iter().find(|r| r.table == table).and_then(|r| r.columns.clone()) {
            Some(list) => list.into_iter().filter_map(|c| cols.get(&c).map(|t| (c, t.clone()))).collect(),
            None => cols.iter().map(|(c, t)| (c.clone(), t.clone())).collect(),
        }
    }

    fn col_type(&self, table: &str, col: &str) -> Option<&ColumnType> {
        self.schema.tables.get(table)?.get(col)
    }

    /// Normalizes a full row: defaults for omitted columns, canonical set/map form.
    fn full_row(&self, table: &str, raw: &Map<String, Value>) -> Row {
        let mut row = Map::new();
        for (c, t) in self.columns(table) {
            let v = raw.get(&c).map(|v| canonical(&t, v)).unwrap_or_else(|| t.default_value());
            row.insert(c, v);
        }
        Row(row)
    }

    /// Applies the reply to `monitor_cond` / `monitor`: replaces the replica and reports only
    /// what differs from it, so a reconnect shows up as the changes missed meanwhile.
    pub(crate) fn on_initial(&mut self, result: &Value, update2: bool) {
        let mut fresh: HashMap<String, HashMap<String, Row>> = HashMap::new();
        for (table, rows) in result.as_object().into_iter().flatten() {
            let t = fresh.entry(table.clone()).or_default();
            for (uuid, ru) in rows.as_object().into_iter().flatten() {
                let raw = if update2 { ru.get("initial").or_else(|| ru.get("insert")) } else { ru.get("new") };
                if let Some(Value::Object(raw)) = raw {
                    t.insert(uuid.clone(), self.full_row(table, raw));
                }
            }
        }
        let mut out = Vec::new();
        for r in &self.requests {
            let old = self.cache.remove(&r.table).unwrap_or_default();
            let new = fresh.remove(&r.table).unwrap_or_default();
            for (uuid, row) in &new {
                match old.get(uuid) {
                    None => out.push(RowUpdate { table: r.table.clone(), uuid: uuid.clone(), old: None, new: Some(row.clone()) }),
                    Some(o) if o != row => out.push(RowUpdate { table: r.table.clone(), uuid: uuid.clone(), old: Some(o.clone()), new: Some(row.clone()) }),
                    Some(_) => {}
                }
            }
            for (uuid, o) in old {
                if !new.contains_key(&uuid) {
                    out.push(RowUpdate { table: r.table.clone(), uuid, old: Some(o), new: None });
                }
            }
            self.cache.insert(r.table.clone(), new);
        }
        let _ = self.tx.send(out);
    }

    /// Applies an `update` (legacy) or `update2` notification.
    pub(crate) fn on_update(&mut self, updates: &Value, update2: bool) -> Result<(), OvsdbError> {
        let mut out = Vec::new();
        for (table, rows) in updates.as_object().into_iter().flatten() {
            for (uuid, ru) in rows.as_object().into_iter().flatten() {
                let old = self.cache.get(table).and_then(|t| t.get(uuid)).cloned();
                let new = if update2 {
                    if let Some(Value::Object(raw)) = ru.get("insert").or_else(|| ru.get("initial")) {
                        Some(self.full_row(table, raw))
                    } else if let Some(Value::Object(diff)) = ru.get("modify") {
                        let base = old.clone().ok_or_else(|| OvsdbError::Protocol(format!("modify of unknown row {table} {uuid}")))?;
                        Some(self.apply_diff(table, base, diff))
                    } else if ru.get("delete").is_some() {
                        None
                    } else {
                        return Err(OvsdbError::Protocol(format!("row update for {table} {uuid} has no known member")));
                    }
                } else {
                    match ru.get("new") {
                        Some(Value::Object(raw)) => Some(self.full_row(table, raw)),
                        _ => None,
                    }
                };
                let t = self.cache.entry(table.clone()).or_default();
                match &new {
                    Some(r) => {
                        t.insert(uuid.clone(), r.clone());
                    }
                    None => {
                        t.remove(uuid);
                    }
                }
                if old.is_some() || new.is_some() {
                    out.push(RowUpdate { table: table.clone(), uuid: uuid.clone(), old, new });
                }
            }
        }
        if !out.is_empty() {
            let _ = self.tx.send(out);
        }
        Ok(())
    }

    fn apply_diff(&self, table: &str, mut row: Row, diff: &Map<String, Value>) -> Row {
        for (col, d) in diff {
            let Some(t) = self.col_type(table, col) else { continue };
            let cur = row.0.get(col).cloned().unwrap_or_else(|| t.default_value());
            let v = if t.is_scalar() {
                d.clone()
            } else if t.is_map() {
                let mut entries = map_entries(&cur);
                for (k, v) in map_entries(d) {
                    match entries.iter().position(|(ek, _)| *ek == k) {
                        Some(i) if entries.get(i).is_some_and(|e| e.1 == v) => {
                            entries.remove(i);
                        }
                        Some(i) => {
                            if let Some(e) = entries.get_mut(i) {
                                e.1 = v;
                            }
                        }
                        None => entries.push((k, v)),
                    }
                }
                json!(["map", entries.into_iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()])
            } else {
                let mut elems = set_elements(&cur);
                for e in set_elements(d) {
                    match elems.iter().position(|x| *x == e) {
                        Some(i) => {
                            elems.remove(i);
                        }
                        None => elems.push(e),
                    }
                }
                json!(["set", elems])
            };
            row.0.insert(col.clone(), canonical(t, &v));
        }
        row
    }
}

/// Canonical form of a value: sets and maps sorted, a bare atom in a set column wrapped.
fn canonical(t: &ColumnType, v: &Value) -> Value {
    if t.is_scalar() {
        return v.clone();
    }
    if t.is_map() {
        let mut e = map_entries(v);
        e.sort_by_key(|(k, _)| k.to_string());
        return json!(["map", e.into_iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()]);
    }
    let mut e = set_elements(v);
    e.sort_by_key(|x| x.to_string());
    json!(["set", e])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> DbSchema {
        DbSchema::parse(&json!({"name": "db", "version": "1", "tables": {"T": {"columns": {
            "name": {"type": "string"},
            "opt": {"type": {"key": "integer", "min": 0, "max": 1}},
            "tags": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
            "ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
        }}}}))
        .unwrap()
    }

    #[test]
    fn update2_diffs_apply_per_column_kind() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut m = MonitorState::new("db".into(), vec![MonitorRequest::all("T")], schema(), tx).unwrap();
        m.on_initial(&json!({"T": {"u1": {"initial": {"name": "a", "opt": 1, "tags": ["set", ["x", "y"]], "ids": ["map", [["k", "v"], ["z", "1"]]]}}}}), true);
        assert_eq!(rx.try_recv().unwrap().len(), 1);
        m.on_update(
            &json!({"T": {"u1": {"modify": {"name": "b", "opt": ["set", [1, 2]], "tags": "x", "ids": ["map", [["k", "v"], ["z", "2"], ["n", "3"]]]}}}}),
            true,
        )
        .unwrap();
        let u = rx.try_recv().unwrap().pop().unwrap();
        let new = u.new.unwrap();
        assert_eq!(new.str("name").as_deref(), Some("b"));
        assert_eq!(new.int("opt"), Some(2));
        assert_eq!(new.get("tags"), Some(&json!(["set", ["y"]])));
        let ids = new.string_map("ids");
        assert_eq!(ids.get("k"), None);
        assert_eq!(ids.get("z").map(String::as_str), Some("2"));
        assert_eq!(ids.get("n").map(String::as_str), Some("3"));
        // A reconnect that finds the row gone reports a delete.
        m.on_initial(&json!({}), true);
        let d = rx.try_recv().unwrap().pop().unwrap();
        assert!(d.new.is_none() && d.old.is_some());
    }
}
