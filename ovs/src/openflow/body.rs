//! The bodies of OpenFlow 1.3 messages: one type per message kind, with the constants that
//! go with it.

use std::fmt;

use super::action::{Action, OFPP_ANY};
use super::error::{DecodeError, EncodeError};
use super::instruction::Instruction;
use super::message::{Message, OFPG_ANY, OFPTT_ALL, OFP_NO_BUFFER, OFP_VERSION};
use super::oxm::Match;
use super::wire::{Put, Reader};

/// Hello: the header version and, if present, the version bitmap element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Highest version the sender supports (header field).
    pub version: u8,
    /// Bitmap of supported versions (bit n = wire version n).
    pub bitmap: Option<u32>,
}

impl Hello {
    /// Our hello: OpenFlow 1.3 only.
    pub fn of13() -> Hello {
        Hello { version: OFP_VERSION, bitmap: Some(1 << OFP_VERSION) }
    }

    /// Whether the peer can speak OpenFlow 1.3.
    pub fn supports_of13(&self) -> bool {
        match self.bitmap {
            Some(b) => b & (1 << OFP_VERSION) != 0,
            None => self.version >= OFP_VERSION,
        }
    }
}

/// An error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    /// `OFPET_*` (0xffff = experimenter).
    pub err_type: u16,
    /// Code within the type (the experimenter type for experimenter errors).
    pub code: u16,
    /// Experimenter id, for experimenter errors.
    pub experimenter: Option<u32>,
    /// Usually the start of the offending request.
    pub data: Vec<u8>,
}

/// `OFPET_BAD_REQUEST`.
pub const OFPET_BAD_REQUEST: u16 = 1;
/// `OFPBRC_IS_SLAVE`: a slave controller tried to change state.
pub const OFPBRC_IS_SLAVE: u16 = 10;
/// `OFPET_BAD_MATCH`.
pub const OFPET_BAD_MATCH: u16 = 4;
/// `OFPET_FLOW_MOD_FAILED`.
pub const OFPET_FLOW_MOD_FAILED: u16 = 5;
/// `OFPET_ROLE_REQUEST_FAILED`.
pub const OFPET_ROLE_REQUEST_FAILED: u16 = 11;

impl ErrorMsg {
    /// The symbolic name of the error type.
    pub fn type_name(&self) -> &'static str {
        match self.err_type {
            0 => "OFPET_HELLO_FAILED",
            1 => "OFPET_BAD_REQUEST",
            2 => "OFPET_BAD_ACTION",
            3 => "OFPET_BAD_INSTRUCTION",
            4 => "OFPET_BAD_MATCH",
            5 => "OFPET_FLOW_MOD_FAILED",
            6 => "OFPET_GROUP_MOD_FAILED",
            7 => "OFPET_PORT_MOD_FAILED",
            8 => "OFPET_TABLE_MOD_FAILED",
            9 => "OFPET_QUEUE_OP_FAILED",
            10 => "OFPET_SWITCH_CONFIG_FAILED",
            11 => "OFPET_ROLE_REQUEST_FAILED",
            12 => "OFPET_METER_MOD_FAILED",
            13 => "OFPET_TABLE_FEATURES_FAILED",
            0xffff => "OFPET_EXPERIMENTER",
            _ => "unknown error type",
        }
    }

    /// Whether this is "you are a slave" (`OFPBRC_IS_SLAVE`).
    pub fn is_slave(&self) -> bool {
        self.err_type == OFPET_BAD_REQUEST && self.code == OFPBRC_IS_SLAVE
    }
}

impl fmt::Display for ErrorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) code {}", self.type_name(), self.err_type, self.code)?;
        if let Some(e) = self.experimenter {
            write!(f, " experimenter {e:#010x}")?;
        }
        if let [OFP_VERSION, t, ..] = self.data.as_slice() {
            write!(f, " for message type {t}")?;
        }
        Ok(())
    }
}

/// Features reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SwitchFeatures {
    /// Datapath id.
    pub datapath_id: u64,
    /// Packets the switch can buffer.
    pub n_buffers: u32,
    /// Number of tables.
    pub n_tables: u8,
    /// Auxiliary connection id (0 = main).
    pub auxiliary_id: u8,
    /// `OFPC_*` bits.
    pub capabilities: u32,
}

/// Switch configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SwitchConfig {
    /// `OFPC_FRAG_*`.
    pub flags: u16,
    /// Bytes of a table-miss packet sent to the controller.
    pub miss_send_len: u16,
}

