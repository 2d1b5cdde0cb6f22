//! One emulated switch: enough OpenFlow 1.3 to be real to the controller (hello, features,
//! port descriptions, roles, meters, bundles, barriers, flow and aggregate statistics, echo),
//! with its flow table in memory, connected over TLS with its host's certificate to every
//! controller node, as `ovs-vswitchd` is. It answers; it never forwards a packet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus_ovs::openflow::{
    bundle, AggregateStats, BundleControl, Desc, FlowMod, FlowModCommand, FlowStats, Hello, Instruction, Match, Message, MultipartReply, MultipartReplyBody,
    MultipartRequestBody, Port, Role, RoleMsg, SwitchFeatures, OFPMPF_REPLY_MORE, OFPTT_ALL,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A flow's identity in a table.
type Key = (u8, u16, Match);

/// What one emulated switch holds and has seen, shared by its connections.
#[derive(Debug)]
pub(super) struct Switch {
    /// Its host's name.
    pub(super) host: String,
    /// Its datapath id.
    pub(super) dpid: u64,
    ports: Vec<Port>,
    table: Mutex<HashMap<Key, (u64, Vec<Instruction>)>>,
    /// Flow changes applied (adds, modifies, deletes), over its life.
    pub(super) flow_mods: AtomicU64,
    /// Index of the controller connection that is master (`u64::MAX`: none).
    pub(super) master: AtomicU64,
}

impl Switch {
    /// A switch of `host` with `dpid` and one port per name in `ports` (numbered from 1).
    pub(super) fn new(host: &str, dpid: u64, ports: &[String]) -> Switch {
        let ports = ports
            .iter()
            .enumerate()
            .map(|(i, name)| Port {
                port_no: i as u32 + 1,
                hw_addr: [0x02, 0, (dpid >> 16) as u8, (dpid >> 8) as u8, dpid as u8, i as u8],
                name: name.clone(),
                config: 0,
                state: 0,
                curr: 0,
                advertised: 0,
                supported: 0,
                peer: 0,
                curr_speed: 10_000_000,
                max_speed: 10_000_000,
            })
            .collect();
        Switch { host: host.to_string(), dpid, ports, table: Mutex::default(), flow_mods: AtomicU64::new(0), master: AtomicU64::new(u64::MAX) }
    }

    /// Flows it holds.
    pub(super) fn flows(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Applies flow changes, as OVS applies a committed bundle: all at once.
    fn apply(&self, mods: &[FlowMod]) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        for f in mods {
            let key = (f.table_id, f.priority, f.match_.clone());
            let covers = |k: &Key, cookie: u64| {
                (f.table_id == OFPTT_ALL || k.0 == f.table_id)
                    && cookie & f.cookie_mask == f.cookie & f.cookie_mask
                    && (f.match_.fields().is_empty() || k.2 == f.match_)
            };
            match f.command {
                FlowModCommand::Add => {
                    t.insert(key, (f.cookie, f.instructions.clone()));
                }
                FlowModCommand::ModifyStrict => {
                    if let Some(v) = t.get_mut(&key) {
                        v.1 = f.instructions.clone();
                    }
                }
                FlowModCommand::Modify => {
                    for (k, v) in t.iter_mut() {
                        if covers(k, v.0) {
                            v.1 = f.instructions.clone();
                        }
                    }
                }
                FlowModCommand::DeleteStrict => {
                    t.remove(&key);
                }
                FlowModCommand::Delete => t.retain(|k, v| !covers(k, v.0)),
            }
        }
        drop(t);
        self.flow_mods.fetch_add(mods.len() as u64, Ordering::Relaxed);
    }

    /// The flows a statistics request covers (table and cookie filters; a match filter is
    /// taken as "all", which is what the controller asks).
    fn stats(&self, table_id: u8, cookie: u64, cookie_mask: u64) -> Vec<FlowStats> {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.iter()
            .filter(|((tid, _, _), (c, _))| (table_id == OFPTT_ALL || *tid == table_id) && c & cookie_mask == cookie & cookie_mask)
            .map(|((tid, prio, m), (c, ins))| FlowStats {
                table_id: *tid,
                duration_sec: 1,
                duration_nsec: 0,
                priority: *prio,
                idle_timeout: 0,
                hard_timeout: 0,
                flags: 0,
                cookie: *c,
                packet_count: 0,
                byte_count: 0,
                match_: m.clone(),
                instructions: ins.clone(),
            })
            .collect()
    }
}

/// Reads one OpenFlow message: its xid and the message, or `None` when the peer closed.
async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<(u32, Message)>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if len < 8 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a message of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    buf[..8].copy_from_slice(&head);
    r.read_exact(&mut buf[8..]).await?;
    Message::decode(&buf).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// Serves one connection to a controller node (index `node`) until it closes: answers what
