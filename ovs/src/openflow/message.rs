//! OpenFlow 1.3 messages: the header, every message type Plexus uses, and a lossless
//! fallback for the rest.

use super::action::{decode_actions, encode_actions};
use super::body::*;
use super::error::{DecodeError, EncodeError};
use super::instruction::{decode_instructions, encode_instructions};
use super::multipart::{MultipartReply, MultipartRequest};
use super::oxm::Match;
use super::wire::{len16, Put, Reader};

/// OpenFlow 1.3's wire version.
pub const OFP_VERSION: u8 = 0x04;
/// Length of the common header.
pub const OFP_HEADER_LEN: usize = 8;
/// `buffer_id` meaning "no buffer".
pub const OFP_NO_BUFFER: u32 = 0xffff_ffff;
/// Group wildcard.
pub const OFPG_ANY: u32 = 0xffff_ffff;
/// Table wildcard (all tables) in requests.
pub const OFPTT_ALL: u8 = 0xff;
/// ONF's experimenter id (bundles in OpenFlow 1.3, extension 230).
pub const ONF_EXPERIMENTER_ID: u32 = 0x4f4e_4600;
const ONF_ET_BUNDLE_CONTROL: u32 = 2300;
const ONF_ET_BUNDLE_ADD_MESSAGE: u32 = 2301;

mod t {
    pub(super) const HELLO: u8 = 0;
    pub(super) const ERROR: u8 = 1;
    pub(super) const ECHO_REQUEST: u8 = 2;
    pub(super) const ECHO_REPLY: u8 = 3;
    pub(super) const EXPERIMENTER: u8 = 4;
    pub(super) const FEATURES_REQUEST: u8 = 5;
    pub(super) const FEATURES_REPLY: u8 = 6;
    pub(super) const GET_CONFIG_REQUEST: u8 = 7;
    pub(super) const GET_CONFIG_REPLY: u8 = 8;
    pub(super) const SET_CONFIG: u8 = 9;
    pub(super) const PACKET_IN: u8 = 10;
    pub(super) const PORT_STATUS: u8 = 12;
    pub(super) const PACKET_OUT: u8 = 13;
    pub(super) const FLOW_MOD: u8 = 14;
    pub(super) const GROUP_MOD: u8 = 15;
    pub(super) const METER_MOD: u8 = 29;
    pub(super) const MULTIPART_REQUEST: u8 = 18;
    pub(super) const MULTIPART_REPLY: u8 = 19;
    pub(super) const BARRIER_REQUEST: u8 = 20;
    pub(super) const BARRIER_REPLY: u8 = 21;
    pub(super) const ROLE_REQUEST: u8 = 24;
    pub(super) const ROLE_REPLY: u8 = 25;
}

/// An OpenFlow 1.3 message (the xid travels beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Version negotiation.
    Hello(Hello),
    /// An error, answering the request with the same xid.
    Error(ErrorMsg),
    /// Keep-alive request (the data is echoed back).
    EchoRequest(Vec<u8>),
    /// Keep-alive reply.
    EchoReply(Vec<u8>),
    /// Asks for the switch's datapath id and capabilities.
    FeaturesRequest,
    /// The switch's datapath id and capabilities.
    FeaturesReply(SwitchFeatures),
    /// Asks for the switch configuration.
    GetConfigRequest,
    /// The switch configuration.
    GetConfigReply(SwitchConfig),
    /// Sets the switch configuration.
    SetConfig(SwitchConfig),
    /// A packet sent to the controller.
    PacketIn(PacketIn),
    /// A port was added, removed or changed.
    PortStatus(PortStatus),
    /// A packet the controller sends out through the switch.
    PacketOut(PacketOut),
    /// Adds, changes or removes flows.
    FlowMod(FlowMod),
    /// Adds, changes or removes a group.
    GroupMod(GroupMod),
    /// Adds, changes or removes a meter.
    MeterMod(MeterMod),
    /// A statistics or description request.
    MultipartRequest(MultipartRequest),
    /// One part of a statistics or description reply.
    MultipartReply(MultipartReply),
    /// Asks the switch to finish everything before it.
    BarrierRequest,
    /// Everything before the barrier is done.
    BarrierReply,
    /// Asks for a controller role.
    RoleRequest(RoleMsg),
    /// The role granted.
    RoleReply(RoleMsg),
    /// Bundle open/close/commit/discard (ONF extension 230 in OpenFlow 1.3).
    BundleControl(BundleControl),
    /// A message added to an open bundle.
    BundleAdd(BundleAdd),
    /// Another experimenter message.
    Experimenter {
        /// Experimenter id.
        experimenter: u32,
        /// Experimenter-defined type.
        exp_type: u32,
        /// Body.
        data: Vec<u8>,
    },
    /// A message type the codec does not interpret, kept byte for byte.
    Other {
        /// Message type.
        msg_type: u8,
        /// Body after the header.
        body: Vec<u8>,
    },
}

