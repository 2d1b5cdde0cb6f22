//! OpenFlow 1.3 instructions.

use super::action::{decode_actions, encode_actions, Action};
use super::error::{DecodeError, EncodeError};
use super::wire::{len16, Put, Reader};

/// An instruction of a flow entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// Continue in a later table.
    GotoTable(u8),
    /// Write bits of the metadata register.
    WriteMetadata {
        /// Value.
        metadata: u64,
        /// Bits written.
        mask: u64,
    },
    /// Merge actions into the action set.
    WriteActions(Vec<Action>),
    /// Apply actions now.
    ApplyActions(Vec<Action>),
    /// Clear the action set.
    ClearActions,
    /// Send through a meter.
    Meter(u32),
    /// An instruction the codec does not interpret, kept byte for byte.
    Other {
        /// Instruction type.
        kind: u16,
        /// Bytes after type and length.
        data: Vec<u8>,
    },
}

impl Instruction {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        match self {
            Instruction::GotoTable(t) => {
                out.put_u16(1);
                out.put_u16(8);
                out.put_u8(*t);
                out.put_zeros(3);
            }
            Instruction::WriteMetadata { metadata, mask } => {
                out.put_u16(2);
                out.put_u16(24);
                out.put_zeros(4);
                out.put_u64(*metadata);
                out.put_u64(*mask);
            }
            Instruction::WriteActions(a) | Instruction::ApplyActions(a) => {
                out.put_u16(if matches!(self, Instruction::WriteActions(_)) { 3 } else { 4 });
                out.put_u16(0);
                out.put_zeros(4);
                encode_actions(a, out)?;
                let len = len16(out.len() - start, "instruction")?;
                out.patch_u16(start + 2, len);
            }
            Instruction::ClearActions => {
                out.put_u16(5);
                out.put_u16(8);
                out.put_zeros(4);
            }
            Instruction::Meter(m) => {
                out.put_u16(6);
                out.put_u16(8);
                out.put_u32(*m);
            }
            Instruction::Other { kind, data } => {
                out.put_u16(*kind);
                out.put_u16(len16(4 + data.len(), "instruction")?);
                out.extend_from_slice(data);
            }
        }
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Instruction, DecodeError> {
        let kind = r.u16()?;
        let len = r.u16()? as usize;
        if len < 8 {
            return Err(DecodeError::BadLength { what: "instruction", len, reason: "less than 8" });
        }
        let mut b = r.sub(len - 4, "instruction")?;
        Ok(match kind {
            1 => Instruction::GotoTable(b.u8()?),
            2 => {
                b.skip(4)?;
                Instruction::WriteMetadata { metadata: b.u64()?, mask: b.u64()? }
            }
            3 | 4 => {
                b.skip(4)?;
                let a = decode_actions(&mut b)?;
                if kind == 3 {
                    Instruction::WriteActions(a)
                } else {
                    Instruction::ApplyActions(a)
                }
            }
            5 => Instruction::ClearActions,
            6 => Instruction::Meter(b.u32()?),
            _ => Instruction::Other { kind, data: b.rest().to_vec() },
        })
    }
}

impl Instruction {
    /// Position in the order a switch executes (and reports) instructions: meter, apply,
    /// clear, write actions, write metadata, goto table (OpenFlow 1.3 §5.9).
    pub fn execution_rank(&self) -> u8 {
        match self {
            Instruction::Meter(_) => 0,
            Instruction::ApplyActions(_) => 1,
            Instruction::ClearActions => 2,
            Instruction::WriteActions(_) => 3,
            Instruction::WriteMetadata { .. } => 4,
            Instruction::GotoTable(_) => 5,
            Instruction::Other { .. } => 6,
        }
    }
}

pub(crate) fn encode_instructions(v: &[Instruction], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    // A switch applies instructions in a fixed order whatever their order on the wire, but it
    // refuses a list with two of one kind; refuse it here so nothing is dropped silently.
    let mut seen = std::collections::HashSet::new();
    for i in v {
        let k = std::mem::discriminant(i);
        if !matches!(i, Instruction::Other { .. }) && !seen.insert(k) {
            return Err(EncodeError::Invalid { what: "instructions", reason: format!("{i:?} repeats an instruction kind") });
        }
        i.encode(out)?;
    }
    Ok(())
}

pub(crate) fn decode_instructions(r: &mut Reader<'_>) -> Result<Vec<Instruction>, DecodeError> {
    let mut v = Vec::new();
    while !r.is_empty() {
        v.push(Instruction::decode(r)?);
    }
    Ok(v)
}
