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

/// Splits a byte stream into JSON values as they complete. A scanner follows the nesting of
/// objects, arrays and strings and resumes where it stopped, so a message that arrives in many
/// chunks is scanned once and parsed once, not re-parsed from its start per chunk.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned.
    scanned: usize,
    /// Where the value being scanned starts, once its first byte was seen.
    start: Option<usize>,
    /// Open objects and arrays.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Bytes scanned since creation: what the tests check to prove each byte is scanned once.
    work: usize,
}

/// Largest message accepted; a peer that sends more without completing a value is broken.
const MAX_MESSAGE: usize = 256 << 20;

impl Framer {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if the buffer holds one.
    pub(crate) fn next(&mut self) -> Result<Option<Incoming>, OvsdbError> {
        let Some(end) = self.scan()? else {
            if self.buf.len() > MAX_MESSAGE {
                return Err(OvsdbError::Protocol(format!("message larger than {MAX_MESSAGE} bytes")));
            }
            return Ok(None);
        };
        let start = self.start.take().unwrap_or(0);
        let v = serde_json::from_slice::<Value>(self.buf.get(start..end).unwrap_or_default()).map_err(|e| OvsdbError::Protocol(e.to_string()));
        self.buf.drain(..end);
        self.scanned = 0;
        parse(v?).map(Some)
    }

    /// Scans on from where the last call stopped; the end of the first complete value, if any.
    fn scan(&mut self) -> Result<Option<usize>, OvsdbError> {
        for (i, &b) in self.buf.iter().enumerate().skip(self.scanned) {
            self.work += 1;
            if self.start.is_none() {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' | b'[' => {
                        self.start = Some(i);
                        self.depth = 1;
                        continue;
                    }
                    _ => return Err(OvsdbError::Protocol(format!("a message must be a JSON object, not one starting with {:?}", b as char))),
                }
            }
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.scanned = i + 1;
                        return Ok(Some(i + 1));
                    }
                }
                _ => {}
            }
        }
        self.scanned = self.buf.len();
        Ok(None)
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

    #[test]
    fn strings_may_hold_brackets_and_escaped_quotes() {
        let mut f = Framer::default();
        f.push(br#"{"method":"x\"}{[","params":["]\\"],"id":null}"#);
        assert!(matches!(f.next().unwrap(), Some(Incoming::Request { ref method, .. }) if method == r#"x"}{["#));
    }

    #[test]
    fn a_message_in_many_small_chunks_is_scanned_once() {
        let body: String = (0..20_000).map(|i| format!("\"row{i}\",")).collect();
        let msg = format!(r#"{{"id":1,"result":[{body}"end"],"error":null}}"#);
        let mut f = Framer::default();
        let mut got = None;
        for chunk in msg.as_bytes().chunks(512) {
            f.push(chunk);
            if let Some(m) = f.next().unwrap() {
                got = Some(m);
            }
        }
        assert!(matches!(got, Some(Incoming::Response { ref result, .. }) if result.as_array().map(Vec::len) == Some(20_001)));
        assert_eq!(f.work, msg.len(), "every byte scanned exactly once");
    }
}
