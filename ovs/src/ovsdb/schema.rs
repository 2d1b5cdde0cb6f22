//! The parts of a database schema the client needs: each column's type, to apply `update2`
//! differences and to fill in default values the server omits.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::error::OvsdbError;

/// A column's type, reduced to what decides how its values combine.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnType {
    /// Key atomic type (`integer`, `real`, `boolean`, `string`, `uuid`).
    pub key: String,
    /// Value atomic type, for maps.
    pub value: Option<String>,
    /// Minimum number of elements.
    pub min: u64,
    /// Maximum number of elements (`u64::MAX` = unlimited).
    pub max: u64,
}

impl ColumnType {
    /// A single value (min 1, max 1, not a map): `update2` sends the new value, not a
    /// difference.
    pub fn is_scalar(&self) -> bool {
        self.min == 1 && self.max == 1 && self.value.is_none()
    }

    /// A map column.
    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    /// The value a column has when the server omits it.
    pub fn default_value(&self) -> Value {
        if self.is_map() {
            return json!(["map", []]);
        }
        if !self.is_scalar() {
            return json!(["set", []]);
        }
        match self.key.as_str() {
            "integer" => json!(0),
            "real" => json!(0.0),
            "boolean" => json!(false),
            "uuid" => json!(["uuid", "00000000-0000-0000-0000-000000000000"]),
            _ => json!(""),
        }
    }

    fn parse(v: &Value) -> Result<ColumnType, OvsdbError> {
        let atomic = |x: &Value| -> Option<String> {
            match x {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("type").and_then(Value::as_str).map(str::to_string),
                _ => None,
            }
        };
        match v {
            Value::String(s) => Ok(ColumnType { key: s.clone(), value: None, min: 1, max: 1 }),
            Value::Object(o) => {
                let key = o.get("key").and_then(atomic).ok_or_else(|| OvsdbError::Protocol("column type without key".into()))?;
                let value = o.get("value").and_then(atomic);
                let min = o.get("min").and_then(Value::as_u64).unwrap_or(1);
                let max = match o.get("max") {
                    Some(Value::String(s)) if s == "unlimited" => u64::MAX,
                    Some(x) => x.as_u64().unwrap_or(1),
                    None => 1,
                };
                Ok(ColumnType { key, value, min, max })
            }
            _ => Err(OvsdbError::Protocol("column type is neither a string nor an object".into())),
        }
    }
}

/// A database schema: table → column → type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DbSchema {
    /// Database name.
    pub name: String,
    /// Schema version.
    pub version: String,
    /// Tables and their columns.
    pub tables: HashMap<String, HashMap<String, ColumnType>>,
}

impl DbSchema {
    /// Parses the result of `get_schema`.
    pub fn parse(v: &Value) -> Result<DbSchema, OvsdbError> {
        let mut s = DbSchema {
            name: v.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
            version: v.get("version").and_then(Value::as_str).unwrap_or_default().to_string(),
            tables: HashMap::new(),
        };
        let tables = v.get("tables").and_then(Value::as_object).ok_or_else(|| OvsdbError::Protocol("schema without tables".into()))?;
        for (t, tv) in tables {
            let cols = tv.get("columns").and_then(Value::as_object).ok_or_else(|| OvsdbError::Protocol(format!("table {t} without columns")))?;
            let mut m = HashMap::new();
            for (c, cv) in cols {
                let ty = cv.get("type").ok_or_else(|| OvsdbError::Protocol(format!("column {t}.{c} without type")))?;
                m.insert(c.clone(), ColumnType::parse(ty)?);
            }
            s.tables.insert(t.clone(), m);
        }
        Ok(s)
    }
}
