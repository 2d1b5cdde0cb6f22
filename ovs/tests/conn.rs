//! The OpenFlow connection against a scripted peer on a socket pair: the orderings a real
//! switch produces only by chance (async messages between a request and its reply, a
//! malformed frame, silence) made deterministic. Real-switch tests live in `tests/`.

use std::time::Duration;

use plexus_ovs::openflow::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

async fn read_msg(s: &mut UnixStream) -> (u32, Message) {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).await.unwrap();
    let len = u16::from_be_bytes([h[2], h[3]]) as usize;
    let mut b = h.to_vec();
    b.resize(len, 0);
    s.read_exact(&mut b[8..]).await.unwrap();
    Message::decode(&b).unwrap()
}

async fn send(s: &mut UnixStream, xid: u32, m: Message) {
    s.write_all(&m.encode(xid).unwrap()).await.unwrap();
}

/// Connects a `Connection` to a scripted switch and completes the handshake.
async fn pair(opts: ConnectionOptions) -> (Connection, Events, UnixStream) {
    let (ours, mut sw) = UnixStream::pair().unwrap();
    let switch = async move {
        let (_, hello) = read_msg(&mut sw).await;
        assert!(matches!(hello, Message::Hello(_)));
        send(&mut sw, 1, Message::Hello(Hello::of13())).await;
        let (xid, fr) = read_msg(&mut sw).await;
        assert_eq!(fr, Message::FeaturesRequest);
        send(&mut sw, xid, Message::FeaturesReply(SwitchFeatures { datapath_id: 77, n_tables: 254, ..Default::default() })).await;
        sw
    };
    let (conn, sw) = tokio::join!(Connection::handshake(Stream::Unix(ours), opts), switch);
    let (c, ev) = conn.unwrap();
    assert_eq!(c.datapath_id(), 77);
    (c, ev, sw)
}

#[tokio::test]
async fn async_messages_between_request_and_reply_are_not_lost() {
    let (c, mut ev, mut sw) = pair(ConnectionOptions::default()).await;
    let mut packet_ins = c.take_packet_ins().expect("the packet-in queue");
    let peer = tokio::spawn(async move {
        let (xid, m) = read_msg(&mut sw).await;
        assert_eq!(m, Message::BarrierRequest);
        send(&mut sw, 0, Message::PortStatus(PortStatus { reason: PortReason::Add, port: Port { port_no: 5, name: "p5".into(), ..Default::default() } })).await;
        send(
            &mut sw,
            0,
            Message::PacketIn(PacketIn {
                buffer_id: OFP_NO_BUFFER,
                total_len: 1,
                reason: 0,
                table_id: 0,
                cookie: 0,
                match_: Match::new().in_port(5),
                data: vec![9],
            }),
        )
        .await;
        // An echo from the switch in the middle is answered, not surfaced.
        send(&mut sw, 99, Message::EchoRequest(b"x".to_vec())).await;
        let (exid, echo) = read_msg(&mut sw).await;
        assert_eq!((exid, echo), (99, Message::EchoReply(b"x".to_vec())));
        send(&mut sw, xid, Message::BarrierReply).await;
        sw
    });
    c.barrier().await.unwrap();
    let _sw = peer.await.unwrap();
    let a = ev.recv().await.unwrap();
    assert!(matches!(a.message, Message::PortStatus(ref p) if p.port.name == "p5"));
    assert_eq!(packet_ins.recv().await.map(|p| p.data), Some(vec![9]));
}

/// A switch that sends packet-ins faster than anyone reads them costs a bounded queue: the
/// excess is dropped and counted, and the connection keeps working.
#[tokio::test]
async fn unread_packet_ins_are_bounded_and_counted() {
    let (c, _ev, mut sw) = pair(ConnectionOptions::default()).await;
    let n = PACKET_IN_QUEUE + 100;
    let peer = tokio::spawn(async move {
        for i in 0..n {
            let pi =
                PacketIn { buffer_id: OFP_NO_BUFFER, total_len: 1, reason: 1, table_id: 0, cookie: 0, match_: Match::new().in_port(1), data: vec![i as u8] };
            send(&mut sw, 0, Message::PacketIn(pi)).await;
        }
        let (xid, m) = read_msg(&mut sw).await;
        assert_eq!(m, Message::BarrierRequest);
        send(&mut sw, xid, Message::BarrierReply).await;
        sw
    });
    c.barrier().await.expect("the connection still answers");
    let _sw = peer.await.unwrap();
    assert_eq!(c.packet_ins_dropped(), 100);
    let mut rx = c.take_packet_ins().expect("the queue");
    let mut queued = 0;
    while rx.try_recv().is_ok() {
        queued += 1;
    }
    assert_eq!(queued, PACKET_IN_QUEUE, "the oldest packet-ins are kept, up to the bound");
}