/// A port description (`ofp_port`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Port {
    /// Port number.
    pub port_no: u32,
    /// MAC address.
    pub hw_addr: [u8; 6],
    /// Name (at most 15 bytes).
    pub name: String,
    /// `OFPPC_*`.
    pub config: u32,
    /// `OFPPS_*` (bit 0: link down).
    pub state: u32,
    /// Current features.
    pub curr: u32,
    /// Advertised features.
    pub advertised: u32,
    /// Supported features.
    pub supported: u32,
    /// Peer's features.
    pub peer: u32,
    /// Current speed, kbit/s.
    pub curr_speed: u32,
    /// Maximum speed, kbit/s.
    pub max_speed: u32,
}

const PORT_LEN: usize = 64;

impl Port {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.name.len() > 15 {
            return Err(EncodeError::Invalid { what: "port", reason: format!("name {:?} is longer than 15 bytes", self.name) });
        }
        out.put_u32(self.port_no);
        out.put_zeros(4);
        out.extend_from_slice(&self.hw_addr);
        out.put_zeros(2);
        out.extend_from_slice(self.name.as_bytes());
        out.put_zeros(16 - self.name.len());
        for v in [self.config, self.state, self.curr, self.advertised, self.supported, self.peer, self.curr_speed, self.max_speed] {
            out.put_u32(v);
        }
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Port, DecodeError> {
        let mut b = r.sub(PORT_LEN, "port")?;
        let port_no = b.u32()?;
        b.skip(4)?;
        let mut hw_addr = [0u8; 6];
        hw_addr.copy_from_slice(b.bytes(6)?);
        b.skip(2)?;
        let raw = b.bytes(16)?;
        let end = raw.iter().position(|&c| c == 0).unwrap_or(16);
        let name = String::from_utf8_lossy(raw.get(..end).unwrap_or(raw)).into_owned();
        Ok(Port {
            port_no,
            hw_addr,
            name,
            config: b.u32()?,
            state: b.u32()?,
            curr: b.u32()?,
            advertised: b.u32()?,
            supported: b.u32()?,
            peer: b.u32()?,
            curr_speed: b.u32()?,
            max_speed: b.u32()?,
        })
    }
}

/// Why a switch sent a port status (`ofp_port_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortReason {
    /// The port was added.
    Add,
    /// The port was removed.
    Delete,
    /// Some attribute of the port changed.
    Modify,
    /// A reason OpenFlow 1.3 does not define, kept as sent.
    Other(u8),
}

impl From<u8> for PortReason {
    fn from(v: u8) -> PortReason {
        match v {
            0 => PortReason::Add,
            1 => PortReason::Delete,
            2 => PortReason::Modify,
            v => PortReason::Other(v),
        }
    }
}

impl From<PortReason> for u8 {
    fn from(r: PortReason) -> u8 {
        match r {
            PortReason::Add => 0,
            PortReason::Delete => 1,
            PortReason::Modify => 2,
            PortReason::Other(v) => v,
        }
    }
}

/// Port status: why, and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStatus {
    /// Why it was sent.
    pub reason: PortReason,
    /// The port.
    pub port: Port,
}

/// Packet-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketIn {
    /// Buffer id (`OFP_NO_BUFFER` = none).
    pub buffer_id: u32,
    /// Full length of the frame.
    pub total_len: u16,
    /// 0 no match, 1 action, 2 invalid TTL.
    pub reason: u8,
    /// Table the packet was in.
    pub table_id: u8,
    /// Cookie of the flow that sent it.
    pub cookie: u64,
    /// Packet metadata (in_port, registers, tunnel).
    pub match_: Match,
    /// The frame (or its start).
    pub data: Vec<u8>,
}

/// Packet-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketOut {
    /// Buffer id (`OFP_NO_BUFFER` = the packet is in `data`).
    pub buffer_id: u32,
    /// Input port the packet pretends to come from.
    pub in_port: u32,
    /// Actions to apply.
    pub actions: Vec<Action>,
    /// The frame.
    pub data: Vec<u8>,
}

/// Flow-mod command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowModCommand {
    /// Add (replaces an identical match and priority).
    Add,
    /// Modify the instructions of all matching flows.
    Modify,
    /// Modify the flow with exactly this match and priority.
    ModifyStrict,
    /// Delete all flows the match covers (filtered by cookie/mask, out_port).
    Delete,
    /// Delete the flow with exactly this match and priority.
    DeleteStrict,
}

