//! OpenFlow 1.3 actions and the Nicira extension actions (`resubmit`, `load`, `move`, `ct`,
//! `nat`, `learn`) that `ovs-actions(7)` describes.

use std::net::Ipv4Addr;

use super::error::{DecodeError, EncodeError};
use super::oxm::{Field, MatchField};
use super::wire::{len16, Put, Reader};

/// Nicira's experimenter id.
pub const NX_VENDOR_ID: u32 = 0x0000_2320;

/// Reserved port: the packet's input port.
pub const OFPP_IN_PORT: u32 = 0xffff_fff8;
/// Reserved port: the flow table (packet-out only): run the packet through the pipeline
/// from table 0, as if it had arrived on the packet-out's input port.
pub const OFPP_TABLE: u32 = 0xffff_fff9;
/// Reserved port: the controller.
pub const OFPP_CONTROLLER: u32 = 0xffff_fffd;
/// Reserved port: the switch's local port.
pub const OFPP_LOCAL: u32 = 0xffff_fffe;
/// Reserved port: OVS's normal L2 switching.
pub const OFPP_NORMAL: u32 = 0xffff_fffa;
/// Reserved port: every port but the input port.
pub const OFPP_FLOOD: u32 = 0xffff_fffb;
/// Reserved port: "any" (wildcard in requests).
pub const OFPP_ANY: u32 = 0xffff_ffff;
/// `max_len` meaning "send the whole packet to the controller".
pub const OFPCML_NO_BUFFER: u16 = 0xffff;

const OFPAT_OUTPUT: u16 = 0;
const OFPAT_PUSH_VLAN: u16 = 17;
const OFPAT_POP_VLAN: u16 = 18;
const OFPAT_GROUP: u16 = 22;
const OFPAT_DEC_NW_TTL: u16 = 24;
const OFPAT_SET_FIELD: u16 = 25;
const OFPAT_EXPERIMENTER: u16 = 0xffff;

const NXAST_REG_MOVE: u16 = 6;
const NXAST_CONTROLLER: u16 = 20;
const NXAST_REG_LOAD: u16 = 7;
const NXAST_RESUBMIT_TABLE: u16 = 14;
const NXAST_OUTPUT_REG: u16 = 15;
const NXAST_LEARN: u16 = 16;
const NXAST_CONJUNCTION: u16 = 34;
const NXAST_CT: u16 = 35;
const NXAST_NAT: u16 = 36;

/// `ct` flag: commit the connection to the tracker.
pub const NX_CT_F_COMMIT: u16 = 1;
/// `ct` flag: force (commit in this direction, replacing a reverse entry).
pub const NX_CT_F_FORCE: u16 = 2;
/// `ct` table meaning "do not recirculate".
pub const NX_CT_RECIRC_NONE: u8 = 0xff;

/// `resubmit` table meaning "the current table".
pub const RESUBMIT_CURRENT_TABLE: u8 = 0xff;
/// `resubmit` in_port meaning "keep the packet's in_port" (OpenFlow 1.0 numbering).
pub const RESUBMIT_IN_PORT: u16 = 0xfff8;

