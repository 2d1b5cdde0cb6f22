//! Underlay networks: containers straight on a physical network, flat or on a VLAN. Each host
//! maps the physical network to an interface or bridge of its own (the agent's
//! `--bridge-mapping`) and joins it to `br-int` by a patch: the network's *uplink*. Frames
//! leave through the uplink (tagged with the network's VLAN on the way out) and arrive
//! through it (untagged on the way in); no tunnel carries them, and other hosts' endpoints and
//! machines Plexus does not know are reached the same way, through the physical network.
//! The network's gateway is a physical router's address: the switch answers nothing for it.
//!
//! A frame from the uplink is classified like a tunnelled one (it was sent, and checked, by
//! its sender) and meets L2 lookup: a local endpoint's MAC or broadcast. From a local
//! endpoint, a MAC that is not local goes out the uplink.

use plexus_api::Network;
use plexus_ovs::openflow::{Action, Field, Match, OFPVID_PRESENT};

use super::features::{net_match, Feature, Flows, NetworkCx};
use super::pipeline::{priority, Origin, Table, REG_FROM_TUNNEL, REG_NETWORK, REG_OUT_PORT};
use super::SwitchView;

/// An underlay network's way out of one switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink {
    /// The patch port to its physical network.
    pub port: u32,
    /// Its VLAN, or untagged.
    pub vlan: Option<u16>,
}

impl Uplink {
    /// The actions that send a frame out of it: tagged first, if the network has a VLAN.
    pub fn out(self) -> Vec<Action> {
        let mut acts = self.tag();
        acts.push(Action::output(self.port));
        acts
    }

    /// The actions that tag a frame with the network's VLAN (none for a flat network).
    fn tag(self) -> Vec<Action> {
        match self.vlan {
            Some(v) => vec![Action::PushVlan(0x8100), Action::set_field(Field::VlanVid, OFPVID_PRESENT | v)],
            None => Vec::new(),
        }
    }
}

/// The uplink of `network` on the switch `view` describes, if it is an underlay network and
/// the switch's host maps its physical network.
pub fn uplink(view: &SwitchView, network: &Network) -> Option<Uplink> {
    let (physnet, vlan) = network.underlay()?;
    Some(Uplink { port: *view.uplinks.get(physnet)?, vlan })
}

/// The underlay feature.
#[derive(Debug)]
pub struct Underlay;

impl Feature for Underlay {
    fn name(&self) -> &'static str {
        "underlay uplink"
    }
    fn tables(&self) -> &'static [Table] {
        &[Table::Classify, Table::L2Lookup]
    }
    fn glue(&self, view: &SwitchView, out: &mut Flows) {
        // The physical network's other traffic (its hosts' own, other VLANs) meets the
        // uplink too: dropped, never held.
        for port in view.uplinks.values() {
            out.add(Table::Classify, priority::DEFAULT, Match::new().in_port(*port), |f| f);
        }
    }
    fn network(&self, cx: &NetworkCx<'_>, out: &mut Flows) {
        let Some(up) = uplink(cx.view, cx.network) else { return };
        let seg = cx.vni;
        // In: this network's frames (its VLAN's, or untagged ones), untagged, as from afar.
        let (m, mut load) = match up.vlan {
            Some(v) => (Match::new().in_port(up.port).with(Field::VlanVid, OFPVID_PRESENT | v), vec![Action::PopVlan]),
            None => (Match::new().in_port(up.port).with(Field::VlanVid, 0u16), Vec::new()),
        };
        load.push(Action::set_field(Field::Reg(REG_NETWORK), seg));
        load.push(Action::set_field(Field::Reg(REG_FROM_TUNNEL), Origin::Tunnel.reg_value()));
        out.add(Table::Classify, priority::OBJECT, m, |f| f.apply(load).goto(Table::after_classify(Origin::Tunnel).id()));
        // Out: a unicast MAC no local endpoint has leaves through the uplink; one that came
        // in through it and is not ours is dropped (never held: the physical network floods).
        let Some(next) = Table::L2Lookup.next(Origin::Local) else { return };
        let mut acts = up.tag();
        acts.push(Action::set_field(Field::Reg(REG_OUT_PORT), up.port));
        let local = net_match(seg).reg(REG_FROM_TUNNEL, Origin::Local.reg_value());
        out.add(Table::L2Lookup, priority::DEFAULT, local, |f| f.apply(acts).goto(next.id()));
        out.add(Table::L2Lookup, priority::DEFAULT, net_match(seg).reg(REG_FROM_TUNNEL, Origin::Tunnel.reg_value()), |f| f);
    }
}