impl FlowModCommand {
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
    pub(crate) fn from_code(c: u8) -> Result<Self, DecodeError> {
        use FlowModCommand::*;
        [Add, Modify, ModifyStrict, Delete, DeleteStrict]
            .get(c as usize)
            .copied()
            .ok_or_else(|| DecodeError::Invalid { what: "flow_mod", reason: format!("unknown command {c}") })
    }
}

/// Flow-mod `OFPFF_SEND_FLOW_REM`.
pub const OFPFF_SEND_FLOW_REM: u16 = 1;
/// Flow-mod `OFPFF_CHECK_OVERLAP`.
pub const OFPFF_CHECK_OVERLAP: u16 = 2;
/// Flow-mod `OFPFF_RESET_COUNTS`.
pub const OFPFF_RESET_COUNTS: u16 = 4;

/// Flow-mod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowMod {
    /// Cookie (on add) or the cookie to filter by (modify/delete with `cookie_mask`).
    pub cookie: u64,
    /// Bits of `cookie` that must match for modify/delete.
    pub cookie_mask: u64,
    /// Table (`OFPTT_ALL` for delete in every table).
    pub table_id: u8,
    /// Command.
    pub command: FlowModCommand,
    /// Idle timeout, seconds (0 = none).
    pub idle_timeout: u16,
    /// Hard timeout, seconds (0 = none).
    pub hard_timeout: u16,
    /// Priority.
    pub priority: u16,
    /// Buffered packet to apply the flow to.
    pub buffer_id: u32,
    /// For delete: only flows that output to this port.
    pub out_port: u32,
    /// For delete: only flows that output to this group.
    pub out_group: u32,
    /// `OFPFF_*`.
    pub flags: u16,
    /// The match.
    pub match_: Match,
    /// Instructions.
    pub instructions: Vec<Instruction>,
}

impl FlowMod {
    /// An add of `match_` at `priority` in `table` with no instructions yet.
    pub fn add(table_id: u8, priority: u16, match_: Match) -> FlowMod {
        FlowMod {
            cookie: 0,
            cookie_mask: 0,
            table_id,
            command: FlowModCommand::Add,
            idle_timeout: 0,
            hard_timeout: 0,
            priority,
            buffer_id: OFP_NO_BUFFER,
            out_port: OFPP_ANY,
            out_group: OFPG_ANY,
            flags: 0,
            match_,
            instructions: Vec::new(),
        }
    }

    /// A (non-strict) delete of every flow in every table whose cookie matches `cookie` under
    /// `mask`.
    pub fn delete_by_cookie(cookie: u64, mask: u64) -> FlowMod {
        FlowMod { cookie, cookie_mask: mask, table_id: OFPTT_ALL, command: FlowModCommand::Delete, ..FlowMod::add(0, 0, Match::new()) }
    }

    /// The flow as a switch reports it back: match prerequisites filled in (or refused) and
    /// instructions in execution order. Compare desired flows in this form.
    pub fn normalized(&self) -> Result<FlowMod, EncodeError> {
        let mut f = self.clone();
        f.match_ = f.match_.normalized()?;
        // An empty apply-actions does nothing, and switches do not report it back.
        f.instructions.retain(|i| !matches!(i, Instruction::ApplyActions(a) if a.is_empty()));
        f.instructions.sort_by_key(Instruction::execution_rank);
        Ok(f)
    }

    /// Sets the cookie.
    pub fn cookie(mut self, c: u64) -> Self {
        self.cookie = c;
        self
    }

    /// Appends an apply-actions instruction.
    pub fn apply(mut self, actions: Vec<Action>) -> Self {
        self.instructions.push(Instruction::ApplyActions(actions));
        self
    }

    /// Adds a meter instruction: the flow's packets pass through meter `id` first.
    pub fn meter(mut self, id: u32) -> Self {
        self.instructions.push(Instruction::Meter(id));
        self
    }

    /// Appends a goto-table instruction.
    pub fn goto(mut self, table: u8) -> Self {
        self.instructions.push(Instruction::GotoTable(table));
        self
    }
}