#[tokio::test]
async fn multipart_replies_are_gathered_and_errors_go_to_their_xid() {
    let (c, mut ev, mut sw) = pair(ConnectionOptions::default()).await;
    let peer = tokio::spawn(async move {
        let (xid, _) = read_msg(&mut sw).await;
        for (i, flags) in [(1u32, OFPMPF_REPLY_MORE), (2, 0)] {
            let p = Port { port_no: i, name: format!("p{i}"), ..Default::default() };
            send(&mut sw, xid, Message::MultipartReply(MultipartReply { flags, body: MultipartReplyBody::PortDesc(vec![p]) })).await;
        }
        // A flow mod and a barrier: the error names the flow mod's xid.
        let (fxid, _) = read_msg(&mut sw).await;
        let (bxid, _) = read_msg(&mut sw).await;
        send(&mut sw, 12345, Message::Error(ErrorMsg { err_type: 5, code: 0, experimenter: None, data: vec![] })).await;
        send(&mut sw, fxid, Message::Error(ErrorMsg { err_type: 4, code: 3, experimenter: None, data: vec![] })).await;
        send(&mut sw, bxid, Message::BarrierReply).await;
        sw
    });
    let ports = c.port_desc().await.unwrap();
    assert_eq!(ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["p1", "p2"]);
    let r = c.send_checked(&[Message::FlowMod(FlowMod::add(0, 1, Match::new()))]).await;
    assert!(matches!(r, Err(OfError::Rejected { index: 0, error: RejectReason::Switch(ref e) }) if e.err_type == 4), "{r:?}");
    let _sw = peer.await.unwrap();
    let stray = ev.recv().await.unwrap();
    assert_eq!(stray.xid, 12345, "an error for an unknown xid is an event, not blamed on anyone");
}

#[tokio::test]
async fn a_malformed_header_from_the_wire_closes_the_connection_cleanly() {
    let (c, mut ev, mut sw) = pair(ConnectionOptions::default()).await;
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move { c.barrier().await })
    };
    let _ = read_msg(&mut sw).await;
    sw.write_all(&[4, 21, 0, 3, 0, 0, 0, 1]).await.unwrap(); // length 3 < header
    let r = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    assert!(matches!(r, Err(OfError::Closed(ref why)) if why.contains("malformed")), "{r:?}");
    assert!(c.closed_reason().unwrap().contains("less than the 8-byte header"));
    assert!(ev.recv().await.is_none(), "the event stream ends");
    assert!(matches!(c.barrier().await, Err(OfError::Closed(_))));
}

#[tokio::test]
async fn a_malformed_body_fails_only_its_request() {
    let (c, _ev, mut sw) = pair(ConnectionOptions::default()).await;
    let peer = tokio::spawn(async move {
        let (xid, _) = read_msg(&mut sw).await;
        // A role reply naming role 9: framed correctly, but not a valid body.
        let mut b = Message::RoleReply(RoleMsg { role: Role::Master, generation_id: 1 }).encode(xid).unwrap();
        b[11] = 9;
        sw.write_all(&b).await.unwrap();
        let (bxid, _) = read_msg(&mut sw).await;
        send(&mut sw, bxid, Message::BarrierReply).await;
        sw
    });
    assert!(matches!(c.set_role(Role::Master, 1).await, Err(OfError::Decode(_))));
    c.barrier().await.expect("the connection stays usable");
    let _ = peer.await;
}

#[tokio::test]
async fn a_silent_peer_is_declared_dead() {
    let opts = ConnectionOptions { probe_interval: Duration::from_millis(300), ..Default::default() };
    let (c, _ev, _sw) = pair(opts).await;
    let why = tokio::time::timeout(Duration::from_secs(5), c.closed()).await.expect("noticed");
    assert!(why.contains("peer dead"), "{why}");
}

#[tokio::test]
async fn a_peer_without_openflow_13_is_refused() {
    let (ours, mut sw) = UnixStream::pair().unwrap();
    let peer = tokio::spawn(async move {
        let _ = read_msg(&mut sw).await;
        send(&mut sw, 1, Message::Hello(Hello { version: 1, bitmap: Some(0b10) })).await;
        sw
    });
    let r = Connection::handshake(Stream::Unix(ours), ConnectionOptions::default()).await;
    assert!(matches!(r, Err(OfError::Handshake(ref m)) if m.contains("1.3")), "{:?}", r.err());
    let _ = peer.await;
}
