//! Bringing a switch to its desired flows: read what it holds, send only the difference in
//! one bundle (so the change is atomic), and leave every flow that is already right alone —
//! its counters keep counting.

use std::collections::HashMap;

use plexus_ovs::openflow::{Connection, FlowMod, FlowModCommand, FlowStats, FlowStatsRequest, Match, Message, MeterMod, OfError, RejectReason, OFPP_ANY};

use super::pipeline::{HOLD_BURST, HOLD_METER, HOLD_RATE};

/// A flow's identity in a table: OpenFlow allows one flow per table, priority and match.
type Key = (u8, u16, Match);

/// What differs, and so was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Flows the switch lacks.
    pub add: Vec<FlowMod>,
    /// Flows whose instructions differ (modified in place, counters kept).
    pub modify: Vec<FlowMod>,
    /// Flows whose cookie differs (replaced: a modify cannot change the cookie).
    pub replace: Vec<FlowMod>,
    /// Flows the switch has that nobody wants (foreign or stale).
    pub delete: Vec<FlowMod>,
}

impl Diff {
    /// How many flow changes it holds.
    pub fn len(&self) -> usize {
        self.add.len() + self.modify.len() + self.replace.len() + self.delete.len()
    }

    /// Adds another difference (of flows disjoint from this one's).
    pub fn extend(&mut self, other: Diff) {
        self.add.extend(other.add);
        self.modify.extend(other.modify);
        self.replace.extend(other.replace);
        self.delete.extend(other.delete);
    }

    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.modify.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }

    /// The messages that apply the difference.
    pub fn messages(&self) -> Vec<Message> {
        let strict = |f: &FlowMod, command| FlowMod { command, out_port: OFPP_ANY, ..f.clone() };
        let mut v = Vec::new();
        for f in self.delete.iter().chain(&self.replace) {
            let mut d = strict(f, FlowModCommand::DeleteStrict);
            d.instructions.clear();
            d.cookie_mask = 0;
            v.push(Message::FlowMod(d));
        }
        for f in self.add.iter().chain(&self.replace) {
            v.push(Message::FlowMod(strict(f, FlowModCommand::Add)));
        }
        for f in &self.modify {
            v.push(Message::FlowMod(strict(f, FlowModCommand::ModifyStrict)));
        }
        v
    }
}

/// The difference between what a switch holds and what it should hold. Both sides must be
/// normalized ([`FlowMod::normalized`]; the switch reports flows that way).
pub fn diff(actual: &[FlowMod], desired: &[FlowMod]) -> Diff {
    let key = |f: &FlowMod| -> Key { (f.table_id, f.priority, f.match_.clone()) };
    let have: HashMap<Key, &FlowMod> = actual.iter().map(|f| (key(f), f)).collect();
    let want: HashMap<Key, &FlowMod> = desired.iter().map(|f| (key(f), f)).collect();
    let mut d = Diff::default();
    // Walk the vectors, not the maps, so the messages come out in a stable order.
    for w in desired {
        match have.get(&key(w)) {
            None => d.add.push(w.clone()),
            Some(h) if h.cookie != w.cookie => d.replace.push(w.clone()),
            Some(h) if h.instructions != w.instructions => d.modify.push(w.clone()),
            Some(_) => {}
        }
    }
    for h in actual {
        if !want.contains_key(&key(h)) {
            d.delete.push(h.clone());
        }
    }
    d
}

/// Sends a difference computed without reading the switch (the switch is trusted to hold
/// what it was last given), in one bundle.
pub async fn apply(conn: &Connection, d: &Diff) -> Result<(), OfError> {
    if !d.is_empty() {
        tracing::debug!(add = d.add.len(), modify = d.modify.len(), replace = d.replace.len(), delete = d.delete.len(), "sending a change");
        conn.bundle(&d.messages()).await?;
    }
    Ok(())
}

/// Reads the switch's flows and applies the difference to `desired` in one bundle.
pub async fn reconcile(conn: &Connection, desired: &[FlowMod]) -> Result<Diff, OfError> {
    let actual: Vec<FlowMod> = conn.dump_flows(FlowStatsRequest::default()).await?.iter().map(FlowStats::to_flow_mod).collect();
    let d = diff(&actual, desired);
    if !d.is_empty() {
        tracing::info!(add = d.add.len(), modify = d.modify.len(), replace = d.replace.len(), delete = d.delete.len(), "reconciling switch");
        conn.bundle(&d.messages()).await?;
    }
    Ok(d)
}

/// Makes sure the switch has the hold meter. With `reset` (nothing is known of the switch) it is set
/// to what the pipeline declares (changed if the switch has one by that id, added if not);
/// afterwards, on audits, it is only added if missing, since changing a meter resets its
/// statistics, which operators read to see what a flood cost.
pub async fn ensure_hold_meter(conn: &Connection, reset: bool) -> Result<(), OfError> {
    let mut m = MeterMod::drop_above(HOLD_METER, HOLD_RATE, HOLD_BURST);
    if reset {
        m.command = MeterMod::MODIFY;
        if conn.send_checked(&[Message::MeterMod(m.clone())]).await.is_ok() {
            return Ok(());
        }
    }
    m.command = MeterMod::ADD;
    match conn.send_checked(&[Message::MeterMod(m)]).await {
        // OFPET_METER_MOD_FAILED / OFPMMFC_METER_EXISTS: it is there.
        Err(OfError::Rejected { error: RejectReason::Switch(e), .. }) if !reset && e.err_type == 12 && e.code == 1 => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_ovs::openflow::Action;

    fn flow(prio: u16, port: u32, out: u32, cookie: u64) -> FlowMod {
        FlowMod::add(0, prio, Match::new().in_port(port)).apply(vec![Action::output(out)]).cookie(cookie)
    }

    #[test]
    fn the_diff_sorts_flows_by_what_must_happen_and_leaves_equal_ones_alone() {
        let have = [flow(1, 1, 9, 1), flow(1, 2, 9, 1), flow(1, 3, 9, 1), flow(1, 4, 9, 1)];
        let want = [flow(1, 1, 9, 1), flow(1, 2, 8, 1), flow(1, 3, 9, 2), flow(1, 5, 9, 1)];
        let d = diff(&have, &want);
        assert_eq!(d.add, [flow(1, 5, 9, 1)]);
        assert_eq!(d.modify, [flow(1, 2, 8, 1)], "other actions: modified in place");
        assert_eq!(d.replace, [flow(1, 3, 9, 2)], "another cookie: replaced");
        assert_eq!(d.delete, [flow(1, 4, 9, 1)]);
        assert_eq!(d.len(), 4);
        // Deletes and replaced flows' removals go first, then adds, then modifies.
        let kinds: Vec<FlowModCommand> = d.messages().iter().filter_map(|m| if let Message::FlowMod(f) = m { Some(f.command) } else { None }).collect();
        assert_eq!(kinds, [FlowModCommand::DeleteStrict, FlowModCommand::DeleteStrict, FlowModCommand::Add, FlowModCommand::Add, FlowModCommand::ModifyStrict]);
        assert!(diff(&want, &want).is_empty());
    }
}