/// An action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Output to a port (`max_len` matters only for the controller port).
    Output {
        /// Port number or a reserved port (`OFPP_*`).
        port: u32,
        /// Bytes to send to the controller.
        max_len: u16,
    },
    /// Process the packet through a group.
    Group(u32),
    /// Set a whole field (OpenFlow `set_field`; Nicira fields allowed).
    SetField(MatchField),
    /// Push a VLAN tag with this TPID.
    PushVlan(u16),
    /// Pop the outer VLAN tag.
    PopVlan,
    /// Decrement the IP TTL (drop at zero).
    DecNwTtl,
    /// Nicira `resubmit(in_port,table)`.
    Resubmit {
        /// Input port to pretend (`RESUBMIT_IN_PORT` = unchanged).
        in_port: u16,
        /// Table (`RESUBMIT_CURRENT_TABLE` = this one).
        table: u8,
    },
    /// Nicira `output:src[ofs..ofs+n_bits-1]`: output to the port a field holds, so that a
    /// pipeline can decide the port in one table and send in a later one.
    OutputReg {
        /// Field holding the port.
        src: Field,
        /// First bit.
        ofs: u16,
        /// Number of bits.
        n_bits: u16,
        /// Bytes to send to the controller, should the port be the controller.
        max_len: u16,
    },
    /// Nicira `load:value->dst[ofs..ofs+n_bits-1]`.
    RegLoad {
        /// Destination field.
        dst: Field,
        /// First bit.
        ofs: u16,
        /// Number of bits (1..=64).
        n_bits: u16,
        /// Value.
        value: u64,
    },
    /// Nicira `move:src[..]->dst[..]`.
    RegMove {
        /// Source field.
        src: Field,
        /// First source bit.
        src_ofs: u16,
        /// Destination field.
        dst: Field,
        /// First destination bit.
        dst_ofs: u16,
        /// Number of bits.
        n_bits: u16,
    },
    /// Nicira `conjunction(id, clause/n_clauses)`: this flow is dimension `clause` (1-based)
    /// of `n_clauses` of conjunctive match `id`; a packet that matches a flow in every
    /// dimension then matches the flow on `conj_id=id`. Flows of one match share a priority.
    Conjunction {
        /// Conjunction id (what `conj_id` matches).
        id: u32,
        /// This flow's dimension, 1..=n_clauses.
        clause: u8,
        /// Dimensions of the match, 2..=64.
        n_clauses: u8,
    },
    /// Nicira `ct(...)`.
    Ct(Ct),
    /// Nicira `nat(...)` (only meaningful inside `ct`).
    Nat(Nat),
    /// Nicira `learn(...)`.
    Learn(Learn),
    /// An experimenter action the codec does not interpret, kept byte for byte.
    Experimenter {
        /// Experimenter id.
        experimenter: u32,
        /// Bytes after the experimenter id.
        data: Vec<u8>,
    },
    /// A standard action the codec does not interpret, kept byte for byte.
    Other {
        /// Action type.
        kind: u16,
        /// Bytes after type and length.
        data: Vec<u8>,
    },
}

impl Action {
    /// `output:port`.
    pub fn output(port: u32) -> Action {
        Action::Output { port, max_len: 0 }
    }
    /// `controller` with the whole packet.
    pub fn controller() -> Action {
        Action::Output { port: OFPP_CONTROLLER, max_len: OFPCML_NO_BUFFER }
    }
    /// Nicira `controller(id=ID)`: the whole packet, as a packet-in of reason "action", to
    /// the connections that set controller id `id` (`NXT_SET_CONTROLLER_ID`, see
    /// [`crate::openflow::receive_packet_ins`]) — a local service on the bridge's management
    /// socket, not the primary controllers (id 0, which `output:CONTROLLER` reaches).
    pub fn controller_id(id: u16) -> Action {
        let mut data = Vec::with_capacity(8);
        data.extend(NXAST_CONTROLLER.to_be_bytes());
        data.extend(OFPCML_NO_BUFFER.to_be_bytes());
        data.extend(id.to_be_bytes());
        // Reason OFPR_ACTION, then padding.
        data.extend([1, 0]);
        Action::Experimenter { experimenter: NX_VENDOR_ID, data }
    }
    /// `set_field:value->field`.
    pub fn set_field(field: Field, value: impl Into<u128>) -> Action {
        Action::SetField(MatchField::new(field, value.into()))
    }
    /// `set_field:ip->tun_dst`.
    pub fn set_tun_dst(ip: Ipv4Addr) -> Action {
        Action::set_field(Field::TunIpv4Dst, u32::from(ip))
    }
    /// `output:src[]`: output to the port a whole (32-bit) register holds.
    pub fn output_reg(reg: u8) -> Action {
        Action::OutputReg { src: Field::Reg(reg), ofs: 0, n_bits: 32, max_len: 0 }
    }
    /// `resubmit(,table)`.
    pub fn resubmit(table: u8) -> Action {
        Action::Resubmit { in_port: RESUBMIT_IN_PORT, table }
    }
}