/// Meter-mod (OpenFlow 1.3, 7.3.4.4): a meter limits the rate of the packets (or kilobits)
/// of every flow whose instructions name it; a drop band discards what exceeds its rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterMod {
    /// [`MeterMod::ADD`], [`MeterMod::MODIFY`] or [`MeterMod::DELETE`].
    pub command: u16,
    /// `OFPMF_*`: [`MeterMod::PKTPS`] (rates in packets per second, else kbit/s),
    /// [`MeterMod::BURST`] (use the bands' burst sizes), [`MeterMod::STATS`].
    pub flags: u16,
    /// Meter id (1 and up).
    pub meter_id: u32,
    /// Drop bands.
    pub bands: Vec<MeterBand>,
}

impl MeterMod {
    /// Command: add a meter.
    pub const ADD: u16 = 0;
    /// Command: change a meter.
    pub const MODIFY: u16 = 1;
    /// Command: remove a meter.
    pub const DELETE: u16 = 2;
    /// Flag: rates in kilobits per second.
    pub const KBPS: u16 = 1;
    /// Flag: rates in packets per second.
    pub const PKTPS: u16 = 2;
    /// Flag: bands have a burst size.
    pub const BURST: u16 = 4;
    /// Flag: keep statistics.
    pub const STATS: u16 = 8;

    /// A meter dropping packets beyond `rate` per second, with bursts of `burst`.
    pub fn drop_above(meter_id: u32, rate: u32, burst: u32) -> MeterMod {
        MeterMod {
            command: MeterMod::ADD,
            flags: MeterMod::PKTPS | MeterMod::BURST | MeterMod::STATS,
            meter_id,
            bands: vec![MeterBand { rate, burst_size: burst }],
        }
    }
}

/// A drop band of a meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterBand {
    /// Rate above which packets are dropped.
    pub rate: u32,
    /// Burst size.
    pub burst_size: u32,
}

/// Group-mod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMod {
    /// 0 add, 1 modify, 2 delete.
    pub command: u16,
    /// 0 all, 1 select, 2 indirect, 3 fast failover.
    pub group_type: u8,
    /// Group id.
    pub group_id: u32,
    /// Buckets.
    pub buckets: Vec<Bucket>,
}

/// A group bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Weight (select groups).
    pub weight: u16,
    /// Port whose liveness the bucket depends on (fast failover).
    pub watch_port: u32,
    /// Group whose liveness the bucket depends on.
    pub watch_group: u32,
    /// Actions.
    pub actions: Vec<Action>,
}

/// Controller role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Only ask for the current role.
    NoChange,
    /// Full access, shared with other equal controllers.
    Equal,
    /// Full access; every other controller becomes slave.
    Master,
    /// Read-only.
    Slave,
}

impl Role {
    pub(crate) fn code(self) -> u32 {
        self as u32
    }
    pub(crate) fn from_code(c: u32) -> Result<Self, DecodeError> {
        use Role::*;
        [NoChange, Equal, Master, Slave].get(c as usize).copied().ok_or_else(|| DecodeError::Invalid { what: "role", reason: format!("unknown role {c}") })
    }
}

/// Role request or reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMsg {
    /// Role.
    pub role: Role,
    /// Generation id: the switch refuses master/slave requests with a stale one.
    pub generation_id: u64,
}

/// Bundle control types.
pub mod bundle {
    /// Open a bundle.
    pub const OPEN_REQUEST: u16 = 0;
    /// Bundle opened.
    pub const OPEN_REPLY: u16 = 1;
    /// Close a bundle.
    pub const CLOSE_REQUEST: u16 = 2;
    /// Bundle closed.
    pub const CLOSE_REPLY: u16 = 3;
    /// Commit a bundle.
    pub const COMMIT_REQUEST: u16 = 4;
    /// Bundle committed.
    pub const COMMIT_REPLY: u16 = 5;
    /// Discard a bundle.
    pub const DISCARD_REQUEST: u16 = 6;
    /// Bundle discarded.
    pub const DISCARD_REPLY: u16 = 7;
    /// Flag: all or nothing.
    pub const ATOMIC: u16 = 1;
    /// Flag: apply in order.
    pub const ORDERED: u16 = 2;
}

/// Bundle control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleControl {
    /// Bundle id.
    pub bundle_id: u32,
    /// `bundle::*_REQUEST` / `*_REPLY`.
    pub ctrl_type: u16,
    /// `bundle::ATOMIC`, `bundle::ORDERED`.
    pub flags: u16,
}

/// Bundle add message. The inner message carries the outer message's xid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleAdd {
    /// Bundle id.
    pub bundle_id: u32,
    /// Same flags as the bundle's open.
    pub flags: u16,
    /// The message added.
    pub message: Box<Message>,
}
