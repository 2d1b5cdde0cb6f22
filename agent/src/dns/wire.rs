//! The DNS message format (RFC 1035), as much as a stub resolver's questions need: one
//! question in, answers of type A or PTR out. Everything is parsed from untrusted bytes with
//! bounds checks; a message it cannot read is refused, never guessed at.

use std::net::Ipv4Addr;

/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type PTR.
pub const TYPE_PTR: u16 = 12;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// Query type ANY.
pub const TYPE_ANY: u16 = 255;
/// Class IN.
pub const CLASS_IN: u16 = 1;

/// Response codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// No error.
    NoError = 0,
    /// The query could not be read.
    FormErr = 1,
    /// The server failed (an upstream did not answer).
    ServFail = 2,
    /// The name does not exist.
    NxDomain = 3,
    /// The kind of query is not supported.
    NotImp = 4,
}

/// Why a message is not a query this server reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Too short for what its header or names say.
    #[error("truncated message")]
    Truncated,
    /// A response, not a query: never answered (two responders must not answer each other).
    #[error("a response, not a query")]
    Response,
    /// A query that is not a standard one with exactly one question.
    #[error("not a standard query with one question: {0}")]
    Unsupported(&'static str),
    /// A name that breaks the format's rules.
    #[error("bad name: {0}")]
    BadName(&'static str),
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Its id, echoed in the answer.
    pub id: u16,
    /// Whether the client asked for recursion (echoed).
    pub recursion_desired: bool,
    /// The name asked for, lower case, without the final dot.
    pub name: String,
    /// The type asked for.
    pub qtype: u16,
    /// The class asked for.
    pub qclass: u16,
    /// The question section's bytes, echoed in the answer.
    question: Vec<u8>,
}

/// Reads a query. Only the header and the question are looked at: what follows (an EDNS
/// record, say) is ignored, and the answer carries none.
pub fn parse_query(msg: &[u8]) -> Result<Query, WireError> {
    if msg.len() < 12 {
        return Err(WireError::Truncated);
    }
    let u16_at = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let (id, flags, qdcount) = (u16_at(0), u16_at(2), u16_at(4));
    if flags & 0x8000 != 0 {
        return Err(WireError::Response);
    }
    if (flags >> 11) & 0xf != 0 {
        return Err(WireError::Unsupported("an opcode other than QUERY"));
    }
    if qdcount != 1 {
        return Err(WireError::Unsupported("question count is not 1"));
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    let mut total = 0usize;
    loop {
        let len = *msg.get(i).ok_or(WireError::Truncated)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        // A question's name is never compressed in practice; refusing pointers here keeps
        // the reader free of loops.
        if len & 0xc0 != 0 {
            return Err(WireError::BadName("compressed or extended label in a question"));
        }
        let label = msg.get(i..i + len).ok_or(WireError::Truncated)?;
        total += len + 1;
        if total > 255 {
            return Err(WireError::BadName("longer than 255 bytes"));
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i).ok_or(WireError::Truncated)?, *msg.get(i + 1).ok_or(WireError::Truncated)?]);
    let qclass = u16::from_be_bytes([*msg.get(i + 2).ok_or(WireError::Truncated)?, *msg.get(i + 3).ok_or(WireError::Truncated)?]);
    let question = msg[12..i + 4].to_vec();
    Ok(Query { id, recursion_desired: flags & 0x0100 != 0, name: labels.join("."), qtype, qclass, question })
}

/// What an answer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// An address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(std::net::Ipv6Addr),
    /// A name (for reverse lookups), without the final dot.
    Ptr(String),
}

/// TTL of the answers: short, since containers come and go.
pub const TTL: u32 = 5;

