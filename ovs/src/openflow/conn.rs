//! A tokio OpenFlow 1.3 connection: handshake, echo keep-alive, xid matching, bundles.
//!
//! One reader task and one writer task per connection. Requests register their xid before the
//! message is written, so a reply (or error) can never overtake its registration. Messages
//! nobody waits for (port status, errors for fire-and-forget messages) go to the event channel,
//! in order. Packet-ins go to a bounded channel of their own ([`Connection::take_packet_ins`]):
//! a switch can send them as fast as its ports receive packets, so they must never queue
//! without limit; those beyond the bound are dropped and counted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::body::{bundle, BundleAdd, BundleControl, ErrorMsg, Hello, PacketIn, Port, Role, RoleMsg, SwitchFeatures};
use super::error::OfError;
use super::message::{frame_len, Message};
use super::multipart::{
    AggregateStats, FlowStats, FlowStatsRequest, MultipartReply, MultipartReplyBody, MultipartRequest, MultipartRequestBody, OFPMPF_REPLY_MORE,
};

/// Any byte stream a caller wraps itself (TLS for `ssl:` controller targets).
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// A byte stream to or from a switch.
pub enum Stream {
    /// TCP (`tcp:IP:PORT` controller targets, `ptcp:` switch listeners).
    Tcp(TcpStream),
    /// Unix socket (the bridge's `.mgmt` socket, `unix:PATH` controller targets).
    Unix(UnixStream),
    /// A stream the caller set up, such as a TLS session over TCP.
    Other(Box<dyn Transport>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Stream::Unix(s) => f.debug_tuple("Unix").field(s).finish(),
            Stream::Other(_) => f.write_str("Other"),
        }
    }
}

type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl Stream {
    fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let _ = s.set_nodelay(true);
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Other(s) => {
                let (r, w) = tokio::io::split(s);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// After this long without receiving anything, send an echo request; if nothing arrives
    /// for another interval, the peer is declared dead and the connection closed.
    pub probe_interval: Duration,
    /// Time allowed for hello and features exchange.
    pub handshake_timeout: Duration,
    /// Time allowed for any reply.
    pub request_timeout: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions { probe_interval: Duration::from_secs(5), handshake_timeout: Duration::from_secs(10), request_timeout: Duration::from_secs(60) }
    }
}

/// A message nobody was waiting for: port status, packet-in, an error for a message sent
/// without waiting, and so on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The message's xid.
    pub xid: u32,
    /// The message.
    pub message: Message,
}

enum Pending {
    /// Waits for a reply; multipart parts accumulate until the last one.
    Reply { tx: oneshot::Sender<Result<Vec<Message>, OfError>>, parts: Vec<Message> },
    /// A message without a reply whose error, if any, is kept for the sender.
    Watch(Option<ErrorMsg>),
}

struct Shared {
    out: mpsc::Sender<Vec<u8>>,
    pending: Mutex<HashMap<u32, Pending>>,
    next_xid: AtomicU32,
    next_bundle: AtomicU32,
    closed: watch::Sender<Option<String>>,
    last_rx: Mutex<Instant>,
    request_timeout: Duration,
    packet_ins: mpsc::Sender<PacketIn>,
    packet_ins_rx: Mutex<Option<PacketIns>>,
    packet_ins_dropped: AtomicU64,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Pending>> {
        // A panic while holding this lock would be a bug in this module; the map itself is
        // still consistent, so keep going rather than poison every later request.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self, reason: String) {
        let first = self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(reason.clone());
                true
            } else {
                false
            }
        });
        if first {
            tracing::debug!(%reason, "openflow connection closed");
        }
        let drained: Vec<Pending> = self.pending().drain().map(|(_, p)| p).collect();
        for p in drained {
            if let Pending::Reply { tx, .. } = p {
                let _ = tx.send(Err(OfError::Closed(reason.clone())));
            }
        }
    }

    fn closed_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }
}

/// An OpenFlow 1.3 connection to one switch. Cheap to clone; closed when the last clone is
/// dropped or [`Connection::close`] is called.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    features: SwitchFeatures,
    _guard: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("datapath_id", &format_args!("{:016x}", self.datapath_id())).finish_non_exhaustive()
    }
}