/// Where `ct` takes its zone from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtZone {
    /// A fixed zone.
    Imm(u16),
    /// Bits of a field (16 bits starting at `ofs`).
    Field {
        /// The field.
        field: Field,
        /// First bit.
        ofs: u16,
        /// Width (must be 16 for OVS).
        n_bits: u16,
    },
}

/// Nicira `ct` action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ct {
    /// `NX_CT_F_*`.
    pub flags: u16,
    /// Zone.
    pub zone: CtZone,
    /// Table to recirculate to, if any.
    pub table: Option<u8>,
    /// Application-layer gateway (0 = none).
    pub alg: u16,
    /// Nested actions (`nat`, `set_field` on `ct_mark`).
    pub actions: Vec<Action>,
}

/// Nicira `nat` action.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Nat {
    /// `NX_NAT_F_*`: 1 src, 2 dst, 4 persistent, 8 hash, 16 random.
    pub flags: u16,
    /// IPv4 range (min, max).
    pub ipv4: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Port range (min, max).
    pub ports: Option<(u16, u16)>,
}

/// Nicira `learn` action: adds a flow built from the packet being processed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Learn {
    /// Idle timeout of the learned flow.
    pub idle_timeout: u16,
    /// Hard timeout of the learned flow.
    pub hard_timeout: u16,
    /// Priority of the learned flow.
    pub priority: u16,
    /// Cookie of the learned flow.
    pub cookie: u64,
    /// `NX_LEARN_F_*`.
    pub flags: u16,
    /// Table the learned flow goes to.
    pub table_id: u8,
    /// FIN idle timeout.
    pub fin_idle_timeout: u16,
    /// FIN hard timeout.
    pub fin_hard_timeout: u16,
    /// How the flow is built.
    pub specs: Vec<LearnSpec>,
}

/// One element of a `learn` action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LearnSpec {
    /// Width in bits.
    pub n_bits: u16,
    /// Where the bits come from.
    pub src: LearnSrc,
    /// What they become.
    pub dst: LearnDst,
}

/// Source of a learn spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LearnSrc {
    /// Bits of a field of the packet.
    Field(Field, u16),
    /// A constant.
    Immediate(u128),
}

/// Destination of a learn spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LearnDst {
    /// A match field of the learned flow.
    Match(Field, u16),
    /// A `load` action of the learned flow.
    Load(Field, u16),
    /// An `output` to the port in the source bits.
    Output,
}

fn check_bits(what: &'static str, f: Field, ofs: u16, n_bits: u16) -> Result<(), EncodeError> {
    let end = ofs as u32 + n_bits as u32;
    if n_bits == 0 || end > f.bits() as u32 {
        return Err(EncodeError::BitRange { what, ofs, end, width: f.bits() });
    }
    Ok(())
}

fn nx_header(out: &mut Vec<u8>, subtype: u16) -> usize {
    let start = out.len();
    out.put_u16(OFPAT_EXPERIMENTER);
    out.put_u16(0);
    out.put_u32(NX_VENDOR_ID);
    out.put_u16(subtype);
    start
}

fn finish(out: &mut Vec<u8>, start: usize, what: &'static str) -> Result<(), EncodeError> {
    out.pad_to_8(start);
    let len = len16(out.len() - start, what)?;
    out.patch_u16(start + 2, len);
    Ok(())
}