fn header(out: &mut Vec<u8>, msg_type: u8, xid: u32) {
    out.put_u8(OFP_VERSION);
    out.put_u8(msg_type);
    out.put_u16(0);
    out.put_u32(xid);
}

impl Message {
    /// The OpenFlow message type number.
    pub fn msg_type(&self) -> u8 {
        use Message::*;
        match self {
            Hello(_) => t::HELLO,
            Error(_) => t::ERROR,
            EchoRequest(_) => t::ECHO_REQUEST,
            EchoReply(_) => t::ECHO_REPLY,
            FeaturesRequest => t::FEATURES_REQUEST,
            FeaturesReply(_) => t::FEATURES_REPLY,
            GetConfigRequest => t::GET_CONFIG_REQUEST,
            GetConfigReply(_) => t::GET_CONFIG_REPLY,
            SetConfig(_) => t::SET_CONFIG,
            PacketIn(_) => t::PACKET_IN,
            PortStatus(_) => t::PORT_STATUS,
            PacketOut(_) => t::PACKET_OUT,
            FlowMod(_) => t::FLOW_MOD,
            GroupMod(_) => t::GROUP_MOD,
            MeterMod(_) => t::METER_MOD,
            MultipartRequest(_) => t::MULTIPART_REQUEST,
            MultipartReply(_) => t::MULTIPART_REPLY,
            BarrierRequest => t::BARRIER_REQUEST,
            BarrierReply => t::BARRIER_REPLY,
            RoleRequest(_) => t::ROLE_REQUEST,
            RoleReply(_) => t::ROLE_REPLY,
            BundleControl(_) | BundleAdd(_) | Experimenter { .. } => t::EXPERIMENTER,
            Other { msg_type, .. } => *msg_type,
        }
    }

