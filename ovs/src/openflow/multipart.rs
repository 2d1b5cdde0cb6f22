//! Multipart (statistics and description) requests and replies.

use super::action::OFPP_ANY;
use super::body::{FlowMod, Port};
use super::error::{DecodeError, EncodeError};
use super::instruction::{decode_instructions, encode_instructions, Instruction};
use super::message::{OFPG_ANY, OFPTT_ALL};
use super::oxm::Match;
use super::wire::{len16, Put, Reader};

const OFPMP_DESC: u16 = 0;
const OFPMP_FLOW: u16 = 1;
const OFPMP_AGGREGATE: u16 = 2;
const OFPMP_PORT_DESC: u16 = 13;

/// Reply flag: more parts follow.
pub const OFPMPF_REPLY_MORE: u16 = 1;

/// A multipart request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartRequest {
    /// `OFPMPF_REQ_MORE`.
    pub flags: u16,
    /// What is asked for.
    pub body: MultipartRequestBody,
}

/// What a multipart request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipartRequestBody {
    /// Switch description strings.
    Desc,
    /// Flow statistics.
    Flow(FlowStatsRequest),
    /// The flows' statistics summed: how many, their packets and bytes.
    Aggregate(FlowStatsRequest),
    /// Port descriptions.
    PortDesc,
    /// Another kind, kept byte for byte.
    Other {
        /// `OFPMP_*`.
        kind: u16,
        /// Body.
        body: Vec<u8>,
    },
}

/// Which flows a flow statistics request covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStatsRequest {
    /// Table (`OFPTT_ALL` = all).
    pub table_id: u8,
    /// Only flows that output to this port (`OFPP_ANY` = any).
    pub out_port: u32,
    /// Only flows that output to this group.
    pub out_group: u32,
    /// Cookie to filter by.
    pub cookie: u64,
    /// Bits of the cookie that must match.
    pub cookie_mask: u64,
    /// Only flows the match covers.
    pub match_: Match,
}

impl Default for FlowStatsRequest {
    fn default() -> Self {
        FlowStatsRequest { table_id: OFPTT_ALL, out_port: OFPP_ANY, out_group: OFPG_ANY, cookie: 0, cookie_mask: 0, match_: Match::new() }
    }
}

/// A multipart reply part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartReply {
    /// `OFPMPF_REPLY_MORE` if more parts follow.
    pub flags: u16,
    /// The part.
    pub body: MultipartReplyBody,
}

/// Switch description strings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desc {
    /// Manufacturer.
    pub mfr_desc: String,
    /// Hardware.
    pub hw_desc: String,
    /// Software.
    pub sw_desc: String,
    /// Serial number.
    pub serial_num: String,
    /// Datapath description.
    pub dp_desc: String,
}

/// The content of a multipart reply part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipartReplyBody {
    /// Switch description.
    Desc(Desc),
    /// Flow statistics.
    Flow(Vec<FlowStats>),
    /// The flows' statistics summed.
    Aggregate(AggregateStats),
    /// Port descriptions.
    PortDesc(Vec<Port>),
    /// Another kind, kept byte for byte.
    Other {
        /// `OFPMP_*`.
        kind: u16,
        /// Body.
        body: Vec<u8>,
    },
}

/// Statistics of the flows a request covers, summed (OpenFlow 1.3, 7.3.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AggregateStats {
    /// Packets.
    pub packet_count: u64,
    /// Bytes.
    pub byte_count: u64,
    /// Flows.
    pub flow_count: u32,
}

/// One flow's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// Table.
    pub table_id: u8,
    /// Age, seconds.
    pub duration_sec: u32,
    /// Age, nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
    /// Priority.
    pub priority: u16,
    /// Idle timeout.
    pub idle_timeout: u16,
    /// Hard timeout.
    pub hard_timeout: u16,
    /// `OFPFF_*`.
    pub flags: u16,
    /// Cookie.
    pub cookie: u64,
    /// Packets matched.
    pub packet_count: u64,
    /// Bytes matched.
    pub byte_count: u64,
    /// Match.
    pub match_: Match,
    /// Instructions.
    pub instructions: Vec<Instruction>,
}