impl Action {
    /// Appends the action's wire form.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        match self {
            Action::Output { port, max_len } => {
                out.put_u16(OFPAT_OUTPUT);
                out.put_u16(16);
                out.put_u32(*port);
                out.put_u16(*max_len);
                out.put_zeros(6);
            }
            Action::Group(g) => {
                out.put_u16(OFPAT_GROUP);
                out.put_u16(8);
                out.put_u32(*g);
            }
            Action::SetField(mf) => {
                if mf.mask.is_some() {
                    return Err(EncodeError::Invalid {
                        what: "set_field",
                        reason: "OpenFlow 1.3 set_field takes no mask; use a load action for part of a field".into(),
                    });
                }
                out.put_u16(OFPAT_SET_FIELD);
                out.put_u16(0);
                mf.encode(out)?;
                finish(out, start, "set_field")?;
            }
            Action::PushVlan(tpid) => {
                out.put_u16(OFPAT_PUSH_VLAN);
                out.put_u16(8);
                out.put_u16(*tpid);
                out.put_zeros(2);
            }
            Action::PopVlan | Action::DecNwTtl => {
                out.put_u16(if *self == Action::PopVlan { OFPAT_POP_VLAN } else { OFPAT_DEC_NW_TTL });
                out.put_u16(8);
                out.put_zeros(4);
            }
            Action::Resubmit { in_port, table } => {
                nx_header(out, NXAST_RESUBMIT_TABLE);
                out.put_u16(*in_port);
                out.put_u8(*table);
                out.put_zeros(3);
                finish(out, start, "resubmit")?;
            }
            Action::OutputReg { src, ofs, n_bits, max_len } => {
                check_bits("output_reg", *src, *ofs, *n_bits)?;
                nx_header(out, NXAST_OUTPUT_REG);
                out.put_u16((ofs << 6) | (n_bits - 1));
                out.put_u32(src.nxm_header());
                out.put_u16(*max_len);
                out.put_zeros(6);
                finish(out, start, "output_reg")?;
            }
            Action::RegLoad { dst, ofs, n_bits, value } => {
                check_bits("load", *dst, *ofs, *n_bits)?;
                if *n_bits < 64 && *value >> n_bits != 0 {
                    return Err(EncodeError::Invalid { what: "load", reason: format!("value {value:#x} does not fit in {n_bits} bits") });
                }
                nx_header(out, NXAST_REG_LOAD);
                out.put_u16((ofs << 6) | (n_bits - 1));
                out.put_u32(dst.nxm_header());
                out.put_u64(*value);
                finish(out, start, "load")?;
            }
            Action::RegMove { src, src_ofs, dst, dst_ofs, n_bits } => {
                check_bits("move source", *src, *src_ofs, *n_bits)?;
                check_bits("move destination", *dst, *dst_ofs, *n_bits)?;
                nx_header(out, NXAST_REG_MOVE);
                out.put_u16(*n_bits);
                out.put_u16(*src_ofs);
                out.put_u16(*dst_ofs);
                out.put_u32(src.nxm_header());
                out.put_u32(dst.nxm_header());
                finish(out, start, "move")?;
            }
            Action::Conjunction { id, clause, n_clauses } => {
                if !(2..=64).contains(n_clauses) || *clause == 0 || clause > n_clauses {
                    return Err(EncodeError::Invalid {
                        what: "conjunction",
                        reason: format!("clause {clause}/{n_clauses} is not k/n with 1 <= k <= n and 2 <= n <= 64"),
                    });
                }
                nx_header(out, NXAST_CONJUNCTION);
                // On the wire the clause counts from zero.
                out.put_u8(clause - 1);
                out.put_u8(*n_clauses);
                out.put_u32(*id);
                finish(out, start, "conjunction")?;
            }
            Action::Ct(ct) => {
                nx_header(out, NXAST_CT);
                out.put_u16(ct.flags);
                match ct.zone {
                    CtZone::Imm(z) => {
                        out.put_u32(0);
                        out.put_u16(z);
                    }
                    CtZone::Field { field, ofs, n_bits } => {
                        check_bits("ct zone", field, ofs, n_bits)?;
                        out.put_u32(field.nxm_header());
                        out.put_u16((ofs << 6) | (n_bits - 1));
                    }
                }
                out.put_u8(ct.table.unwrap_or(NX_CT_RECIRC_NONE));
                out.put_zeros(3);
                out.put_u16(ct.alg);
                for a in &ct.actions {
                    a.encode(out)?;
                }
                finish(out, start, "ct")?;
            }
            Action::Nat(nat) => {
                nx_header(out, NXAST_NAT);
                out.put_zeros(2);
                out.put_u16(nat.flags);
                let mut present = 0u16;
                if nat.ipv4.is_some() {
                    present |= 1 | 2;
                }
                if nat.ports.is_some() {
                    present |= 16 | 32;
                }
                out.put_u16(present);
                if let Some((lo, hi)) = nat.ipv4 {
                    out.put_u32(lo.into());
                    out.put_u32(hi.into());
                }
                if let Some((lo, hi)) = nat.ports {
                    out.put_u16(lo);
                    out.put_u16(hi);
                }
                finish(out, start, "nat")?;
            }
            Action::Learn(l) => {
                nx_header(out, NXAST_LEARN);
                out.put_u16(l.idle_timeout);
                out.put_u16(l.hard_timeout);
                out.put_u16(l.priority);
                out.put_u64(l.cookie);
                out.put_u16(l.flags);
                out.put_u8(l.table_id);
                out.put_u8(0);
                out.put_u16(l.fin_idle_timeout);
                out.put_u16(l.fin_hard_timeout);
                for s in &l.specs {
                    s.encode(out)?;
                }
                finish(out, start, "learn")?;
            }
            Action::Experimenter { experimenter, data } => {
                out.put_u16(OFPAT_EXPERIMENTER);
                out.put_u16(0);
                out.put_u32(*experimenter);
                out.extend_from_slice(data);
                if !(out.len() - start).is_multiple_of(8) {
                    return Err(EncodeError::Invalid { what: "experimenter action", reason: "length is not a multiple of 8".into() });
                }
                finish(out, start, "experimenter action")?;
            }
            Action::Other { kind, data } => {
                out.put_u16(*kind);
                out.put_u16(0);
                out.extend_from_slice(data);
                if !(out.len() - start).is_multiple_of(8) {
                    return Err(EncodeError::Invalid { what: "action", reason: "length is not a multiple of 8".into() });
                }
                finish(out, start, "action")?;
            }
        }
        Ok(())
    }

    /// Decodes one action.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Action, DecodeError> {
        let kind = r.u16()?;
        let len = r.u16()? as usize;
        if len < 8 || !len.is_multiple_of(8) {
            return Err(DecodeError::BadLength { what: "action", len, reason: "must be a multiple of 8 and at least 8" });
        }
        let mut b = r.sub(len - 4, "action")?;
        Ok(match kind {
            OFPAT_OUTPUT => {
                let port = b.u32()?;
                let max_len = b.u16()?;
                Action::Output { port, max_len }
            }
            OFPAT_GROUP => Action::Group(b.u32()?),
            OFPAT_SET_FIELD => {
                let mf = MatchField::decode(&mut b)?;
                if mf.mask.is_some() {
                    return Err(DecodeError::Invalid { what: "set_field", reason: "masked set_field is not OpenFlow 1.3".into() });
                }
                Action::SetField(mf)
            }
            OFPAT_PUSH_VLAN => Action::PushVlan(b.u16()?),
            OFPAT_POP_VLAN => Action::PopVlan,
            OFPAT_DEC_NW_TTL => Action::DecNwTtl,
            OFPAT_EXPERIMENTER => {
                let experimenter = b.u32()?;
                let data = b.clone().rest().to_vec();
                if experimenter == NX_VENDOR_ID {
                    if let Some(a) = decode_nx(&mut b)? {
                        return Ok(a);
                    }
                }
                Action::Experimenter { experimenter, data }
            }
            _ => Action::Other { kind, data: b.rest().to_vec() },
        })
    }
}

