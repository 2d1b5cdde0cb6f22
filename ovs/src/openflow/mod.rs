//! OpenFlow 1.3: a codec of pure functions over bytes ([`Message::encode`],
//! [`Message::decode`]) and a tokio [`Connection`] that performs the handshake, answers echoes,
//! matches replies to requests by xid, and delivers asynchronous messages separately.

mod action;
mod body;
mod conn;
mod error;
mod instruction;
mod listener;
mod message;
mod multipart;
mod oxm;
mod service;
mod wire;

pub use action::*;
pub use body::*;
pub use conn::{Connection, ConnectionOptions, Event, Events, PacketIns, RejectReason, Stream, Transport, PACKET_IN_QUEUE};
pub use error::{DecodeError, EncodeError, OfError};
pub use instruction::Instruction;
pub use listener::Listener;
pub use message::*;
pub use multipart::*;
pub use oxm::{
    mac_u128, Field, Match, MatchField, ARP_REPLY, ARP_REQUEST, ND_ADVERT, ND_OPT_TARGET_LL, ND_SOLICIT, OFPVID_PRESENT, OXM_CLASS_BASIC, OXM_CLASS_ERICSSON,
    OXM_CLASS_NXM0, OXM_CLASS_NXM1,
};
pub use service::receive_packet_ins;
