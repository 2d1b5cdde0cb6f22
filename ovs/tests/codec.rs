//! The OpenFlow codec as pure functions: every message round-trips, malformed input is an
//! error and never a panic.

use std::net::Ipv4Addr;

use plexus_ovs::openflow::*;
use proptest::prelude::*;

fn sample_flow() -> FlowMod {
    FlowMod {
        cookie: 0xdead_beef,
        cookie_mask: 0,
        flags: OFPFF_SEND_FLOW_REM,
        idle_timeout: 10,
        hard_timeout: 20,
        ..FlowMod::add(3, 200, Match::new().eth_type(0x0800).with(Field::TcpSrc, 22u16).ipv4_src(Ipv4Addr::new(10, 1, 2, 3)).reg(4, 9))
    }
    .apply(vec![
        Action::set_tun_dst(Ipv4Addr::new(192, 0, 2, 7)),
        Action::RegLoad { dst: Field::Reg(1), ofs: 3, n_bits: 5, value: 17 },
        Action::RegMove { src: Field::Reg(2), src_ofs: 0, dst: Field::TunnelId, dst_ofs: 8, n_bits: 24 },
        Action::Ct(Ct {
            flags: NX_CT_F_COMMIT | NX_CT_F_FORCE,
            zone: CtZone::Imm(7),
            table: Some(9),
            alg: 0,
            actions: vec![Action::Nat(Nat { flags: 2, ipv4: Some((Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9))), ports: Some((1000, 2000)) })],
        }),
        Action::Learn(Learn {
            table_id: 4,
            cookie: 5,
            specs: vec![LearnSpec { n_bits: 12, src: LearnSrc::Immediate(0xabc), dst: LearnDst::Match(Field::VlanVid, 0) }],
            ..Default::default()
        }),
        Action::Experimenter { experimenter: 0x1234, data: vec![0; 8] },
        Action::Other { kind: 11, data: vec![0; 4] },
    ])
    .goto(7)
}

fn port() -> Port {
    Port { port_no: 3, hw_addr: [1, 2, 3, 4, 5, 6], name: "veth-a".into(), config: 1, state: 4, curr_speed: 10_000_000, ..Default::default() }
}

fn every_message() -> Vec<Message> {
    let fm = sample_flow();
    vec![
        Message::Hello(Hello::of13()),
        Message::Hello(Hello { version: 4, bitmap: None }),
        Message::Error(ErrorMsg { err_type: 1, code: 10, experimenter: None, data: vec![4, 14, 0, 8, 0, 0, 0, 1] }),
        Message::Error(ErrorMsg { err_type: 0xffff, code: 2300, experimenter: Some(ONF_EXPERIMENTER_ID), data: vec![] }),
        Message::EchoRequest(b"ping".to_vec()),
        Message::EchoReply(b"pong".to_vec()),
        Message::FeaturesRequest,
        Message::FeaturesReply(SwitchFeatures { datapath_id: 0xabc, n_buffers: 0, n_tables: 254, auxiliary_id: 0, capabilities: 0x4f }),
        Message::GetConfigRequest,
        Message::GetConfigReply(SwitchConfig { flags: 0, miss_send_len: 0xffff }),
        Message::SetConfig(SwitchConfig { flags: 1, miss_send_len: 128 }),
        Message::PacketIn(PacketIn {
            buffer_id: OFP_NO_BUFFER,
            total_len: 3,
            reason: 1,
            table_id: 4,
            cookie: 9,
            match_: Match::new().in_port(2).tunnel_id(5),
            data: vec![1, 2, 3],
        }),
        Message::PortStatus(PortStatus { reason: PortReason::Modify, port: port() }),
        Message::PortStatus(PortStatus { reason: PortReason::Other(9), port: port() }),
        Message::PacketOut(PacketOut {
            buffer_id: OFP_NO_BUFFER,
            in_port: OFPP_CONTROLLER,
            actions: vec![Action::output(1), Action::resubmit(2)],
            data: vec![0xff; 60],
        }),
        Message::FlowMod(fm.clone()),
        Message::FlowMod(FlowMod { command: FlowModCommand::DeleteStrict, ..FlowMod::add(1, 5, Match::new().in_port(1)) }),
        Message::FlowMod(FlowMod::delete_by_cookie(0x100, 0xff00)),
        Message::GroupMod(GroupMod {
            command: 0,
            group_type: 1,
            group_id: 7,
            buckets: vec![
                Bucket { weight: 1, watch_port: OFPP_ANY, watch_group: OFPG_ANY, actions: vec![Action::output(1)] },
                Bucket { weight: 2, watch_port: 3, watch_group: OFPG_ANY, actions: vec![Action::PushVlan(0x8100), Action::output(2)] },
            ],
        }),
        Message::MeterMod(MeterMod::drop_above(1, 100, 50)),
        Message::MeterMod(MeterMod { command: MeterMod::DELETE, flags: 0, meter_id: 3, bands: vec![] }),
        Message::MultipartRequest(MultipartRequest { flags: 0, body: MultipartRequestBody::Desc }),
        Message::MultipartRequest(MultipartRequest { flags: 0, body: MultipartRequestBody::PortDesc }),
        Message::MultipartRequest(MultipartRequest {
            flags: 0,
            body: MultipartRequestBody::Aggregate(FlowStatsRequest { cookie: 7, cookie_mask: u64::MAX, ..FlowStatsRequest::default() }),
        }),
        Message::MultipartReply(MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Aggregate(AggregateStats { packet_count: 9, byte_count: 900, flow_count: 3 }),
        }),
        Message::MultipartRequest(MultipartRequest {
            flags: 0,
            body: MultipartRequestBody::Flow(FlowStatsRequest {
                table_id: 3,
                cookie: 1,
                cookie_mask: 0xff,
                match_: Match::new().in_port(4),
                ..Default::default()
            }),
        }),
        Message::MultipartRequest(MultipartRequest { flags: 0, body: MultipartRequestBody::Other { kind: 4, body: vec![0; 8] } }),
        Message::MultipartReply(MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Desc(Desc {
                mfr_desc: "Nicira, Inc.".into(),
                hw_desc: "Open vSwitch".into(),
                sw_desc: "3.1.0".into(),
                serial_num: "None".into(),
                dp_desc: "br-int".into(),
            }),
        }),
        Message::MultipartReply(MultipartReply {
            flags: OFPMPF_REPLY_MORE,
            body: MultipartReplyBody::PortDesc(vec![port(), Port { name: "br-int".into(), port_no: OFPP_LOCAL, ..port() }]),
        }),
        Message::MultipartReply(MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Flow(vec![FlowStats {
                table_id: 3,
                duration_sec: 5,
                priority: 200,
                cookie: 0xdead_beef,
                packet_count: 10,
                byte_count: 1000,
                match_: fm.match_.normalized().unwrap(),
                instructions: fm.instructions.clone(),
                ..Default::default()
            }]),
        }),
        Message::BarrierRequest,
        Message::BarrierReply,
        Message::RoleRequest(RoleMsg { role: Role::Master, generation_id: 42 }),
        Message::RoleReply(RoleMsg { role: Role::Slave, generation_id: 42 }),
        Message::BundleControl(BundleControl { bundle_id: 1, ctrl_type: bundle::COMMIT_REQUEST, flags: bundle::ATOMIC }),
        Message::BundleAdd(BundleAdd { bundle_id: 1, flags: bundle::ATOMIC, message: Box::new(Message::FlowMod(fm)) }),
        Message::Experimenter { experimenter: NX_VENDOR_ID, exp_type: 11, data: vec![1, 2, 3, 4] },
        Message::Other { msg_type: 11, body: vec![0; 40] },
    ]
}