fn field_of(h: u32, what: &'static str) -> Result<Field, DecodeError> {
    Field::from_nxm_header(h).ok_or_else(|| DecodeError::Invalid { what, reason: format!("unknown field header {h:#010x}") })
}

/// Decodes a Nicira action body after the vendor id; `None` for subtypes the codec keeps raw.
fn decode_nx(b: &mut Reader<'_>) -> Result<Option<Action>, DecodeError> {
    let subtype = b.u16()?;
    Ok(Some(match subtype {
        NXAST_RESUBMIT_TABLE => Action::Resubmit { in_port: b.u16()?, table: b.u8()? },
        NXAST_OUTPUT_REG => {
            let ofs_nbits = b.u16()?;
            let src = field_of(b.u32()?, "output_reg")?;
            Action::OutputReg { src, ofs: ofs_nbits >> 6, n_bits: (ofs_nbits & 0x3f) + 1, max_len: b.u16()? }
        }
        NXAST_REG_LOAD => {
            let ofs_nbits = b.u16()?;
            let dst = field_of(b.u32()?, "load")?;
            Action::RegLoad { dst, ofs: ofs_nbits >> 6, n_bits: (ofs_nbits & 0x3f) + 1, value: b.u64()? }
        }
        NXAST_REG_MOVE => {
            let n_bits = b.u16()?;
            let src_ofs = b.u16()?;
            let dst_ofs = b.u16()?;
            let src = field_of(b.u32()?, "move")?;
            let dst = field_of(b.u32()?, "move")?;
            Action::RegMove { src, src_ofs, dst, dst_ofs, n_bits }
        }
        NXAST_CONJUNCTION => {
            let clause = b.u8()?;
            let n_clauses = b.u8()?;
            let id = b.u32()?;
            if !(2..=64).contains(&n_clauses) || clause >= n_clauses {
                return Err(DecodeError::Invalid { what: "conjunction", reason: format!("clause {clause} of {n_clauses} (zero-based) is out of range") });
            }
            Action::Conjunction { id, clause: clause + 1, n_clauses }
        }
        NXAST_CT => {
            let flags = b.u16()?;
            let zone_src = b.u32()?;
            let z = b.u16()?;
            let zone =
                if zone_src == 0 { CtZone::Imm(z) } else { CtZone::Field { field: field_of(zone_src, "ct zone")?, ofs: z >> 6, n_bits: (z & 0x3f) + 1 } };
            let t = b.u8()?;
            b.skip(3)?;
            let alg = b.u16()?;
            let mut actions = Vec::new();
            while !b.is_empty() {
                actions.push(Action::decode(b)?);
            }
            Action::Ct(Ct { flags, zone, table: (t != NX_CT_RECIRC_NONE).then_some(t), alg, actions })
        }
        NXAST_NAT => {
            b.skip(2)?;
            let flags = b.u16()?;
            let present = b.u16()?;
            if present & !(1 | 2 | 16 | 32) != 0 {
                return Ok(None);
            }
            let ipv4 = if present & 3 == 3 {
                Some((Ipv4Addr::from(b.u32()?), Ipv4Addr::from(b.u32()?)))
            } else if present & 3 != 0 {
                return Ok(None);
            } else {
                None
            };
            let ports = if present & 48 == 48 {
                Some((b.u16()?, b.u16()?))
            } else if present & 48 != 0 {
                return Ok(None);
            } else {
                None
            };
            Action::Nat(Nat { flags, ipv4, ports })
        }
        NXAST_LEARN => {
            let mut l = Learn {
                idle_timeout: b.u16()?,
                hard_timeout: b.u16()?,
                priority: b.u16()?,
                cookie: b.u64()?,
                flags: b.u16()?,
                table_id: b.u8()?,
                ..Learn::default()
            };
            b.skip(1)?;
            l.fin_idle_timeout = b.u16()?;
            l.fin_hard_timeout = b.u16()?;
            while b.remaining() >= 2 && b.peek_u16()? != 0 {
                l.specs.push(LearnSpec::decode(b)?);
            }
            Action::Learn(l)
        }
        _ => return Ok(None),
    }))
}

