//! JSON-RPC 1.0 framing: OVSDB sends JSON values back to back with no delimiter.

use serde_json::Value;

use super::error::OvsdbError;

/// A complete incoming message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// A request or notification from the server (`id` is null for notifications).
    Request { method: String, params: Value, id: Value },
    /// A response to one of our requests.
    Response { id: Value, result: Value, error: Value },
}

/// Splits a byte buffer into JSON values as they complete.
#[derive(Default)]
pub(crate) struct Framer {
    buf: Vec<u8>,
}

/// Largest message accepted; a peer that sends more without completing a value is broken.
const MAX_MESSAGE: usize = 256 << 20;

impl Framer {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if the buffer holds one.
    pub(crate) fn next(&mut self) -> Result<Option<Incoming>, OvsdbError> {
        let start = self.buf.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(self.buf.len());
        if start == self.buf.len() {
            self.buf.clear();
            return Ok(None);
        }
        let mut it = serde_json::Deserializer::from_slice(&self.buf[start..]).into_iter::<Value>();
        match it.next() {
            None => Ok(None),
            Some(Err(e)) if e.is_eof() => {
                if self.buf.len() > MAX_MESSAGE {
                    return Err(OvsdbError::Protocol(format!("message larger than {MAX_MESSAGE} bytes")));
                }
                Ok(None)
            }
            Some(Err(e)) => Err(OvsdbError::Protocol(e.to_string())),
            Some(Ok(v)) => {
                let used = start + it.byte_offset();
                self.buf.drain(..used);
                parse(v).map(Some)
            }
        }
    }
}

fn parse(v: Value) -> Result<Incoming, OvsdbError> {
    let Value::Object(mut o) = v else {
        return Err(OvsdbError::Protocol("message is not a JSON object".into()));
    };
    if let Some(m) = o.remove("method") {
        let method = m.as_str().ok_or_else(|| OvsdbError::Protocol("method is not a string".into()))?.to_string();
        let params = o.remove("params").unwrap_or(Value::Array(vec![]));
        let id = o.remove("id").unwrap_or(Value::Null);
        return Ok(Incoming::Request { method, params, id });
    }
    if o.contains_key("result") || o.contains_key("error") {
        return Ok(Incoming::Response {
            id: o.remove("id").unwrap_or(Value::Null),
            result: o.remove("result").unwrap_or(Value::Null),
            error: o.remove("error").unwrap_or(Value::Null),
        });
    }
    Err(OvsdbError::Protocol("message is neither a request nor a response".into()))
}

/// Encodes a request (`id` null = notification).
pub(crate) fn request(method: &str, params: &Value, id: &Value) -> Vec<u8> {
    let v = serde_json::json!({ "method": method, "params": params, "id": id });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Encodes a response.
pub(crate) fn response(id: &Value, result: &Value) -> Vec<u8> {
    let v = serde_json::json!({ "result": result, "error": null, "id": id });
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_concatenated_and_partial_messages() {
        let mut f = Framer::default();
        f.push(br#"{"id":1,"result":[],"error":null} {"method":"echo","params":[],"id":"x"}{"id":2,"res"#);
        assert!(matches!(f.next().unwrap(), Some(Incoming::Response { .. })));
        assert!(matches!(f.next().unwrap(), Some(Incoming::Request { ref method, .. }) if method == "echo"));
        assert_eq!(f.next().unwrap(), None);
        f.push(br#"ult":{"a":1},"error":null}"#);
        assert!(matches!(f.next().unwrap(), Some(Incoming::Response { .. })));
        f.push(b"]garbage");
        assert!(f.next().is_err());
    }
}