struct CloseOnDrop(Arc<Shared>);
impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close("connection dropped".into());
    }
}

/// Receives the events of a connection; yields `None` once the connection is closed.
pub type Events = mpsc::UnboundedReceiver<Event>;

/// Receives a connection's packet-ins. It does not end when the connection closes (the
/// [`Events`] channel does).
pub type PacketIns = mpsc::Receiver<PacketIn>;

/// Packet-ins queued for the receiver at most; more are dropped ([`Connection::packet_ins_dropped`]).
pub const PACKET_IN_QUEUE: usize = 256;

impl Connection {
    /// Connects to a switch's unix socket (e.g. `RUNDIR/br-int.mgmt`) and performs the
    /// handshake.
    pub async fn connect_unix(path: impl AsRef<Path>, opts: ConnectionOptions) -> Result<(Connection, Events), OfError> {
        let s = UnixStream::connect(path.as_ref()).await.map_err(|e| OfError::Io(format!("connect {}: {e}", path.as_ref().display())))?;
        Connection::handshake(Stream::Unix(s), opts).await
    }

    /// Connects to a switch listening on TCP (`ptcp:`) and performs the handshake.
    pub async fn connect_tcp(addr: std::net::SocketAddr, opts: ConnectionOptions) -> Result<(Connection, Events), OfError> {
        let s = TcpStream::connect(addr).await.map_err(|e| OfError::Io(format!("connect {addr}: {e}")))?;
        Connection::handshake(Stream::Tcp(s), opts).await
    }

