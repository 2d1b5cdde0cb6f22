//! What a service connection sends to receive packet-ins. A connection to a bridge's
//! management socket (`RUNDIR/BRIDGE.mgmt`) is a "service" connection to OVS: it gets no
//! asynchronous messages until it asks, and it is not a primary controller, so the flows
//! that mean it send packets with `controller(id=ID)` ([`Action::controller_id`]) after it
//! has taken that id, and it must also set a nonzero `miss_send_len` (OVS sends a service
//! connection nothing asynchronous while it is zero, whatever the async masks say). This is how a host-local responder (the agent's DNS) sits beside the
//! switch's remote controllers without seeing their packets or they its.
//!
//! [`Action::controller_id`]: crate::openflow::Action::controller_id

use super::action::{NX_VENDOR_ID, OFPCML_NO_BUFFER};
use super::body::SwitchConfig;
use super::message::Message;

/// `NXT_SET_CONTROLLER_ID`.
const NXT_SET_CONTROLLER_ID: u32 = 20;
/// `OFPT_SET_ASYNC` (OpenFlow 1.3).
const OFPT_SET_ASYNC: u8 = 28;
/// Packet-in reason "action" (a flow sent it).
const OFPR_ACTION: u32 = 1;

/// What a service connection sends, in order, to receive the whole of every packet that flows
/// send to controller id `id`, and no other asynchronous message.
pub fn receive_packet_ins(id: u16) -> Vec<Message> {
    vec![Message::SetConfig(SwitchConfig { flags: 0, miss_send_len: OFPCML_NO_BUFFER }), set_controller_id(id), packet_ins_only()]
}

/// Takes controller id `id` on this connection: packets sent with `controller(id=ID)` come here.
fn set_controller_id(id: u16) -> Message {
    let mut data = vec![0u8; 6];
    data.extend(id.to_be_bytes());
    Message::Experimenter { experimenter: NX_VENDOR_ID, exp_type: NXT_SET_CONTROLLER_ID, data }
}

/// Asks for packet-ins of reason "action" (in either role) and nothing else: no port status,
/// no flow removals.
fn packet_ins_only() -> Message {
    let mut body = Vec::with_capacity(24);
    // packet_in_mask[master/equal, slave], port_status_mask[..], flow_removed_mask[..].
    for mask in [1u32 << OFPR_ACTION, 1 << OFPR_ACTION, 0, 0, 0, 0] {
        body.extend(mask.to_be_bytes());
    }
    Message::Other { msg_type: OFPT_SET_ASYNC, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_ovs_expects() {
        let b = set_controller_id(53).encode(7).unwrap();
        // Header (16 bytes with experimenter and subtype), six zeros, the id.
        assert_eq!(b.len(), 24);
        assert_eq!(&b[8..16], &[0, 0, 0x23, 0x20, 0, 0, 0, 20]);
        assert_eq!(&b[22..24], &[0, 53]);
        let a = packet_ins_only().encode(8).unwrap();
        assert_eq!((a[1], a.len()), (28, 32));
        let all = receive_packet_ins(53);
        assert!(matches!(all[0], Message::SetConfig(SwitchConfig { miss_send_len: 0xffff, .. })), "a service connection needs a miss_send_len");
    }
}
