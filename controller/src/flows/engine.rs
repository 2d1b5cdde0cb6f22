//! What a change touches: OVN's incremental-processing idea at the size Plexus needs. The flow
//! computation has named inputs ([`Input`]); each has a handler here that says which compile
//! units a change to it touches, and an input with no precise handler asks for a full
//! recompute. This is the one place that knows what depends on what: the switch manager and
//! [`DesiredFlows`](super::DesiredFlows) ask it, and a test checks that the incremental result
//! always equals a full compile.

use plexus_api::EndpointKey;

use super::compile::Unit;
use crate::model::{Model, Subject};

/// An input of a switch's flows that can change.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// An object of the model (from the model's change log).
    Model(&'a Subject),
    /// A port of an endpoint on this switch came, went or got another number.
    Port(&'a EndpointKey),
    /// The switch itself: its host or its tunnel port.
    Switch,
}

/// The units a change touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// These units, and nothing else.
    Units(Vec<Unit>),
    /// Anything: recompile everything.
    Everything,
}

/// The units a change to `input` touches. Besides these, a network that a switch starts or
/// stops carrying touches all of its units; [`DesiredFlows`](super::DesiredFlows) adds those,
/// since only it knows what the switch carried before.
pub fn touched(input: Input<'_>) -> Touched {
    match input {
        // An endpoint's own flows, its network's broadcast (which lists hosts and ports) and,
        // if policies govern it here, its rules' flows. The units of its address as a peer
        // are [`peer_units`]'s (they need its address before the change too).
        Input::Port(k) | Input::Model(Subject::Endpoint(k)) => {
            Touched::Units(vec![Unit::Network(k.network.to_string()), Unit::Endpoint(k.clone()), Unit::Governed(k.clone())])
        }
        // A policy reaches its network's flows, every endpoint's it may govern or name, and,
        // through conntrack, its whole routing domain's: no handler narrower than everything.
        Input::Model(Subject::Policy(_)) => Touched::Everything,
        Input::Model(Subject::Mastership) => Touched::Units(Vec::new()),
        // A network's settings reach every one of its flows, a host's tunnel address every
        // flow towards it, a router the routing domains (and so which networks a switch
        // carries): no handler narrower than everything.
        Input::Model(Subject::Network(_) | Subject::Host(_) | Subject::Router(_)) | Input::Switch => Touched::Everything,
    }
}

/// The units of the addresses `ips` as peers of any network's policies: an endpoint's
/// address before and after a change.
pub fn peer_units(model: &Model, ips: &[std::net::IpAddr]) -> Vec<Unit> {
    let mut nets: Vec<&str> = model.policies.values().map(|p| p.spec.network.as_str()).collect();
    nets.sort_unstable();
    nets.dedup();
    nets.iter().flat_map(|n| ips.iter().map(move |ip| Unit::PeerAddr(n.to_string(), *ip))).collect()
}

/// Whether `changes` leave alone every flow of a switch that carries the networks `carries`
/// says it does, its ports unchanged. [`touched`] answers "which units"; this answers the
/// cheaper question first, because at scale it is the common case: of a thousand switches, an
/// endpoint's change reaches only those carrying its network (or one of its routing domain,
/// which `carries` covers), and the rest should not compile anything to find that out.
///
/// Only endpoint and mastership changes can leave a switch alone: an endpoint's units are
/// empty on a switch that does not carry its network, and so are its peer units of a policy
/// whose network the switch does not carry. Which networks a switch carries changes with its
/// ports, a network, host or router change (any of which answers `false`), and with an
/// endpoint of the switch's own `host`: its port may be plugged in before the endpoint exists
/// (a runtime plugs the container, then asks for the network), so that port becomes the
/// network's first on the switch without any port changing.
pub fn leaves_alone<'a>(model: &Model, host: &str, mut changes: impl Iterator<Item = &'a Subject>, carries: impl Fn(&str) -> bool) -> bool {
    let mut policed = None;
    let local = |k: &EndpointKey| model.endpoints.get(&*k.network).and_then(|e| e.get(&*k.id)).is_some_and(|e| e.host == host);
    changes.all(|s| match s {
        Subject::Mastership => true,
        Subject::Endpoint(k) => !carries(&k.network) && !local(k) && !*policed.get_or_insert_with(|| model.policies.values().any(|p| carries(&p.spec.network))),
        Subject::Network(_) | Subject::Host(_) | Subject::Router(_) | Subject::Policy(_) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_touches_itself_and_its_network_and_hosts_touch_everything() {
        let m = Model::default();
        let k = EndpointKey::new("red", "a");
        let mine = Touched::Units(vec![Unit::Network("red".into()), Unit::Endpoint(k.clone()), Unit::Governed(k.clone())]);
        assert_eq!(touched(Input::Model(&Subject::Endpoint(k.clone()))), mine);
        assert_eq!(touched(Input::Port(&k)), mine);
        assert_eq!(touched(Input::Model(&Subject::Policy("p".into()))), Touched::Everything);
        assert!(peer_units(&m, &["10.0.0.1".parse().unwrap()]).is_empty(), "no policies, no peer units");
        assert_eq!(touched(Input::Model(&Subject::Host("h1".into()))), Touched::Everything);
        assert_eq!(touched(Input::Model(&Subject::Network("red".into()))), Touched::Everything);
        assert_eq!(touched(Input::Model(&Subject::Router("r".into()))), Touched::Everything);
        assert_eq!(touched(Input::Switch), Touched::Everything);
    }
}
