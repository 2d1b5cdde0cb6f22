//! Transaction operations (RFC 7047 §5.2) and their results.

use serde_json::{json, Map, Value};

/// A `where` clause element: `[column, function, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition(pub String, pub &'static str, pub Value);

impl Condition {
    /// `column == value`.
    pub fn eq(column: &str, value: impl Into<Value>) -> Condition {
        Condition(column.into(), "==", value.into())
    }
    /// `_uuid == uuid`.
    pub fn uuid(u: &str) -> Condition {
        Condition("_uuid".into(), "==", super::value::uuid(u))
    }
    fn to_json(&self) -> Value {
        json!([self.0, self.1, self.2])
    }
}

/// A mutation: `[column, mutator, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation(pub String, pub &'static str, pub Value);

impl Mutation {
    /// Adds elements to a set or map.
    pub fn insert(column: &str, value: Value) -> Mutation {
        Mutation(column.into(), "insert", value)
    }
    /// Removes elements from a set (or keys from a map).
    pub fn delete(column: &str, value: Value) -> Mutation {
        Mutation(column.into(), "delete", value)
    }
}

/// One operation of a transaction. Field names follow RFC 7047 §5.2.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Inserts a row; `uuid_name` lets later operations refer to it as `["named-uuid", n]`.
    Insert { table: String, row: Map<String, Value>, uuid_name: Option<String> },
    /// Selects rows (all columns unless `columns` is given).
    Select { table: String, conditions: Vec<Condition>, columns: Option<Vec<String>> },
    /// Updates columns of matching rows.
    Update { table: String, conditions: Vec<Condition>, row: Map<String, Value> },
    /// Mutates columns of matching rows.
    Mutate { table: String, conditions: Vec<Condition>, mutations: Vec<Mutation> },
    /// Deletes matching rows.
    Delete { table: String, conditions: Vec<Condition> },
    /// Waits until the matching rows (projected on `columns`) equal or differ from `rows`.
    Wait {
        /// Table.
        table: String,
        /// Which rows.
        conditions: Vec<Condition>,
        /// Columns compared.
        columns: Vec<String>,
        /// `==` or `!=`.
        until: &'static str,
        /// Expected rows.
        rows: Vec<Map<String, Value>>,
        /// Milliseconds (0 = fail at once if not satisfied).
        timeout_ms: Option<u64>,
    },
    /// Asks for a durable commit.
    Commit { durable: bool },
    /// Aborts the transaction.
    Abort,
    /// A comment written to the server's log.
    Comment(String),
}

impl Operation {
    pub(crate) fn to_json(&self) -> Value {
        let conds = |c: &[Condition]| Value::Array(c.iter().map(Condition::to_json).collect());
        match self {
            Operation::Insert { table, row, uuid_name } => {
                let mut o = json!({"op": "insert", "table": table, "row": row});
                if let Some(n) = uuid_name {
                    set(&mut o, "uuid-name", json!(n));
                }
                o
            }
            Operation::Select { table, conditions, columns } => {
                let mut o = json!({"op": "select", "table": table, "where": conds(conditions)});
                if let Some(c) = columns {
                    set(&mut o, "columns", json!(c));
                }
                o
            }
            Operation::Update { table, conditions, row } => json!({"op": "update", "table": table, "where": conds(conditions), "row": row}),
            Operation::Mutate { table, conditions, mutations } => json!({
                "op": "mutate", "table": table, "where": conds(conditions),
                "mutations": mutations.iter().map(|m| json!([m.0, m.1, m.2])).collect::<Vec<_>>(),
            }),
            Operation::Delete { table, conditions } => json!({"op": "delete", "table": table, "where": conds(conditions)}),
            Operation::Wait { table, conditions, columns, until, rows, timeout_ms } => {
                let mut o = json!({"op": "wait", "table": table, "where": conds(conditions), "columns": columns, "until": until, "rows": rows});
                if let Some(t) = timeout_ms {
                    set(&mut o, "timeout", json!(t));
                }
                o
            }
            Operation::Commit { durable } => json!({"op": "commit", "durable": durable}),
            Operation::Abort => json!({"op": "abort"}),
            Operation::Comment(c) => json!({"op": "comment", "comment": c}),
        }
    }
}

/// The result of one successful operation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpResult {
    /// For insert: the new row's uuid.
    pub uuid: Option<String>,
    /// For select: the rows.
    pub rows: Vec<Map<String, Value>>,
    /// For update, mutate, delete: how many rows.
    pub count: Option<u64>,
}

impl OpResult {
    pub(crate) fn from_json(v: &Value) -> OpResult {
        OpResult {
            uuid: v.get("uuid").and_then(|u| super::value::as_uuid(u)).map(str::to_string),
            rows: v.get("rows").and_then(Value::as_array).map(|r| r.iter().filter_map(|x| x.as_object().cloned()).collect()).unwrap_or_default(),
            count: v.get("count").and_then(Value::as_u64),
        }
    }
}

/// Sets a member of a JSON object (a no-op on anything else, which `json!({...})` never is).
fn set(o: &mut Value, key: &str, v: Value) {
    if let Some(m) = o.as_object_mut() {
        m.insert(key.to_string(), v);
    }
}