    /// Encodes the message with transaction id `xid`. Matches are normalized first
    /// (prerequisites filled in or refused), so an invalid match never leaves the process.
    pub fn encode(&self, xid: u32) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(xid, &mut out)?;
        Ok(out)
    }

    /// Like [`Message::encode`], appending to `out`.
    pub fn encode_into(&self, xid: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let res = self.encode_inner(xid, out, start);
        if res.is_err() {
            out.truncate(start);
        }
        res
    }

    fn encode_inner(&self, xid: u32, out: &mut Vec<u8>, start: usize) -> Result<(), EncodeError> {
        header(out, self.msg_type(), xid);
        match self {
            Message::Hello(h) => {
                if let Some(v) = out.get_mut(start) {
                    *v = h.version;
                }
                if let Some(b) = h.bitmap {
                    out.put_u16(1); // OFPHET_VERSIONBITMAP
                    out.put_u16(8);
                    out.put_u32(b);
                }
            }
            Message::Error(e) => {
                out.put_u16(e.err_type);
                out.put_u16(e.code);
                if let Some(x) = e.experimenter {
                    out.put_u32(x);
                }
                out.extend_from_slice(&e.data);
            }
            Message::EchoRequest(d) | Message::EchoReply(d) => out.extend_from_slice(d),
            Message::FeaturesRequest | Message::GetConfigRequest | Message::BarrierRequest | Message::BarrierReply => {}
            Message::FeaturesReply(f) => {
                out.put_u64(f.datapath_id);
                out.put_u32(f.n_buffers);
                out.put_u8(f.n_tables);
                out.put_u8(f.auxiliary_id);
                out.put_zeros(2);
                out.put_u32(f.capabilities);
                out.put_u32(0);
            }
            Message::GetConfigReply(c) | Message::SetConfig(c) => {
                out.put_u16(c.flags);
                out.put_u16(c.miss_send_len);
            }
            Message::PacketIn(p) => {
                out.put_u32(p.buffer_id);
                out.put_u16(p.total_len);
                out.put_u8(p.reason);
                out.put_u8(p.table_id);
                out.put_u64(p.cookie);
                p.match_.encode(out)?;
                out.put_zeros(2);
                out.extend_from_slice(&p.data);
            }
            Message::PortStatus(s) => {
                out.put_u8(s.reason.into());
                out.put_zeros(7);
                s.port.encode(out)?;
            }
            Message::PacketOut(p) => {
                out.put_u32(p.buffer_id);
                out.put_u32(p.in_port);
                let at = out.len();
                out.put_u16(0);
                out.put_zeros(6);
                let a0 = out.len();
                encode_actions(&p.actions, out)?;
                let alen = len16(out.len() - a0, "packet_out actions")?;
                out.patch_u16(at, alen);
                out.extend_from_slice(&p.data);
            }
            Message::FlowMod(f) => {
                out.put_u64(f.cookie);
                out.put_u64(f.cookie_mask);
                out.put_u8(f.table_id);
                out.put_u8(f.command.code());
                out.put_u16(f.idle_timeout);
                out.put_u16(f.hard_timeout);
                out.put_u16(f.priority);
                out.put_u32(f.buffer_id);
                out.put_u32(f.out_port);
                out.put_u32(f.out_group);
                out.put_u16(f.flags);
                out.put_zeros(2);
                let f = f.normalized()?;
                f.match_.encode(out)?;
                encode_instructions(&f.instructions, out)?;
            }
            Message::MeterMod(m) => {
                out.put_u16(m.command);
                out.put_u16(m.flags);
                out.put_u32(m.meter_id);
                for band in &m.bands {
                    // OFPMBT_DROP, 16 bytes.
                    out.put_u16(1);
                    out.put_u16(16);
                    out.put_u32(band.rate);
                    out.put_u32(band.burst_size);
                    out.put_zeros(4);
                }
            }
            Message::GroupMod(g) => {
                out.put_u16(g.command);
                out.put_u8(g.group_type);
                out.put_u8(0);
                out.put_u32(g.group_id);
                for b in &g.buckets {
                    let bs = out.len();
                    out.put_u16(0);
                    out.put_u16(b.weight);
                    out.put_u32(b.watch_port);
                    out.put_u32(b.watch_group);
                    out.put_zeros(4);
                    encode_actions(&b.actions, out)?;
                    let bl = len16(out.len() - bs, "bucket")?;
                    out.patch_u16(bs, bl);
                }
            }
            Message::MultipartRequest(m) => m.encode(out)?,
            Message::MultipartReply(m) => m.encode(out)?,
            Message::RoleRequest(r) | Message::RoleReply(r) => {
                out.put_u32(r.role.code());
                out.put_zeros(4);
                out.put_u64(r.generation_id);
            }
            Message::BundleControl(b) => {
                out.put_u32(ONF_EXPERIMENTER_ID);
                out.put_u32(ONF_ET_BUNDLE_CONTROL);
                out.put_u32(b.bundle_id);
                out.put_u16(b.ctrl_type);
                out.put_u16(b.flags);
            }
            Message::BundleAdd(b) => {
                if matches!(*b.message, Message::BundleAdd(_) | Message::BundleControl(_)) {
                    return Err(EncodeError::Invalid { what: "bundle_add", reason: "a bundle cannot contain bundle messages".into() });
                }
                out.put_u32(ONF_EXPERIMENTER_ID);
                out.put_u32(ONF_ET_BUNDLE_ADD_MESSAGE);
                out.put_u32(b.bundle_id);
                out.put_zeros(2);
                out.put_u16(b.flags);
                b.message.encode_into(xid, out)?;
            }
            Message::Experimenter { experimenter, exp_type, data } => {
                out.put_u32(*experimenter);
                out.put_u32(*exp_type);
                out.extend_from_slice(data);
            }
            Message::Other { body, .. } => out.extend_from_slice(body),
        }
        let len = len16(out.len() - start, "message")?;
        out.patch_u16(start + 2, len);
        Ok(())
    }

    /// Decodes exactly one message from `buf`; its length field must equal `buf.len()`.
    /// Returns the xid and the message.
    pub fn decode(buf: &[u8]) -> Result<(u32, Message), DecodeError> {
        let mut r = Reader::new(buf, "header");
        let version = r.u8()?;
        let msg_type = r.u8()?;
        let len = r.u16()? as usize;
        let xid = r.u32()?;
        if len < OFP_HEADER_LEN {
            return Err(DecodeError::BadLength { what: "header", len, reason: "less than the 8-byte header" });
        }
        if len != buf.len() {
            return Err(DecodeError::BadLength { what: "header", len, reason: "differs from the message's size" });
        }
        if msg_type == t::HELLO {
            return Ok((xid, Message::Hello(decode_hello(version, r.rest())?)));
        }
        if version != OFP_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let mut b = r;
        let m = match msg_type {
            t::ERROR => {
                let err_type = b.u16()?;
                let code = b.u16()?;
                let experimenter = if err_type == 0xffff { Some(b.u32()?) } else { None };
                Message::Error(ErrorMsg { err_type, code, experimenter, data: b.rest().to_vec() })
            }
            t::ECHO_REQUEST => Message::EchoRequest(b.rest().to_vec()),
            t::ECHO_REPLY => Message::EchoReply(b.rest().to_vec()),
            t::FEATURES_REQUEST => Message::FeaturesRequest,
            t::FEATURES_REPLY => {
                let f = SwitchFeatures {
                    datapath_id: b.u64()?,
                    n_buffers: b.u32()?,
                    n_tables: b.u8()?,
                    auxiliary_id: b.u8()?,
                    capabilities: {
                        b.skip(2)?;
                        b.u32()?
                    },
                };
                b.skip(4)?;
                Message::FeaturesReply(f)
            }
            t::GET_CONFIG_REQUEST => Message::GetConfigRequest,
            t::GET_CONFIG_REPLY | t::SET_CONFIG => {
                let c = SwitchConfig { flags: b.u16()?, miss_send_len: b.u16()? };
                if msg_type == t::SET_CONFIG {
                    Message::SetConfig(c)
                } else {
                    Message::GetConfigReply(c)
                }
            }
            t::PACKET_IN => {
                let buffer_id = b.u32()?;
                let total_len = b.u16()?;
                let reason = b.u8()?;
                let table_id = b.u8()?;
                let cookie = b.u64()?;
                let match_ = Match::decode(&mut b)?;
                b.skip(2)?;
                Message::PacketIn(PacketIn { buffer_id, total_len, reason, table_id, cookie, match_, data: b.rest().to_vec() })
            }
            t::PORT_STATUS => {
                let reason = b.u8()?;
                b.skip(7)?;
                Message::PortStatus(PortStatus { reason: reason.into(), port: Port::decode(&mut b)? })
            }
            t::PACKET_OUT => {
                let buffer_id = b.u32()?;
                let in_port = b.u32()?;
                let alen = b.u16()? as usize;
                b.skip(6)?;
                let mut a = b.sub(alen, "packet_out actions")?;
                let actions = decode_actions(&mut a)?;
                Message::PacketOut(PacketOut { buffer_id, in_port, actions, data: b.rest().to_vec() })
            }
            t::FLOW_MOD => {
                let cookie = b.u64()?;
                let cookie_mask = b.u64()?;
                let table_id = b.u8()?;
                let command = FlowModCommand::from_code(b.u8()?)?;
                let idle_timeout = b.u16()?;
                let hard_timeout = b.u16()?;
                let priority = b.u16()?;
                let buffer_id = b.u32()?;
                let out_port = b.u32()?;
                let out_group = b.u32()?;
                let flags = b.u16()?;
                b.skip(2)?;
                let match_ = Match::decode(&mut b)?;
                let instructions = decode_instructions(&mut b)?;
                Message::FlowMod(FlowMod {
                    cookie,
                    cookie_mask,
                    table_id,
                    command,
                    idle_timeout,
                    hard_timeout,
                    priority,
                    buffer_id,
                    out_port,
                    out_group,
                    flags,
                    match_,
                    instructions,
                })
            }
            t::GROUP_MOD => {
                let command = b.u16()?;
                let group_type = b.u8()?;
                b.skip(1)?;
                let group_id = b.u32()?;
                let mut buckets = Vec::new();
                while !b.is_empty() {
                    let blen = b.u16()? as usize;
                    if blen < 16 {
                        return Err(DecodeError::BadLength { what: "bucket", len: blen, reason: "less than 16" });
                    }
                    let mut bb = b.sub(blen - 2, "bucket")?;
                    let weight = bb.u16()?;
                    let watch_port = bb.u32()?;
                    let watch_group = bb.u32()?;
                    bb.skip(4)?;
                    buckets.push(Bucket { weight, watch_port, watch_group, actions: decode_actions(&mut bb)? });
                }
                Message::GroupMod(GroupMod { command, group_type, group_id, buckets })
            }
            t::METER_MOD => {
                let (command, flags, meter_id) = (b.u16()?, b.u16()?, b.u32()?);
                let mut bands = Vec::new();
                while !b.is_empty() {
                    let (band_type, len) = (b.u16()?, b.u16()? as usize);
                    if band_type != 1 || len != 16 {
                        return Err(DecodeError::BadLength { what: "meter band", len, reason: "only 16-byte drop bands are understood" });
                    }
                    let (rate, burst_size) = (b.u32()?, b.u32()?);
                    b.skip(4)?;
                    bands.push(MeterBand { rate, burst_size });
                }
                Message::MeterMod(MeterMod { command, flags, meter_id, bands })
            }
            t::MULTIPART_REQUEST => Message::MultipartRequest(MultipartRequest::decode(&mut b)?),
            t::MULTIPART_REPLY => Message::MultipartReply(MultipartReply::decode(&mut b)?),
            t::BARRIER_REQUEST => Message::BarrierRequest,
            t::BARRIER_REPLY => Message::BarrierReply,
            t::ROLE_REQUEST | t::ROLE_REPLY => {
                let role = Role::from_code(b.u32()?)?;
                b.skip(4)?;
                let r = RoleMsg { role, generation_id: b.u64()? };
                if msg_type == t::ROLE_REQUEST {
                    Message::RoleRequest(r)
                } else {
                    Message::RoleReply(r)
                }
            }
            t::EXPERIMENTER => {
                let experimenter = b.u32()?;
                let exp_type = b.u32()?;
                match (experimenter, exp_type) {
                    (ONF_EXPERIMENTER_ID, ONF_ET_BUNDLE_CONTROL) => {
                        let bc = BundleControl { bundle_id: b.u32()?, ctrl_type: b.u16()?, flags: b.u16()? };
                        Message::BundleControl(bc)
                    }
                    (ONF_EXPERIMENTER_ID, ONF_ET_BUNDLE_ADD_MESSAGE) => {
                        let bundle_id = b.u32()?;
                        b.skip(2)?;
                        let flags = b.u16()?;
                        let inner = b.clone().rest();
                        if inner.len() < OFP_HEADER_LEN {
                            return Err(DecodeError::Truncated { what: "bundle_add", need: OFP_HEADER_LEN, have: inner.len() });
                        }
                        let ilen = inner.get(2..4).and_then(|b| <[u8; 2]>::try_from(b).ok()).map_or(0, u16::from_be_bytes) as usize;
                        let (_, message) = Message::decode(b.bytes(ilen.max(OFP_HEADER_LEN).min(inner.len()))?)?;
                        Message::BundleAdd(BundleAdd { bundle_id, flags, message: Box::new(message) })
                    }
                    _ => Message::Experimenter { experimenter, exp_type, data: b.rest().to_vec() },
                }
            }
            _ => Message::Other { msg_type, body: b.rest().to_vec() },
        };
        Ok((xid, m))
    }
}

fn decode_hello(version: u8, body: &[u8]) -> Result<Hello, DecodeError> {
    let mut r = Reader::new(body, "hello");
    let mut bitmap = None;
    while r.remaining() >= 4 {
        let et = r.u16()?;
        let len = r.u16()? as usize;
        if len < 4 {
            return Err(DecodeError::BadLength { what: "hello element", len, reason: "less than 4" });
        }
        let mut e = r.sub(len - 4, "hello element")?;
        r.skip((len.div_ceil(8) * 8 - len).min(r.remaining()))?;
        if et == 1 && bitmap.is_none() {
            bitmap = Some(e.u32()?);
        }
    }
    Ok(Hello { version, bitmap })
}

/// Given the start of a byte stream, the length of the first message if it is all there.
/// A length field below the header size is an error (the stream cannot be resynchronized).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < OFP_HEADER_LEN {
        return Ok(None);
    }
    let len = buf.get(2..4).and_then(|b| <[u8; 2]>::try_from(b).ok()).map_or(0, u16::from_be_bytes) as usize;
    if len < OFP_HEADER_LEN {
        return Err(DecodeError::BadLength { what: "header", len, reason: "less than the 8-byte header" });
    }
    Ok((buf.len() >= len).then_some(len))
}