const LEARN_SRC_IMMEDIATE: u16 = 1 << 13;
const LEARN_DST_LOAD: u16 = 1 << 11;
const LEARN_DST_OUTPUT: u16 = 2 << 11;

impl LearnSpec {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.n_bits == 0 || self.n_bits > 0x3ff {
            return Err(EncodeError::Invalid { what: "learn", reason: format!("n_bits {} out of range 1..=1023", self.n_bits) });
        }
        let mut h = self.n_bits;
        if matches!(self.src, LearnSrc::Immediate(_)) {
            h |= LEARN_SRC_IMMEDIATE;
        }
        match self.dst {
            LearnDst::Match(..) => {}
            LearnDst::Load(..) => h |= LEARN_DST_LOAD,
            LearnDst::Output => h |= LEARN_DST_OUTPUT,
        }
        out.put_u16(h);
        match self.src {
            LearnSrc::Field(f, ofs) => {
                check_bits("learn source", f, ofs, self.n_bits)?;
                out.put_u32(f.nxm_header());
                out.put_u16(ofs);
            }
            LearnSrc::Immediate(v) => {
                let n = 2 * self.n_bits.div_ceil(16) as usize;
                if n > 16 || (self.n_bits < 128 && v >> self.n_bits != 0) {
                    return Err(EncodeError::Invalid { what: "learn", reason: format!("immediate {v:#x} does not fit in {} bits", self.n_bits) });
                }
                out.put_uint(v, n);
            }
        }
        match self.dst {
            LearnDst::Match(f, ofs) | LearnDst::Load(f, ofs) => {
                check_bits("learn destination", f, ofs, self.n_bits)?;
                out.put_u32(f.nxm_header());
                out.put_u16(ofs);
            }
            LearnDst::Output => {}
        }
        Ok(())
    }

    fn decode(b: &mut Reader<'_>) -> Result<LearnSpec, DecodeError> {
        let h = b.u16()?;
        let n_bits = h & 0x3ff;
        let src = if h & LEARN_SRC_IMMEDIATE != 0 {
            let n = 2 * n_bits.div_ceil(16) as usize;
            if n > 16 {
                return Err(DecodeError::Invalid { what: "learn", reason: "immediate wider than 128 bits".into() });
            }
            LearnSrc::Immediate(b.uint(n)?)
        } else {
            LearnSrc::Field(field_of(b.u32()?, "learn")?, b.u16()?)
        };
        let dst = match (h >> 11) & 3 {
            0 => LearnDst::Match(field_of(b.u32()?, "learn")?, b.u16()?),
            1 => LearnDst::Load(field_of(b.u32()?, "learn")?, b.u16()?),
            2 => LearnDst::Output,
            _ => return Err(DecodeError::Invalid { what: "learn", reason: "reserved destination type 3".into() }),
        };
        Ok(LearnSpec { n_bits, src, dst })
    }
}

/// Encodes a list of actions.
pub(crate) fn encode_actions(actions: &[Action], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    actions.iter().try_for_each(|a| a.encode(out))
}

/// Decodes actions until the reader is empty.
pub(crate) fn decode_actions(r: &mut Reader<'_>) -> Result<Vec<Action>, DecodeError> {
    let mut v = Vec::new();
    while !r.is_empty() {
        v.push(Action::decode(r)?);
    }
    Ok(v)
}
