//! Errors of the OpenFlow codec and connection.

use super::body::ErrorMsg;

/// Bytes that are not a valid OpenFlow 1.3 message (or part of one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A structure ended before one of its fields.
    #[error("{what}: truncated, needs {need} more bytes but {have} remain")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Bytes the next field needs.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// A length field is smaller than the fixed part it covers, or larger than the bytes given.
    #[error("{what}: length field {len} is invalid ({reason})")]
    BadLength {
        /// The structure whose length is wrong.
        what: &'static str,
        /// The length as it came.
        len: usize,
        /// Why it is wrong.
        reason: &'static str,
    },
    /// The header names an OpenFlow version other than 1.3 (0x04) on a message other than hello.
    #[error("unsupported OpenFlow version {0:#04x} (only 1.3 = 0x04)")]
    BadVersion(u8),
    /// A field holds a value the codec cannot represent.
    #[error("{what}: {reason}")]
    Invalid {
        /// The structure.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A message that cannot be encoded as asked; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A match field lacks its prerequisite and it cannot be inferred, or contradicts it.
    #[error("match field {field}: {reason}")]
    Prerequisite {
        /// The field whose prerequisite is missing.
        field: &'static str,
        /// What it needs.
        reason: String,
    },
    /// The same field appears twice in one match.
    #[error("match field {0} appears more than once")]
    DuplicateField(&'static str),
    /// A bit range falls outside its field.
    #[error("{what}: bits {ofs}..{end} do not fit in a {width}-bit field")]
    BitRange {
        /// The action or spec.
        what: &'static str,
        /// First bit.
        ofs: u16,
        /// One past the last bit.
        end: u32,
        /// The field's width in bits.
        width: u16,
    },
    /// A value is out of range for its field.
    #[error("{what}: {reason}")]
    Invalid {
        /// The structure.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The encoded message would exceed the 64 KiB OpenFlow limit.
    #[error("{what} would be {len} bytes, over the 65535-byte OpenFlow limit")]
    TooLong {
        /// The structure.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

/// Errors of an OpenFlow connection. Inner errors are in the message, not chained as sources
/// (each said once in a chain of causes), except where the message is the inner one's.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OfError {
    /// The switch answered the request with an OpenFlow error message.
    #[error("switch refused the request: {0}")]
    Switch(ErrorMsg),
    /// The message could not be encoded; nothing was sent.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The peer sent bytes that are not OpenFlow 1.3.
    #[error("malformed message from the switch: {0}")]
    Decode(DecodeError),
    /// The connection is closed (by the peer, an I/O error, or a missed keep-alive).
    #[error("connection closed: {0}")]
    Closed(String),
    /// The handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The switch answered with a message of an unexpected type.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
    /// No reply came in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// One message of a batch or bundle was refused; `index` is its position.
    #[error("message {index} of the batch was refused: {error}")]
    Rejected {
        /// Position of the refused message in what was sent.
        index: usize,
        /// Why.
        error: super::conn::RejectReason,
    },
    /// An I/O error while connecting.
    #[error("i/o error: {0}")]
    Io(String),
}

impl From<std::io::Error> for OfError {
    fn from(e: std::io::Error) -> Self {
        OfError::Io(e.to_string())
    }
}

impl From<DecodeError> for OfError {
    fn from(e: DecodeError) -> Self {
        OfError::Decode(e)
    }
}