fn put_name(out: &mut Vec<u8>, name: &str) {
    for l in name.split('.').filter(|l| !l.is_empty()) {
        let l = &l.as_bytes()[..l.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
}

/// The answer to `q`: `rcode` and `answers` (each under the question's name).
pub fn answer(q: &Query, rcode: Rcode, answers: &[Data]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + answers.len() * 16);
    out.extend(q.id.to_be_bytes());
    // QR, AA, RD as asked, RA (unknown names are forwarded).
    let flags: u16 = 0x8000 | 0x0400 | if q.recursion_desired { 0x0100 } else { 0 } | 0x0080 | rcode as u16;
    out.extend(flags.to_be_bytes());
    out.extend(1u16.to_be_bytes());
    out.extend((answers.len() as u16).to_be_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend_from_slice(&q.question);
    for a in answers {
        // The question's name, by a pointer to offset 12.
        out.extend([0xc0, 0x0c]);
        let (ty, rdata) = match a {
            Data::A(ip) => (TYPE_A, ip.octets().to_vec()),
            Data::Aaaa(ip) => (TYPE_AAAA, ip.octets().to_vec()),
            Data::Ptr(name) => {
                let mut n = Vec::new();
                put_name(&mut n, name);
                (TYPE_PTR, n)
            }
        };
        out.extend(ty.to_be_bytes());
        out.extend(CLASS_IN.to_be_bytes());
        out.extend(TTL.to_be_bytes());
        out.extend((rdata.len() as u16).to_be_bytes());
        out.extend(rdata);
    }
    out
}

/// An answer that says only `rcode`, for a message whose header could be read (`msg` at
/// least 12 bytes): the id echoed, no question.
pub fn bare_error(msg: &[u8], rcode: Rcode) -> Option<Vec<u8>> {
    let id = msg.get(0..2)?;
    let mut out = id.to_vec();
    out.extend((0x8000u16 | 0x0080 | rcode as u16).to_be_bytes());
    out.extend([0u8; 8]);
    Some(out)
}

/// The address a reverse-lookup name stands for (`4.3.2.1.in-addr.arpa` is 1.2.3.4).
pub fn reverse_v4(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let o: Vec<u8> = rest.split('.').map(|p| p.parse().ok()).collect::<Option<Vec<u8>>>()?;
    (o.len() == 4).then(|| Ipv4Addr::new(o[3], o[2], o[1], o[0]))
}

/// The address a reverse name under `ip6.arpa` stands for (32 nibbles, lowest first).
pub fn reverse_v6(name: &str) -> Option<std::net::Ipv6Addr> {
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u128> = rest.split('.').map(|p| if p.len() == 1 { u128::from_str_radix(p, 16).ok() } else { None }).collect::<Option<Vec<u128>>>()?;
    (nibbles.len() == 32).then(|| std::net::Ipv6Addr::from(nibbles.iter().rev().fold(0u128, |a, n| (a << 4) | n)))
}

/// The id of a message (an upstream's answer must carry the query's).
pub fn id_of(msg: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.first()?, *msg.get(1)?]))
}

/// Marks an answer truncated and drops everything after its question (for an upstream's
/// answer too large to send back in one frame): the client retries or makes do.
pub fn truncated(q: &Query) -> Vec<u8> {
    let mut a = answer(q, Rcode::NoError, &[]);
    a[2] |= 0x02;
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        put_name(&mut m, name);
        m.extend(qtype.to_be_bytes());
        m.extend(CLASS_IN.to_be_bytes());
        m
    }

    #[test]
    fn reads_a_query_and_answers_it() {
        let q = parse_query(&query("Web.Blue", TYPE_A)).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype, q.recursion_desired), (0x1234, "web.blue", TYPE_A, true));
        let a = answer(&q, Rcode::NoError, &[Data::A(Ipv4Addr::new(10, 0, 0, 5))]);
        assert_eq!(&a[0..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1, "one answer");
        assert_eq!(&a[a.len() - 4..], &[10, 0, 0, 5]);
        assert_eq!(a[3] & 0xf, 0);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(parse_query(&[0; 5]), Err(WireError::Truncated));
        let mut m = query("a", TYPE_A);
        m.truncate(m.len() - 3);
        assert_eq!(parse_query(&m), Err(WireError::Truncated));
        let mut resp = query("a", TYPE_A);
        resp[2] |= 0x80;
        assert_eq!(parse_query(&resp), Err(WireError::Response));
        let mut ptr = query("a", TYPE_A);
        ptr[12] = 0xc0;
        assert!(matches!(parse_query(&ptr), Err(WireError::BadName(_))));
        // A label running past the end, and a name over 255 bytes.
        assert_eq!(parse_query(&[0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 40, b'a']), Err(WireError::Truncated));
        let long = (0..9).map(|_| "a".repeat(40)).collect::<Vec<_>>().join(".");
        assert!(matches!(parse_query(&query(&long, TYPE_A)), Err(WireError::BadName(_))));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_v4("5.0.10.10.in-addr.arpa"), Some(Ipv4Addr::new(10, 10, 0, 5)));
        assert_eq!(reverse_v4("5.0.10.in-addr.arpa"), None);
        assert_eq!(reverse_v4("x.0.10.10.in-addr.arpa"), None);
    }
}