/// it asks, applies what it sends.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(sw: &Switch, node: u64, stream: S) -> std::io::Result<()> {
    let (mut r, mut w) = tokio::io::split(stream);
    let mut out = Vec::with_capacity(1 << 16);
    Message::Hello(Hello::of13()).encode_into(0, &mut out).map_err(invalid)?;
    w.write_all(&out).await?;
    let mut bundles: HashMap<u32, Vec<FlowMod>> = HashMap::new();
    let mut generation: u64 = 0;
    while let Some((xid, msg)) = read_message(&mut r).await? {
        out.clear();
        let reply = |m: Message, out: &mut Vec<u8>| m.encode_into(xid, out).map_err(invalid);
        match msg {
            Message::FeaturesRequest => {
                let f = SwitchFeatures { datapath_id: sw.dpid, n_buffers: 0, n_tables: 254, auxiliary_id: 0, capabilities: 0x4f };
                reply(Message::FeaturesReply(f), &mut out)?;
            }
            Message::EchoRequest(data) => reply(Message::EchoReply(data), &mut out)?,
            Message::BarrierRequest => reply(Message::BarrierReply, &mut out)?,
            Message::RoleRequest(RoleMsg { role, generation_id }) => {
                if matches!(role, Role::Master) {
                    // Generations only move forward; the newest master displaces the rest.
                    if generation_id >= generation {
                        generation = generation_id;
                        sw.master.store(node, Ordering::Relaxed);
                    }
                }
                reply(Message::RoleReply(RoleMsg { role, generation_id }), &mut out)?;
            }
            Message::FlowMod(f) => sw.apply(std::slice::from_ref(&f)),
            Message::BundleControl(b) => {
                let answer = match b.ctrl_type {
                    bundle::OPEN_REQUEST => {
                        bundles.insert(b.bundle_id, Vec::new());
                        bundle::OPEN_REPLY
                    }
                    bundle::COMMIT_REQUEST => {
                        sw.apply(&bundles.remove(&b.bundle_id).unwrap_or_default());
                        bundle::COMMIT_REPLY
                    }
                    bundle::DISCARD_REQUEST => {
                        bundles.remove(&b.bundle_id);
                        bundle::DISCARD_REPLY
                    }
                    _ => bundle::CLOSE_REPLY,
                };
                reply(Message::BundleControl(BundleControl { ctrl_type: answer, ..b }), &mut out)?;
            }
            Message::BundleAdd(a) => {
                if let (Message::FlowMod(f), Some(v)) = (*a.message, bundles.get_mut(&a.bundle_id)) {
                    v.push(f);
                }
            }
            Message::MultipartRequest(req) => {
                let parts: Vec<MultipartReplyBody> = match req.body {
                    MultipartRequestBody::PortDesc => vec![MultipartReplyBody::PortDesc(sw.ports.clone())],
                    MultipartRequestBody::Desc => vec![MultipartReplyBody::Desc(Desc {
                        mfr_desc: "Plexus".into(),
                        hw_desc: "emulated switch".into(),
                        sw_desc: "plexus bench emulate".into(),
                        serial_num: String::new(),
                        dp_desc: sw.host.clone(),
                    })],
                    MultipartRequestBody::Aggregate(q) => {
                        let n = sw.stats(q.table_id, q.cookie, q.cookie_mask).len() as u32;
                        vec![MultipartReplyBody::Aggregate(AggregateStats { packet_count: 0, byte_count: 0, flow_count: n })]
                    }
                    MultipartRequestBody::Flow(q) => {
                        // Parts of at most 200 flows, well under a message's 64 KiB.
                        let all = sw.stats(q.table_id, q.cookie, q.cookie_mask);
                        let mut parts: Vec<MultipartReplyBody> = all.chunks(200).map(|c| MultipartReplyBody::Flow(c.to_vec())).collect();
                        if parts.is_empty() {
                            parts.push(MultipartReplyBody::Flow(Vec::new()));
                        }
                        parts
                    }
                    MultipartRequestBody::Other { kind, .. } => vec![MultipartReplyBody::Other { kind, body: Vec::new() }],
                };
                let n = parts.len();
                for (i, body) in parts.into_iter().enumerate() {
                    let flags = if i + 1 < n { OFPMPF_REPLY_MORE } else { 0 };
                    reply(Message::MultipartReply(MultipartReply { flags, body }), &mut out)?;
                }
            }
            Message::GetConfigRequest => reply(Message::GetConfigReply(plexus_ovs::openflow::SwitchConfig { flags: 0, miss_send_len: 128 }), &mut out)?,
            // Meters, groups, configuration, packet-outs, asynchronous settings: taken, unanswered.
            _ => {}
        }
        if !out.is_empty() {
            w.write_all(&out).await?;
        }
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// Keeps the switch connected to controller node `node` at `addr`: connects over TLS with
/// `tls`, serves, and reconnects a second after the connection ends (as OVS does, quicker),
/// until the task is aborted.
pub(super) async fn run(sw: Arc<Switch>, node: u64, addr: SocketAddr, tls: Arc<tokio_rustls::rustls::ClientConfig>) {
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    loop {
        let session = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name.clone(), tcp).await?;
            serve(&sw, node, tls).await
        };
        if let Err(e) = session.await {
            tracing::debug!(host = %sw.host, node, error = %e, "emulated switch connection ended");
        }
        if sw.master.load(Ordering::Relaxed) == node {
            sw.master.store(u64::MAX, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