    /// Performs hello and features exchange on an established stream, then starts the
    /// reader, writer and keep-alive tasks.
    pub async fn handshake(stream: Stream, opts: ConnectionOptions) -> Result<(Connection, Events), OfError> {
        let (mut rd, mut wr) = stream.split();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let mut buf = Vec::with_capacity(1 << 16);
        let fut = async {
            wr.write_all(&Message::Hello(Hello::of13()).encode(0)?).await?;
            let features_xid = 1;
            let mut sent_features = false;
            loop {
                let (xid, msg) = read_frame(&mut rd, &mut buf).await?;
                match msg {
                    Message::Hello(h) => {
                        if !h.supports_of13() {
                            let err = ErrorMsg { err_type: 0, code: 0, experimenter: None, data: b"OpenFlow 1.3 required".to_vec() };
                            let _ = wr.write_all(&Message::Error(err).encode(xid)?).await;
                            return Err(OfError::Handshake(format!("peer does not speak OpenFlow 1.3 (hello version {:#04x})", h.version)));
                        }
                        wr.write_all(&Message::FeaturesRequest.encode(features_xid)?).await?;
                        sent_features = true;
                    }
                    Message::EchoRequest(d) => wr.write_all(&Message::EchoReply(d).encode(xid)?).await?,
                    Message::FeaturesReply(f) if sent_features && xid == features_xid => return Ok(f),
                    Message::Error(e) => return Err(OfError::Handshake(format!("switch sent error {e}"))),
                    other => {
                        let _ = ev_tx.send(Event { xid, message: other });
                    }
                }
            }
        };
        let features = tokio::time::timeout(opts.handshake_timeout, fut).await.map_err(|_| OfError::Timeout("hello and features reply"))??;

        let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(1024);
        let (pi_tx, pi_rx) = mpsc::channel(PACKET_IN_QUEUE);
        let (closed_tx, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            out: out_tx,
            pending: Mutex::new(HashMap::new()),
            next_xid: AtomicU32::new(2),
            next_bundle: AtomicU32::new(1),
            closed: closed_tx,
            last_rx: Mutex::new(Instant::now()),
            request_timeout: opts.request_timeout,
            packet_ins: pi_tx,
            packet_ins_rx: Mutex::new(Some(pi_rx)),
            packet_ins_dropped: AtomicU64::new(0),
        });
        tokio::spawn(writer(wr, out_rx, shared.clone()));
        tokio::spawn(reader(rd, buf, shared.clone(), ev_tx));
        tokio::spawn(keepalive(Arc::downgrade(&shared), opts.probe_interval));
        let guard = Arc::new(CloseOnDrop(shared.clone()));
        Ok((Connection { shared, features, _guard: guard }, ev_rx))
    }

    /// The switch's features (datapath id, tables).
    pub fn features(&self) -> &SwitchFeatures {
        &self.features
    }

    /// The switch's datapath id.
    pub fn datapath_id(&self) -> u64 {
        self.features.datapath_id
    }

    /// A fresh transaction id.
    pub fn next_xid(&self) -> u32 {
        self.shared.next_xid.fetch_add(1, Ordering::Relaxed)
    }

    /// Why the connection closed, if it has.
    pub fn closed_reason(&self) -> Option<String> {
        self.shared.closed_reason()
    }

    /// Waits until the connection closes and returns why.
    pub async fn closed(&self) -> String {
        let mut rx = self.shared.closed.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return "connection dropped".into();
            }
        }
    }

    /// The receiver of this connection's packet-ins; `None` after the first call. Until it is
    /// taken, and whenever its holder falls [`PACKET_IN_QUEUE`] behind, packet-ins are dropped.
    pub fn take_packet_ins(&self) -> Option<PacketIns> {
        self.shared.packet_ins_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Packet-ins dropped because their queue was full.
    pub fn packet_ins_dropped(&self) -> u64 {
        self.shared.packet_ins_dropped.load(Ordering::Relaxed)
    }

    /// Closes the connection; waiting requests fail.
    pub fn close(&self) {
        self.shared.close("closed by us".into());
    }

    async fn write(&self, bytes: Vec<u8>) -> Result<(), OfError> {
        if let Some(r) = self.shared.closed_reason() {
            return Err(OfError::Closed(r));
        }
        self.shared.out.send(bytes).await.map_err(|_| OfError::Closed(self.shared.closed_reason().unwrap_or_else(|| "writer stopped".into())))
    }

    /// Sends a message without waiting for anything; an error the switch sends for it
    /// arrives as an [`Event`]. Returns the xid used.
    pub async fn send(&self, msg: &Message) -> Result<u32, OfError> {
        let xid = self.next_xid();
        let bytes = msg.encode(xid)?;
        self.write(bytes).await?;
        Ok(xid)
    }

    async fn request_parts(&self, msg: &Message) -> Result<Vec<Message>, OfError> {
        let xid = self.next_xid();
        let bytes = msg.encode(xid)?;
        let (tx, rx) = oneshot::channel();
        self.shared.pending().insert(xid, Pending::Reply { tx, parts: Vec::new() });
        if let Err(e) = self.write(bytes).await {
            self.shared.pending().remove(&xid);
            return Err(e);
        }
        match tokio::time::timeout(self.shared.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(OfError::Closed(self.shared.closed_reason().unwrap_or_default())),
            Err(_) => {
                self.shared.pending().remove(&xid);
                Err(OfError::Timeout("reply"))
            }
        }
    }

    /// Sends a request and waits for its reply. An error message with the request's xid
    /// becomes [`OfError::Switch`].
    pub async fn request(&self, msg: &Message) -> Result<Message, OfError> {
        self.request_parts(msg).await?.pop().ok_or(OfError::Unexpected("empty reply".into()))
    }

    /// Sends a multipart request and collects every part of the reply.
    pub async fn multipart(&self, req: MultipartRequest) -> Result<Vec<MultipartReply>, OfError> {
        self.request_parts(&Message::MultipartRequest(req))
            .await?
            .into_iter()
            .map(|m| match m {
                Message::MultipartReply(r) => Ok(r),
                other => Err(OfError::Unexpected(format!("{other:?}"))),
            })
            .collect()
    }

    /// Waits until the switch has processed everything sent before.
    pub async fn barrier(&self) -> Result<(), OfError> {
        match self.request(&Message::BarrierRequest).await? {
            Message::BarrierReply => Ok(()),
            other => Err(OfError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends messages that have no reply (flow mods, group mods, packet-outs), then a
    /// barrier, and reports the first one the switch refused, by index. Each error is
    /// matched to its own message by xid, so a refusal is never blamed on a neighbour.
    pub async fn send_checked(&self, msgs: &[Message]) -> Result<(), OfError> {
        let xids = self.send_watched(msgs.iter().map(|m| (m.clone(), None))).await?;
        self.barrier_then_errors(&xids).await
    }

    async fn send_watched(&self, msgs: impl Iterator<Item = (Message, Option<u32>)>) -> Result<Vec<u32>, OfError> {
        let mut xids = Vec::new();
        let mut chunk = Vec::with_capacity(1 << 16);
        let mut encoded = Vec::new();
        for (m, bundle_id) in msgs {
            let xid = self.next_xid();
            let m = match bundle_id {
                Some(id) => Message::BundleAdd(BundleAdd { bundle_id: id, flags: bundle::ATOMIC, message: Box::new(m) }),
                None => m,
            };
            if let Err(e) = m.encode_into(xid, &mut chunk) {
                self.unwatch(&xids);
                return Err(OfError::Rejected { index: xids.len(), error: RejectReason::Encode(e) });
            }
            encoded.push(xid);
            xids.push(xid);
            if chunk.len() >= 1 << 16 {
                self.watch(&encoded);
                encoded.clear();
                self.write(std::mem::replace(&mut chunk, Vec::with_capacity(1 << 16))).await?;
            }
        }
        self.watch(&encoded);
        if !chunk.is_empty() {
            self.write(chunk).await?;
        }
        Ok(xids)
    }

    fn watch(&self, xids: &[u32]) {
        let mut p = self.shared.pending();
        for &x in xids {
            p.insert(x, Pending::Watch(None));
        }
    }

    /// Removes watch entries; returns the first error among them with its index.
    fn unwatch(&self, xids: &[u32]) -> Option<(usize, ErrorMsg)> {
        let mut p = self.shared.pending();
        let mut first = None;
        for (i, x) in xids.iter().enumerate() {
            if let Some(Pending::Watch(Some(e))) = p.remove(x) {
                first.get_or_insert((i, e));
            }
        }
        first
    }

    async fn barrier_then_errors(&self, xids: &[u32]) -> Result<(), OfError> {
        let b = self.barrier().await;
        let first = self.unwatch(xids);
        b?;
        match first {
            Some((index, e)) => Err(OfError::Rejected { index, error: RejectReason::Switch(e) }),
            None => Ok(()),
        }
    }

    /// Applies messages atomically: opens a bundle, adds them, commits. Either all take
    /// effect or none does; a refused message is reported by index and the bundle discarded.
    pub async fn bundle(&self, msgs: &[Message]) -> Result<(), OfError> {
        let id = self.shared.next_bundle.fetch_add(1, Ordering::Relaxed);
        let ctl = |ctrl_type| Message::BundleControl(BundleControl { bundle_id: id, ctrl_type, flags: bundle::ATOMIC });
        match self.request(&ctl(bundle::OPEN_REQUEST)).await? {
            Message::BundleControl(b) if b.ctrl_type == bundle::OPEN_REPLY => {}
            other => return Err(OfError::Unexpected(format!("bundle open: {other:?}"))),
        }
        tracing::debug!(bundle = id, messages = msgs.len(), "bundle opened");
        let xids = match self.send_watched(msgs.iter().map(|m| (m.clone(), Some(id)))).await {
            Ok(x) => x,
            Err(e) => {
                let _ = self.request(&ctl(bundle::DISCARD_REQUEST)).await;
                return Err(e);
            }
        };
        // OVS checks each message when it is added and leaves a refused one out of the
        // bundle, which would then commit without it. A barrier makes every add's verdict
        // arrive before we decide, so one refusal discards the whole bundle.
        let barrier = self.barrier().await;
        if let Some((index, e)) = self.unwatch(&xids) {
            let _ = self.request(&ctl(bundle::DISCARD_REQUEST)).await;
            return Err(OfError::Rejected { index, error: RejectReason::Switch(e) });
        }
        barrier?;
        match self.request(&ctl(bundle::COMMIT_REQUEST)).await? {
            Message::BundleControl(b) if b.ctrl_type == bundle::COMMIT_REPLY => Ok(()),
            other => Err(OfError::Unexpected(format!("bundle commit: {other:?}"))),
        }
    }

    /// The statistics of the flows the request covers, summed by the switch: how many there
    /// are, without reading them.
    pub async fn aggregate(&self, req: FlowStatsRequest) -> Result<AggregateStats, OfError> {
        let parts = self.multipart(MultipartRequest { flags: 0, body: MultipartRequestBody::Aggregate(req) }).await?;
        match parts.into_iter().next().map(|p| p.body) {
            Some(MultipartReplyBody::Aggregate(a)) => Ok(a),
            other => Err(OfError::Unexpected(format!("aggregate stats: {other:?}"))),
        }
    }

    /// Every flow the request covers, across all reply parts.
    pub async fn dump_flows(&self, req: FlowStatsRequest) -> Result<Vec<FlowStats>, OfError> {
        let mut v = Vec::new();
        for part in self.multipart(MultipartRequest { flags: 0, body: MultipartRequestBody::Flow(req) }).await? {
            match part.body {
                MultipartReplyBody::Flow(f) => v.extend(f),
                other => return Err(OfError::Unexpected(format!("{other:?}"))),
            }
        }
        Ok(v)
    }

    /// The switch's ports.
    pub async fn port_desc(&self) -> Result<Vec<Port>, OfError> {
        let mut v = Vec::new();
        for part in self.multipart(MultipartRequest { flags: 0, body: MultipartRequestBody::PortDesc }).await? {
            match part.body {
                MultipartReplyBody::PortDesc(p) => v.extend(p),
                other => return Err(OfError::Unexpected(format!("{other:?}"))),
            }
        }
        Ok(v)
    }

    /// Asks for a role; returns the role and generation id the switch granted.
    pub async fn set_role(&self, role: Role, generation_id: u64) -> Result<RoleMsg, OfError> {
        match self.request(&Message::RoleRequest(RoleMsg { role, generation_id })).await? {
            Message::RoleReply(r) => Ok(r),
            other => Err(OfError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// Why one message of a batch or bundle was refused.
#[derive(Debug, Clone)]
pub enum RejectReason {
    /// The switch sent this error for it.
    Switch(ErrorMsg),
    /// It could not be encoded (nothing of the batch was sent after it).
    Encode(super::error::EncodeError),
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::Switch(e) => write!(f, "switch refused it: {e}"),
            RejectReason::Encode(e) => write!(f, "{e}"),
        }
    }
}

async fn read_frame(rd: &mut ReadHalf, buf: &mut Vec<u8>) -> Result<(u32, Message), OfError> {
    loop {
        if let Some(n) = frame_len(buf)? {
            let frame: Vec<u8> = buf.drain(..n).collect();
            return Ok(Message::decode(&frame)?);
        }
        let mut chunk = [0u8; 8192];
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            return Err(OfError::Closed("peer closed the connection".into()));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

async fn writer(wr: WriteHalf, mut rx: mpsc::Receiver<Vec<u8>>, shared: Arc<Shared>) {
    let mut w = BufWriter::with_capacity(1 << 16, wr);
    let mut closed = shared.closed.subscribe();
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = closed.wait_for(|c| c.is_some()) => None,
        };
        let Some(first) = first else { break };
        let mut res = w.write_all(&first).await;
        while res.is_ok() {
            match rx.try_recv() {
                Ok(m) => res = w.write_all(&m).await,
                Err(_) => break,
            }
        }
        if let Err(e) = res.and(w.flush().await) {
            shared.close(format!("write failed: {e}"));
            break;
        }
    }
    let _ = w.shutdown().await;
}

async fn reader(mut rd: ReadHalf, mut buf: Vec<u8>, shared: Arc<Shared>, events: mpsc::UnboundedSender<Event>) {
    let mut closed = shared.closed.subscribe();
    let mut chunk = vec![0u8; 1 << 16];
    let reason = loop {
        // Deliver every complete frame already buffered.
        loop {
            match frame_len(&buf) {
                Ok(Some(n)) => {
                    let frame: Vec<u8> = buf.drain(..n).collect();
                    dispatch(&frame, &shared, &events);
                }
                Ok(None) => break,
                Err(e) => {
                    shared.close(format!("malformed stream from peer: {e}"));
                    return;
                }
            }
        }
        let n = tokio::select! {
            r = rd.read(&mut chunk) => r,
            _ = closed.wait_for(|c| c.is_some()) => return,
        };
        match n {
            Ok(0) => break "peer closed the connection".to_string(),
            Ok(n) => {
                *shared.last_rx.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
            Err(e) => break format!("read failed: {e}"),
        }
    };
    shared.close(reason);
}

fn dispatch(frame: &[u8], shared: &Shared, events: &mpsc::UnboundedSender<Event>) {
    // The caller framed it, so the header is there; a short frame gets xid 0 and fails to decode.
    let xid = frame.get(4..8).and_then(|b| <[u8; 4]>::try_from(b).ok()).map_or(0, u32::from_be_bytes);
    let msg = match Message::decode(frame) {
        Ok((_, m)) => m,
        Err(e) => {
            // The framing is intact, so the stream stays usable: fail whoever waits for
            // this xid and drop the frame.
            tracing::warn!(xid, error = %e, "malformed OpenFlow message from peer");
            if let Some(Pending::Reply { tx, .. }) = shared.pending().remove(&xid) {
                let _ = tx.send(Err(OfError::Decode(e)));
            }
            return;
        }
    };
    if let Message::EchoRequest(d) = &msg {
        if let Ok(bytes) = Message::EchoReply(d.clone()).encode(xid) {
            // Never block the reader on the writer: a full queue means the peer will see a
            // late reply at worst.
            let _ = shared.out.try_send(bytes);
        }
        return;
    }
    let mut pending = shared.pending();
    match pending.get_mut(&xid) {
        Some(Pending::Watch(slot)) => {
            if let Message::Error(e) = msg {
                slot.get_or_insert(e);
            } else {
                drop(pending);
                let _ = events.send(Event { xid, message: msg });
            }
        }
        Some(Pending::Reply { parts, .. }) => {
            let more = matches!(&msg, Message::MultipartReply(r) if r.flags & OFPMPF_REPLY_MORE != 0);
            if more {
                parts.push(msg);
                return;
            }
            let Some(Pending::Reply { tx, mut parts }) = pending.remove(&xid) else { return };
            drop(pending);
            let res = match msg {
                Message::Error(e) => Err(OfError::Switch(e)),
                m => {
                    parts.push(m);
                    Ok(parts)
                }
            };
            let _ = tx.send(res);
        }
        None => {
            drop(pending);
            if let Message::PacketIn(p) = msg {
                if shared.packet_ins.try_send(p).is_err() {
                    shared.packet_ins_dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            // Our own keep-alive echoes are answered here; nobody waits for them.
            if !matches!(msg, Message::EchoReply(_)) {
                let _ = events.send(Event { xid, message: msg });
            }
        }
    }
}

async fn keepalive(shared: std::sync::Weak<Shared>, interval: Duration) {
    let tick = (interval / 4).max(Duration::from_millis(50));
    let mut probe_sent: Option<Instant> = None;
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = shared.upgrade() else { return };
        if shared.closed_reason().is_some() {
            return;
        }
        let idle = shared.last_rx.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        if idle < interval {
            probe_sent = None;
            continue;
        }
        match probe_sent {
            None => {
                // Fire-and-forget echo: its reply counts as traffic via last_rx.
                if let Ok(bytes) = Message::EchoRequest(b"plexus".to_vec()).encode(0xffff_fff0) {
                    let _ = shared.out.try_send(bytes);
                }
                probe_sent = Some(Instant::now());
            }
            Some(t) if t.elapsed() >= interval => {
                shared.close(format!("peer dead: no traffic for {:.1}s and no answer to an echo request", idle.as_secs_f64()));
                return;
            }
            Some(_) => {}
        }
    }
}