impl FlowStats {
    /// The flow-mod that would add this flow as the switch reports it: what a controller
    /// compares its desired flows with. An empty apply-actions instruction is left out (OVS
    /// reports a drop flow's `actions=drop` that way, while a flow-mod says it with none).
    pub fn to_flow_mod(&self) -> FlowMod {
        FlowMod {
            cookie: self.cookie,
            idle_timeout: self.idle_timeout,
            hard_timeout: self.hard_timeout,
            flags: self.flags,
            instructions: self.instructions.iter().filter(|i| !matches!(i, Instruction::ApplyActions(a) if a.is_empty())).cloned().collect(),
            ..FlowMod::add(self.table_id, self.priority, self.match_.clone())
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str, n: usize) -> Result<(), EncodeError> {
    if s.len() >= n {
        return Err(EncodeError::Invalid { what: "desc", reason: format!("string longer than {} bytes", n - 1) });
    }
    out.extend_from_slice(s.as_bytes());
    out.put_zeros(n - s.len());
    Ok(())
}

fn get_str(r: &mut Reader<'_>, n: usize) -> Result<String, DecodeError> {
    let raw = r.bytes(n)?;
    let end = raw.iter().position(|&c| c == 0).unwrap_or(n);
    Ok(String::from_utf8_lossy(raw.get(..end).unwrap_or(raw)).into_owned())
}

impl MultipartRequest {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let kind = match &self.body {
            MultipartRequestBody::Desc => OFPMP_DESC,
            MultipartRequestBody::Flow(_) => OFPMP_FLOW,
            MultipartRequestBody::Aggregate(_) => OFPMP_AGGREGATE,
            MultipartRequestBody::PortDesc => OFPMP_PORT_DESC,
            MultipartRequestBody::Other { kind, .. } => *kind,
        };
        out.put_u16(kind);
        out.put_u16(self.flags);
        out.put_zeros(4);
        match &self.body {
            MultipartRequestBody::Desc | MultipartRequestBody::PortDesc => {}
            // The two take the same body.
            MultipartRequestBody::Flow(f) | MultipartRequestBody::Aggregate(f) => {
                out.put_u8(f.table_id);
                out.put_zeros(3);
                out.put_u32(f.out_port);
                out.put_u32(f.out_group);
                out.put_zeros(4);
                out.put_u64(f.cookie);
                out.put_u64(f.cookie_mask);
                f.match_.normalized()?.encode(out)?;
            }
            MultipartRequestBody::Other { body, .. } => out.extend_from_slice(body),
        }
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = r.u16()?;
        let flags = r.u16()?;
        r.skip(4)?;
        let body = match kind {
            OFPMP_DESC => MultipartRequestBody::Desc,
            OFPMP_PORT_DESC => MultipartRequestBody::PortDesc,
            OFPMP_FLOW | OFPMP_AGGREGATE => {
                let table_id = r.u8()?;
                r.skip(3)?;
                let out_port = r.u32()?;
                let out_group = r.u32()?;
                r.skip(4)?;
                let cookie = r.u64()?;
                let cookie_mask = r.u64()?;
                let match_ = Match::decode(r)?;
                let req = FlowStatsRequest { table_id, out_port, out_group, cookie, cookie_mask, match_ };
                if kind == OFPMP_FLOW {
                    MultipartRequestBody::Flow(req)
                } else {
                    MultipartRequestBody::Aggregate(req)
                }
            }
            _ => MultipartRequestBody::Other { kind, body: r.rest().to_vec() },
        };
        Ok(MultipartRequest { flags, body })
    }
}

impl MultipartReply {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let kind = match &self.body {
            MultipartReplyBody::Desc(_) => OFPMP_DESC,
            MultipartReplyBody::Flow(_) => OFPMP_FLOW,
            MultipartReplyBody::Aggregate(_) => OFPMP_AGGREGATE,
            MultipartReplyBody::PortDesc(_) => OFPMP_PORT_DESC,
            MultipartReplyBody::Other { kind, .. } => *kind,
        };
        out.put_u16(kind);
        out.put_u16(self.flags);
        out.put_zeros(4);
        match &self.body {
            MultipartReplyBody::Desc(d) => {
                put_str(out, &d.mfr_desc, 256)?;
                put_str(out, &d.hw_desc, 256)?;
                put_str(out, &d.sw_desc, 256)?;
                put_str(out, &d.serial_num, 32)?;
                put_str(out, &d.dp_desc, 256)?;
            }
            MultipartReplyBody::Flow(v) => {
                for f in v {
                    let s = out.len();
                    out.put_u16(0);
                    out.put_u8(f.table_id);
                    out.put_u8(0);
                    out.put_u32(f.duration_sec);
                    out.put_u32(f.duration_nsec);
                    out.put_u16(f.priority);
                    out.put_u16(f.idle_timeout);
                    out.put_u16(f.hard_timeout);
                    out.put_u16(f.flags);
                    out.put_zeros(4);
                    out.put_u64(f.cookie);
                    out.put_u64(f.packet_count);
                    out.put_u64(f.byte_count);
                    f.match_.encode(out)?;
                    encode_instructions(&f.instructions, out)?;
                    let l = len16(out.len() - s, "flow stats")?;
                    out.patch_u16(s, l);
                }
            }
            MultipartReplyBody::PortDesc(v) => {
                for p in v {
                    p.encode(out)?;
                }
            }
            MultipartReplyBody::Aggregate(a) => {
                out.put_u64(a.packet_count);
                out.put_u64(a.byte_count);
                out.put_u32(a.flow_count);
                out.put_zeros(4);
            }
            MultipartReplyBody::Other { body, .. } => out.extend_from_slice(body),
        }
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = r.u16()?;
        let flags = r.u16()?;
        r.skip(4)?;
        let body = match kind {
            OFPMP_DESC => MultipartReplyBody::Desc(Desc {
                mfr_desc: get_str(r, 256)?,
                hw_desc: get_str(r, 256)?,
                sw_desc: get_str(r, 256)?,
                serial_num: get_str(r, 32)?,
                dp_desc: get_str(r, 256)?,
            }),
            OFPMP_PORT_DESC => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    v.push(Port::decode(r)?);
                }
                MultipartReplyBody::PortDesc(v)
            }
            OFPMP_AGGREGATE => {
                let a = AggregateStats { packet_count: r.u64()?, byte_count: r.u64()?, flow_count: r.u32()? };
                r.skip(4)?;
                MultipartReplyBody::Aggregate(a)
            }
            OFPMP_FLOW => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    let len = r.u16()? as usize;
                    if len < 56 {
                        return Err(DecodeError::BadLength { what: "flow stats", len, reason: "less than 56" });
                    }
                    let mut b = r.sub(len - 2, "flow stats")?;
                    let table_id = b.u8()?;
                    b.skip(1)?;
                    let mut f = FlowStats {
                        table_id,
                        duration_sec: b.u32()?,
                        duration_nsec: b.u32()?,
                        priority: b.u16()?,
                        idle_timeout: b.u16()?,
                        hard_timeout: b.u16()?,
                        flags: b.u16()?,
                        ..FlowStats::default()
                    };
                    b.skip(4)?;
                    f.cookie = b.u64()?;
                    f.packet_count = b.u64()?;
                    f.byte_count = b.u64()?;
                    f.match_ = Match::decode(&mut b)?;
                    f.instructions = decode_instructions(&mut b)?;
                    v.push(f);
                }
                MultipartReplyBody::Flow(v)
            }
            _ => MultipartReplyBody::Other { kind, body: r.rest().to_vec() },
        };
        Ok(MultipartReply { flags, body })
    }
}