#[test]
fn every_message_type_round_trips() {
    for m in every_message() {
        let bytes = m.encode(0x1234_5678).unwrap_or_else(|e| panic!("encode {m:?}: {e}"));
        assert_eq!(u16::from_be_bytes([bytes[2], bytes[3]]) as usize, bytes.len(), "length field of {m:?}");
        let (xid, back) = Message::decode(&bytes).unwrap_or_else(|e| panic!("decode {m:?}: {e}"));
        assert_eq!(xid, 0x1234_5678);
        let want = match m {
            // Encoding normalizes flow mods; compare with what went on the wire.
            Message::FlowMod(f) => Message::FlowMod(f.normalized().unwrap()),
            Message::BundleAdd(BundleAdd { bundle_id, flags, message }) => match *message {
                Message::FlowMod(f) => Message::BundleAdd(BundleAdd { bundle_id, flags, message: Box::new(Message::FlowMod(f.normalized().unwrap())) }),
                other => Message::BundleAdd(BundleAdd { bundle_id, flags, message: Box::new(other) }),
            },
            other => other,
        };
        assert_eq!(back, want);
        assert_eq!(back.encode(0x1234_5678).unwrap(), bytes, "re-encoding is byte-identical");
    }
}

#[test]
fn header_lengths_that_lie_are_errors() {
    let good = Message::BarrierRequest.encode(1).unwrap();
    for len in [0u16, 1, 7] {
        let mut b = good.clone();
        b[2..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(Message::decode(&b), Err(DecodeError::BadLength { .. })), "length {len}");
        assert!(frame_len(&b).is_err(), "a stream with length {len} cannot be framed");
    }
    let mut b = good.clone();
    b[2..4].copy_from_slice(&200u16.to_be_bytes());
    assert!(matches!(Message::decode(&b), Err(DecodeError::BadLength { .. })));
    assert_eq!(frame_len(&b).unwrap(), None, "a longer frame is just incomplete in a stream");
    // Inner lengths: a match claiming more than the message holds.
    let mut fm = Message::FlowMod(FlowMod::add(0, 1, Match::new().in_port(1))).encode(1).unwrap();
    fm[50..52].copy_from_slice(&0xfff0u16.to_be_bytes());
    assert!(Message::decode(&fm).is_err());
    // An action whose length is below its header.
    let mut fm = Message::FlowMod(FlowMod::add(0, 1, Match::new()).apply(vec![Action::output(1)])).encode(1).unwrap();
    let at = fm.len() - 16 + 2;
    fm[at..at + 2].copy_from_slice(&4u16.to_be_bytes());
    assert!(Message::decode(&fm).is_err());
    assert!(matches!(Message::decode(&[4, 0, 0]), Err(DecodeError::Truncated { .. })));
    let mut v5 = good;
    v5[0] = 5;
    assert_eq!(Message::decode(&v5), Err(DecodeError::BadVersion(5)));
}

#[test]
fn encoding_refuses_what_would_be_silently_wrong() {
    let m = |fm: FlowMod| Message::FlowMod(fm).encode(1);
    assert!(matches!(m(FlowMod::add(0, 1, Match::new().with(Field::UdpDst, 53u16))), Err(EncodeError::Prerequisite { field: "udp_dst", .. })));
    assert!(matches!(
        m(FlowMod::add(0, 1, Match::new().ipv4_src(Ipv4Addr::LOCALHOST).ipv6_dst("::1".parse().unwrap()))),
        Err(EncodeError::Prerequisite { .. })
    ));
    assert!(matches!(m(FlowMod::add(0, 1, Match::new().with(Field::VlanPcp, 3u8))), Err(EncodeError::Prerequisite { field: "vlan_pcp", .. })));
    assert!(matches!(m(FlowMod::add(0, 1, Match::new().with(Field::CtZone, 0x1_0000u32))), Err(EncodeError::Invalid { .. })));
    let two_gotos = FlowMod { instructions: vec![Instruction::GotoTable(1), Instruction::GotoTable(2)], ..FlowMod::add(0, 1, Match::new()) };
    assert!(m(two_gotos).is_err(), "two goto_table instructions are refused, not one dropped");
    let wide = FlowMod::add(0, 1, Match::new()).apply(vec![Action::RegLoad { dst: Field::Reg(0), ofs: 30, n_bits: 4, value: 1 }]);
    assert!(matches!(m(wide), Err(EncodeError::BitRange { .. })), "bits 30..34 of a 32-bit register");
    let big = FlowMod::add(0, 1, Match::new()).apply(vec![Action::RegLoad { dst: Field::Reg(0), ofs: 0, n_bits: 4, value: 16 }]);
    assert!(matches!(m(big), Err(EncodeError::Invalid { what: "load", .. })));
    let mv = FlowMod::add(0, 1, Match::new()).apply(vec![Action::RegMove { src: Field::EthSrc, src_ofs: 0, dst: Field::Reg(0), dst_ofs: 0, n_bits: 48 }]);
    assert!(matches!(m(mv), Err(EncodeError::BitRange { .. })), "48 bits do not fit a register");
    // Every instruction kind survives encoding.
    let all = FlowMod {
        instructions: vec![
            Instruction::GotoTable(9),
            Instruction::WriteMetadata { metadata: 1, mask: 1 },
            Instruction::ApplyActions(vec![Action::output(1)]),
            Instruction::ClearActions,
            Instruction::WriteActions(vec![Action::output(2)]),
            Instruction::Meter(3),
        ],
        ..FlowMod::add(0, 1, Match::new())
    };
    let (_, back) = Message::decode(&Message::FlowMod(all.clone()).encode(1).unwrap()).unwrap();
    let Message::FlowMod(back) = back else { panic!() };
    assert_eq!(back.instructions.len(), 6);
    assert_eq!(back, all.normalized().unwrap());
}

fn arb_field() -> impl Strategy<Value = Field> {
    prop::sample::select(Field::all())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes);
        let _ = frame_len(&bytes);
    }

    #[test]
    fn corrupted_valid_messages_never_panic(idx in 0usize..34, pos in any::<usize>(), val in any::<u8>(), cut in any::<usize>()) {
        let msgs = every_message();
        let mut b = msgs[idx % msgs.len()].encode(1).unwrap();
        let p = pos % b.len();
        b[p] = val;
        let _ = Message::decode(&b);
        let c = cut % (b.len() + 1);
        let _ = Message::decode(&b[..c]);
    }

    #[test]
    fn matches_round_trip(fields in prop::collection::vec((arb_field(), any::<u128>(), any::<Option<u128>>()), 0..6)) {
        let mut m = Match::new();
        for (f, v, mask) in fields {
            let max = if f.width() == 16 { u128::MAX } else { (1u128 << (f.width() * 8)) - 1 };
            m = m.set(MatchField { field: f, value: v & max, mask: mask.map(|x| x & max) });
        }
        // Whatever the codec accepts, it decodes back to exactly what it sent.
        if let Ok(bytes) = Message::FlowMod(FlowMod::add(0, 1, m.clone())).encode(9) {
            let (_, back) = Message::decode(&bytes).unwrap();
            let Message::FlowMod(back) = back else { panic!("not a flow mod") };
            prop_assert_eq!(back.match_, m.normalized().unwrap());
        }
    }
}
