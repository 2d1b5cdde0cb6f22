//! OpenFlow 1.3 against a real ovs-vswitchd: what we encode is what the switch holds, as
//! `ovs-ofctl` (an independent decoder) shows it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use plexus_lab::Daemon;
use plexus_ovs::openflow::*;
use plexus_tests::*;

fn ip(a: [u8; 4]) -> u32 {
    u32::from(Ipv4Addr::from(a))
}

fn v6(s: &str) -> std::net::Ipv6Addr {
    s.parse().expect("an IPv6 address")
}

/// Flows covering more than 15 distinct match and action kinds, Nicira ones included, with
/// the line `ovs-ofctl dump-flows` must show for each.
fn showcase() -> Vec<(FlowMod, &'static str)> {
    vec![
        (
            FlowMod::add(0, 10, Match::new().in_port(1).eth_src([0, 1, 2, 3, 4, 5]).eth_dst([0xa, 0xb, 0xc, 0xd, 0xe, 0xf])).apply(vec![Action::output(2)]),
            "priority=10,in_port=1,dl_src=00:01:02:03:04:05,dl_dst=0a:0b:0c:0d:0e:0f actions=output:2",
        ),
        (
            FlowMod::add(0, 11, Match::new().eth_type(0x0800).with(Field::TcpDst, 80u16).ipv4_src(Ipv4Addr::new(10, 0, 0, 1)).masked(Field::Ipv4Dst, ip([10, 1, 0, 0]), 0xffff_0000u32))
                .apply(vec![Action::DecNwTtl, Action::controller()]),
            "priority=11,tcp,nw_src=10.0.0.1,nw_dst=10.1.0.0/16,tp_dst=80 actions=dec_ttl,CONTROLLER:65535",
        ),
        (
            FlowMod::add(1, 12, Match::new().with(Field::ArpOp, 1u16).with(Field::ArpTpa, ip([10, 0, 0, 9])))
                .apply(vec![
                    Action::RegMove { src: Field::EthSrc, src_ofs: 0, dst: Field::EthDst, dst_ofs: 0, n_bits: 48 },
                    Action::RegLoad { dst: Field::Reg(3), ofs: 4, n_bits: 8, value: 0x5a },
                    Action::output(OFPP_IN_PORT),
                ]),
            "table=1, priority=12,arp,arp_tpa=10.0.0.9,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],load:0x5a->NXM_NX_REG3[4..11],IN_PORT",
        ),
        (
            FlowMod::add(2, 13, Match::new().tunnel_id(100).reg(5, 7).with(Field::TunIpv4Dst, ip([1, 2, 3, 4])))
                .apply(vec![Action::PushVlan(0x8100), Action::set_field(Field::VlanVid, OFPVID_PRESENT | 10), Action::resubmit(3)])
                .goto(5),
            "table=2, priority=13,reg5=0x7,tun_id=0x64,tun_dst=1.2.3.4 actions=push_vlan:0x8100,set_field:4106->vlan_vid,resubmit(,3),goto_table:5",
        ),
        (
            FlowMod::add(3, 14, Match::new().eth_type(0x0800).masked(Field::CtState, 0x21u32, 0x21u32).with(Field::CtZone, 5u16).with(Field::CtMark, 9u32))
                .apply(vec![Action::Ct(Ct { flags: NX_CT_F_COMMIT, zone: CtZone::Imm(5), table: Some(4), alg: 0, actions: vec![Action::set_field(Field::CtMark, 1u32)] })]),
            "table=3, priority=14,ct_state=+new+trk,ct_zone=5,ct_mark=0x9,ip actions=ct(commit,table=4,zone=5,exec(set_field:0x1->ct_mark))",
        ),
        (
            FlowMod::add(3, 15, Match::new().ipv6_src("fe80::1".parse().unwrap()).with(Field::UdpDst, 53u16)).apply(vec![Action::Ct(Ct {
                flags: NX_CT_F_COMMIT,
                zone: CtZone::Field { field: Field::Reg(6), ofs: 0, n_bits: 16 },
                table: None,
                alg: 0,
                actions: vec![Action::Nat(Nat { flags: 1, ipv4: None, ports: None })],
            })]),
            "table=3, priority=15,udp6,ipv6_src=fe80::1,tp_dst=53 actions=ct(commit,zone=NXM_NX_REG6[0..15],nat(src))",
        ),
        (
            FlowMod::add(4, 16, Match::new().with(Field::VlanVid, OFPVID_PRESENT | 5)).apply(vec![Action::PopVlan, Action::Group(1)]),
            "table=4, priority=16,dl_vlan=5 actions=pop_vlan,group:1",
        ),
        (
            FlowMod::add(4, 17, Match::new().eth_type(0x0800).with(Field::IpDscp, 10u8).with(Field::Icmpv4Type, 8u8))
                .apply(vec![Action::set_field(Field::Ipv4Dst, ip([192, 0, 2, 1]))]),
            "table=4, priority=17,icmp,nw_tos=40,icmp_type=8 actions=set_field:192.0.2.1->ip_dst",
        ),
        (
            FlowMod::add(5, 18, Match::new().with(Field::Metadata, 0x55u64)).apply(vec![Action::Learn(Learn {
                table_id: 10,
                priority: 5,
                idle_timeout: 30,
                specs: vec![
                    LearnSpec { n_bits: 48, src: LearnSrc::Field(Field::EthSrc, 0), dst: LearnDst::Match(Field::EthDst, 0) },
                    LearnSpec { n_bits: 8, src: LearnSrc::Field(Field::Reg(0), 0), dst: LearnDst::Load(Field::Reg(2), 8) },
                    LearnSpec { n_bits: 16, src: LearnSrc::Immediate(0x1234), dst: LearnDst::Load(Field::Reg(1), 16) },
                    LearnSpec { n_bits: 32, src: LearnSrc::Field(Field::InPort, 0), dst: LearnDst::Output },
                ],
                ..Default::default()
            })]),
            "table=5, priority=18,metadata=0x55 actions=learn(table=10,idle_timeout=30,priority=5,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_NX_REG0[0..7]->NXM_NX_REG2[8..15],load:0x1234->NXM_NX_REG1[16..31],output:OXM_OF_IN_PORT[])",
        ),
        (
            FlowMod {
                instructions: vec![
                    Instruction::ApplyActions(vec![Action::output(1)]),
                    Instruction::WriteMetadata { metadata: 0x10, mask: 0xff },
                    Instruction::WriteActions(vec![Action::output(3)]),
                    Instruction::GotoTable(6),
                ],
                ..FlowMod::add(5, 19, Match::new())
            },
            "table=5, priority=19 actions=output:1,write_actions(output:3),write_metadata:0x10/0xff,goto_table:6",
        ),
        (
            FlowMod::add(6, 20, Match::new().eth_type(0x0800).with(Field::IpProto, 17u8).with(Field::UdpSrc, 68u16)).apply(vec![]).cookie(0x77),
            "cookie=0x77, table=6, priority=20,udp,tp_src=68 actions=drop",
        ),
        (
            FlowMod::add(7, 21, Match::new().reg(2, 3)).apply(vec![Action::output_reg(2)]),
            "table=7, priority=21,reg2=0x3 actions=output:NXM_NX_REG2[]",
        ),
        (
            FlowMod::add(8, 22, Match::new().eth_type(0x0800).ipv4_src(Ipv4Addr::new(10, 0, 0, 7)))
                .apply(vec![Action::Conjunction { id: 0x1_0002, clause: 1, n_clauses: 3 }, Action::Conjunction { id: 9, clause: 2, n_clauses: 2 }]),
            "table=8, priority=22,ip,nw_src=10.0.0.7 actions=conjunction(65538,1/3),conjunction(9,2/2)",
        ),
        (FlowMod::add(8, 23, Match::new().with(Field::ConjId, 9u32)).goto(9), "table=8, priority=23,conj_id=9 actions=goto_table:9"),
        (
            // A Neighbor Solicitation turned into the Advertisement that answers it, in two
            // steps: OVS lets a flow set the target link-layer option only where its match
            // says "advertisement".
            FlowMod::add(9, 24, Match::new().with(Field::Icmpv6Type, ND_SOLICIT).with(Field::NdTarget, u128::from(v6("fd00::2"))))
                .apply(vec![
                    Action::RegMove { src: Field::Ipv6Src, src_ofs: 0, dst: Field::Ipv6Dst, dst_ofs: 0, n_bits: 128 },
                    Action::set_field(Field::Ipv6Src, u128::from(v6("fd00::2"))),
                    Action::set_field(Field::Icmpv6Type, ND_ADVERT),
                    Action::set_field(Field::NdReserved, 0x6000_0000u32),
                    Action::set_field(Field::NdOptionsType, ND_OPT_TARGET_LL),
                ])
                .goto(10),
            "table=9, priority=24,icmp6,icmp_type=135,nd_target=fd00::2 actions=move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],set_field:fd00::2->ipv6_src,set_field:136->icmpv6_type,set_field:1610612736->nd_reserved,set_field:2->nd_options_type,goto_table:10",
        ),
        (
            FlowMod::add(10, 25, Match::new().with(Field::Icmpv6Type, ND_ADVERT).reg(2, 9))
                .apply(vec![Action::RegMove { src: Field::EthSrc, src_ofs: 0, dst: Field::NdTll, dst_ofs: 0, n_bits: 48 }, Action::output(OFPP_IN_PORT)]),
            "table=10, priority=25,icmp6,reg2=0x9,icmp_type=136 actions=move:NXM_OF_ETH_SRC[]->NXM_NX_ND_TLL[],IN_PORT",
        ),
    ]
}

fn group1() -> Message {
    Message::GroupMod(GroupMod {
        command: 0,
        group_type: 0,
        group_id: 1,
        buckets: vec![Bucket { weight: 0, watch_port: OFPP_ANY, watch_group: OFPG_ANY, actions: vec![Action::output(1)] }],
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn flows_appear_in_dump_flows_exactly_as_intended() {
    let lab = lab('o', 1);
    let h = &lab.hosts[0];
    let (_vs, of, _ev) = bridge(h, "br0").await;
    let mut msgs = vec![group1()];
    msgs.extend(showcase().into_iter().map(|(f, _)| Message::FlowMod(f)));
    of.send_checked(&msgs).await.expect("the switch accepts every flow");
    let mut want: Vec<String> = showcase().into_iter().map(|(_, s)| s.to_string()).collect();
    want.sort();
    assert_eq!(dump_flows(h, "br0"), want);
    // Our own flow-stats decoder reads back what we wrote.
    let stats = of.dump_flows(FlowStatsRequest::default()).await.unwrap();
    for (fm, text) in showcase() {
        let got = stats.iter().find(|s| s.table_id == fm.table_id && s.priority == fm.priority).unwrap_or_else(|| panic!("{text} missing"));
        assert_eq!(got.cookie, fm.cookie, "{text}");
        let fm = fm.normalized().unwrap();
        assert_eq!(got.instructions, fm.instructions, "{text}");
        assert_eq!(got.match_, fm.match_, "{text}");
    }
}

#[test]
fn encoded_messages_decode_in_ovs_ofctl_ofp_print_as_intended() {
    let hex = |m: &Message| -> String { m.encode(0x42).unwrap().iter().map(|b| format!("{b:02x}")).collect() };
    let print = |m: &Message| run("ovs-ofctl", &["ofp-print", &hex(m)]);
    for (fm, text) in showcase() {
        // ofp-print puts the cookie after the match, dump-flows before it.
        let got = print(&Message::FlowMod(fm.clone())).replace(" cookie:0x77", "");
        // ofp-print shows the flow-mod with "table:N" and "ADD"; the match and actions must
        // read exactly as dump-flows shows them.
        let body = text.split_once(", ").filter(|_| text.starts_with("table=") || text.starts_with("cookie=")).map(|(_, b)| b).unwrap_or(text);
        let body = body.split_once(", ").filter(|_| text.starts_with("cookie=")).map(|(_, b)| b).unwrap_or(body);
        assert!(got.contains("OFPT_FLOW_MOD (OF1.3) (xid=0x42): ADD"), "{got}");
        assert!(got.trim_end().ends_with(body), "ofp-print: {got}\nwanted it to end with: {body}");
    }
    let cases: Vec<(Message, &str)> = vec![
        (Message::Hello(Hello::of13()), "OFPT_HELLO (OF1.3) (xid=0x42):\n version bitmap: 0x04"),
        (Message::EchoRequest(vec![]), "OFPT_ECHO_REQUEST (OF1.3) (xid=0x42): 0 bytes of payload"),
        (Message::FeaturesRequest, "OFPT_FEATURES_REQUEST (OF1.3) (xid=0x42):"),
        (Message::BarrierRequest, "OFPT_BARRIER_REQUEST (OF1.3) (xid=0x42):"),
        (Message::RoleRequest(RoleMsg { role: Role::Master, generation_id: 7 }), "OFPT_ROLE_REQUEST (OF1.3) (xid=0x42): role=primary generation_id=7"),
        (Message::SetConfig(SwitchConfig { flags: 0, miss_send_len: 128 }), "OFPT_SET_CONFIG (OF1.3) (xid=0x42): frags=normal miss_send_len=128"),
        (group1(), "OFPT_GROUP_MOD (OF1.3) (xid=0x42):\n ADD group_id=1,type=all,bucket=actions=output:1"),
        (
            Message::FlowMod(FlowMod::delete_by_cookie(0x100, 0xf00)),
            "OFPT_FLOW_MOD (OF1.3) (xid=0x42): DEL table:255 priority=0 cookie:0x100/0xf00 actions=drop",
        ),
        (
            Message::PacketOut(PacketOut { buffer_id: OFP_NO_BUFFER, in_port: OFPP_CONTROLLER, actions: vec![Action::output(1)], data: vec![] }),
            "OFPT_PACKET_OUT (OF1.3) (xid=0x42): in_port=CONTROLLER actions=output:1 data_len=0",
        ),
        (
            Message::MultipartRequest(MultipartRequest { flags: 0, body: MultipartRequestBody::PortDesc }),
            "OFPST_PORT_DESC request (OF1.3) (xid=0x42): port=ANY",
        ),
        (
            Message::BundleControl(BundleControl { bundle_id: 3, ctrl_type: bundle::OPEN_REQUEST, flags: bundle::ATOMIC }),
            "ONFT_BUNDLE_CONTROL (OF1.3) (xid=0x42):\n bundle_id=0x3 type=OPEN_REQUEST flags=atomic",
        ),
    ];
    for (m, want) in cases {
        let got = print(&m);
        assert_eq!(got.trim_end(), want, "ofp-print of {m:?}");
    }
}

/// A meter made through the codec is the meter OVS shows, and a flow can use it.
#[tokio::test(flavor = "multi_thread")]
async fn a_meter_added_through_the_codec_limits_what_ovs_says() {
    let lab = lab('m', 1);
    let h = &lab.hosts[0];
    let (_vs, of, _ev) = bridge(h, "br0").await;
    of.send_checked(&[Message::MeterMod(MeterMod::drop_above(7, 100, 50))]).await.expect("OVS takes the meter");
    let flow = FlowMod {
        instructions: vec![Instruction::Meter(7), Instruction::ApplyActions(vec![Action::output(2)])],
        ..FlowMod::add(0, 10, Match::new().in_port(1))
    };
    of.send_checked(&[Message::FlowMod(flow)]).await.expect("a flow may name the meter");
    let dump_meters = || {
        let target = format!("unix:{}", h.ovs.mgmt_sock("br0").display());
        let out = std::process::Command::new("ovs-ofctl")
            .args(["-O", "OpenFlow13", "dump-meters", &target])
            .output()
            .expect("ovs-ofctl (install openvswitch-common)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let meters = dump_meters();
    assert!(meters.contains("meter=7") && meters.contains("pktps") && meters.contains("rate=100") && meters.contains("burst_size=50"), "{meters}");
    assert!(dump_flows(h, "br0").iter().any(|f| f.contains("meter:7")), "{:?}", dump_flows(h, "br0"));
    // Adding it twice is the switch's error, reported for that request.
    assert!(of.send_checked(&[Message::MeterMod(MeterMod::drop_above(7, 100, 50))]).await.is_err());
    let gone = MeterMod { command: MeterMod::DELETE, flags: 0, meter_id: 7, bands: vec![] };
    of.send_checked(&[Message::MeterMod(gone)]).await.expect("OVS removes it");
    assert!(!dump_meters().contains("meter=7"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_flow_is_an_error_for_its_own_request_only() {
    let lab = lab('o', 1);
    let h = &lab.hosts[0];
    let (_vs, of, _ev) = bridge(h, "br0").await;
    let good = |p: u16| Message::FlowMod(FlowMod::add(0, p, Match::new().in_port(p as u32)).apply(vec![Action::output(1)]));
    // pop_vlan on a flow that does not match a VLAN tag: the switch refuses it.
    let bad = Message::FlowMod(FlowMod::add(0, 500, Match::new().in_port(9)).apply(vec![Action::PopVlan]));
    match of.send_checked(&[good(1), bad.clone(), good(2)]).await {
        Err(OfError::Rejected { index: 1, error: RejectReason::Switch(e) }) => assert_eq!(e.err_type, 2, "a bad-action error: {e}"),
        other => panic!("expected message 1 refused, got {other:?}"),
    }
    assert_eq!(dump_flows(h, "br0").len(), 2, "both good flows are installed");
    // The switch counts them without sending them (what the audit asks most of the time).
    assert_eq!(of.aggregate(FlowStatsRequest::default()).await.expect("aggregate stats").flow_count, 2);
    // Concurrent senders on one connection: the errors all go to the one that sent bad flows.
    let (a, b) = (of.clone(), of.clone());
    let bad_task = tokio::spawn(async move {
        let mut refused = 0;
        for _ in 0..30 {
            if a.send_checked(std::slice::from_ref(&bad)).await.is_err() {
                refused += 1;
            }
        }
        refused
    });
    let good_task = tokio::spawn(async move {
        for p in 10..40 {
            b.send_checked(&[good(p)]).await.expect("a good flow is never blamed for a bad one");
        }
    });
    good_task.await.unwrap();
    assert_eq!(bad_task.await.unwrap(), 30);
    of.send_checked(&[good(3)]).await.expect("the session is usable after refusals");
}

#[tokio::test(flavor = "multi_thread")]
async fn match_prerequisites_are_filled_in_or_refused_before_sending() {
    let lab = lab('o', 1);
    let h = &lab.hosts[0];
    let (_vs, of, _ev) = bridge(h, "br0").await;
    let fm = |m: Match| Message::FlowMod(FlowMod::add(0, 100, m).apply(vec![Action::output(1)]));
    // Ambiguous: tcp_dst needs IPv4 or IPv6 and nothing says which.
    match of.send_checked(&[fm(Match::new().with(Field::TcpDst, 80u16))]).await {
        Err(OfError::Rejected { index: 0, error: RejectReason::Encode(EncodeError::Prerequisite { field, reason }) }) => {
            assert_eq!(field, "tcp_dst");
            assert!(reason.contains("dl_type"), "{reason}");
        }
        other => panic!("expected a prerequisite error, got {other:?}"),
    }
    // Contradicted: tcp_dst with nw_proto=17.
    let contra = Match::new().eth_type(0x0800).with(Field::IpProto, 17u8).with(Field::TcpDst, 80u16);
    assert!(matches!(
        of.send_checked(&[fm(contra)]).await,
        Err(OfError::Rejected { error: RejectReason::Encode(EncodeError::Prerequisite { field: "tcp_dst", .. }), .. })
    ));
    assert!(dump_flows(h, "br0").is_empty(), "nothing reached the switch");
    // Implied prerequisites are filled in.
    of.send_checked(&[
        fm(Match::new().eth_type(0x0800).with(Field::TcpDst, 80u16)),
        fm(Match::new().with(Field::ArpTpa, ip([10, 0, 0, 1]))),
        fm(Match::new().ipv6_dst("2001:db8::1".parse().unwrap()).with(Field::UdpDst, 53u16)),
    ])
    .await
    .unwrap();
    assert_eq!(
        dump_flows(h, "br0"),
        vec![
            "priority=100,arp,arp_tpa=10.0.0.1 actions=output:1",
            "priority=100,tcp,tp_dst=80 actions=output:1",
            "priority=100,udp6,ipv6_dst=2001:db8::1,tp_dst=53 actions=output:1",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_of_10000_flows_commits_atomically() {
    let lab = lab('o', 1);
    let h = &lab.hosts[0];
    let (_vs, of, _ev) = bridge(h, "br0").await;
    let flows = |base: u32, n: u32| -> Vec<Message> {
        (0..n).map(|i| Message::FlowMod(FlowMod::add(0, 100, Match::new().ipv4_dst(Ipv4Addr::from(base + i))).apply(vec![Action::output(1)]))).collect()
    };
    of.bundle(&flows(0x0a00_0000, 10_000)).await.expect("bundle commits");
    assert_eq!(dump_flows(h, "br0").len(), 10_000);
    // One bad flow in the middle of another 10,000: none of them is installed.
    let mut batch = flows(0x0b00_0000, 10_000);
    batch[5_000] = Message::FlowMod(FlowMod::add(0, 100, Match::new().in_port(9)).apply(vec![Action::PopVlan]));
    match of.bundle(&batch).await {
        Err(OfError::Rejected { index, .. }) => assert_eq!(index, 5_000),
        other => panic!("expected the bundle refused at message 5000, got {other:?}"),
    }
    let after = dump_flows(h, "br0");
    assert_eq!(after.len(), 10_000, "the refused bundle left no trace");
    assert!(after.iter().all(|l| l.contains("nw_dst=10.")), "only the first bundle's flows");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_by_cookie_and_mask_removes_exactly_its_flows() {
    let lab = lab('o', 1);
    let h = &lab.hosts[0];
    let (_vs, of, _ev) = bridge(h, "br0").await;
    let msgs: Vec<Message> = (0..60u16)
        .map(|i| {
            let cookie = [0x100u64, 0x200, 0x1100][i as usize % 3] | i as u64 & 0xff;
            Message::FlowMod(FlowMod::add(i as u8 % 4, 100 + i, Match::new().in_port(i as u32 + 1)).cookie(cookie).apply(vec![Action::output(1)]))
        })
        .collect();
    of.send_checked(&msgs).await.unwrap();
    assert_eq!(dump_flows(h, "br0").len(), 60);
    of.send_checked(&[Message::FlowMod(FlowMod::delete_by_cookie(0x100, 0xff00))]).await.unwrap();
    let left = of.dump_flows(FlowStatsRequest::default()).await.unwrap();
    assert_eq!(left.len(), 40);
    assert!(left.iter().all(|f| f.cookie & 0xff00 != 0x100), "every 0x1xx cookie is gone, 0x11xx and 0x2xx stay");
    assert_eq!(left.iter().filter(|f| f.cookie & 0xff00 == 0x1100).count(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn master_and_slave_roles_behave_as_the_spec_says() {
    let lab = lab('o', 1);
    let h = &lab.hosts[0];
    let (vs, _mgmt, _ev) = bridge(h, "br0").await;
    let (pa, pb) = (h.ovs.rundir.join("ctl-a.sock"), h.ovs.rundir.join("ctl-b.sock"));
    let (la, lb) = (Listener::bind_unix(&pa).unwrap(), Listener::bind_unix(&pb).unwrap());
    vs.set_controllers("br0", &[format!("unix:{}", pa.display()), format!("unix:{}", pb.display())]).await.unwrap();
    let opts = ConnectionOptions::default;
    let both = tokio::time::timeout(Duration::from_secs(10), async { tokio::try_join!(la.accept(opts()), lb.accept(opts())) });
    let ((a, _ea), (b, _eb)) = both.await.expect("the switch connects within 10 s").expect("handshakes succeed");
    assert_eq!(a.datapath_id(), 0xabc);
    let flow = |p: u32| Message::FlowMod(FlowMod::add(0, 10, Match::new().in_port(p)).apply(vec![Action::output(1)]));

    assert_eq!(a.set_role(Role::Master, 1).await.unwrap().role, Role::Master);
    assert_eq!(b.set_role(Role::Slave, 1).await.unwrap().role, Role::Slave);
    a.send_checked(&[flow(1)]).await.expect("the master may change flows");
    match b.send_checked(&[flow(2)]).await {
        Err(OfError::Rejected { error: RejectReason::Switch(e), .. }) => assert!(e.is_slave(), "{e}"),
        other => panic!("a slave's flow_mod must be refused, got {other:?}"),
    }
    assert_eq!(b.dump_flows(FlowStatsRequest::default()).await.unwrap().len(), 1, "a slave may read");
    // B takes over with a newer generation: A becomes slave.
    assert_eq!(b.set_role(Role::Master, 2).await.unwrap().role, Role::Master);
    assert!(matches!(a.send_checked(&[flow(3)]).await, Err(OfError::Rejected { error: RejectReason::Switch(ref e), .. }) if e.is_slave()));
    b.send_checked(&[flow(4)]).await.unwrap();
    // A stale generation cannot win mastership back.
    match a.set_role(Role::Master, 1).await {
        Err(OfError::Switch(e)) => assert_eq!((e.err_type, e.code), (OFPET_ROLE_REQUEST_FAILED, 0), "OFPRRFC_STALE: {e}"),
        other => panic!("expected a stale-generation refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn switches_connect_to_a_tcp_listener_and_we_connect_to_switches() {
    let lab = lab('o', 1);
    let h = &lab.hosts[0];
    let (vs, mgmt, _ev) = bridge(h, "br0").await;
    // Switch connects to us: a TCP listener on the host's own loopback.
    let std_l = plexus_agent::netns::bind_tcp(&h.netns, "127.0.0.1:0".parse().unwrap()).unwrap();
    let port = std_l.local_addr().unwrap().port();
    let l = Listener::from_std(std_l).unwrap();
    vs.set_controllers("br0", &[format!("tcp:127.0.0.1:{port}")]).await.unwrap();
    let (c, _e) = tokio::time::timeout(Duration::from_secs(10), l.accept(ConnectionOptions::default())).await.unwrap().unwrap();
    assert_eq!(c.datapath_id(), 0xabc);
    c.send_checked(&[Message::FlowMod(FlowMod::add(0, 1, Match::new()).apply(vec![]))]).await.unwrap();
    // We connect to the switch: its management socket (the session `bridge` opened).
    assert_eq!(mgmt.datapath_id(), 0xabc);
    assert_eq!(mgmt.dump_flows(FlowStatsRequest::default()).await.unwrap().len(), 1);
    let ports = mgmt.port_desc().await.unwrap();
    assert!(ports.iter().any(|p| p.name == "br0" && p.port_no == OFPP_LOCAL), "{ports:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn async_messages_during_requests_are_delivered() {
    let lab = lab('o', 1);
    let h = &lab.hosts[0];
    let (vs, _mgmt, _ev) = bridge(h, "br0").await;
    // Asynchronous messages go to controller connections (not to management sessions).
    let (of, mut events) = controller(h, &vs, "br0", ConnectionOptions::default()).await;
    let adder = tokio::spawn(async move {
        for i in 0..3 {
            vs.add_port("br0", &plexus_ovs::ovsdb::PortSpec::new(&format!("p{i}"), plexus_ovs::ovsdb::InterfaceType::Internal)).await.unwrap();
        }
    });
    // Keep requests in flight the whole time the ports appear.
    let t = Instant::now();
    while !adder.is_finished() || t.elapsed() < Duration::from_millis(500) {
        of.barrier().await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("port status arrives").unwrap();
        if let Message::PortStatus(ps) = ev.message {
            if ps.reason == PortReason::Add {
                seen.push(ps.port.name);
            }
        }
    }
    seen.sort();
    assert_eq!(seen, ["p0", "p1", "p2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_session_survives_60s_and_a_dead_switch_is_noticed() {
    let lab = lab('o', 1);
    let h = &lab.hosts[0];
    let (vs, _mgmt, _ev) = bridge(h, "br0").await;
    let opts = ConnectionOptions { probe_interval: Duration::from_secs(2), ..Default::default() };
    let (c, _e) = controller(h, &vs, "br0", opts.clone()).await;
    let (m, _me) = Connection::connect_unix(h.ovs.mgmt_sock("br0"), opts).await.unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(c.closed_reason().is_none() && m.closed_reason().is_none(), "{:?} {:?}", c.closed_reason(), m.closed_reason());
    c.barrier().await.expect("controller session alive after 60 s idle");
    m.barrier().await.expect("management session alive after 60 s idle");
    // A frozen switch answers nothing: both sessions notice within a few probe intervals.
    assert!(h.ovs.signal(Daemon::Vswitchd, libc::SIGSTOP));
    let t = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(15), c.closed()).await.expect("dead peer noticed");
    assert!(reason.contains("peer dead"), "{reason}");
    let reason = tokio::time::timeout(Duration::from_secs(15), m.closed()).await.expect("dead peer noticed");
    assert!(reason.contains("peer dead"), "{reason}");
    assert!(t.elapsed() < Duration::from_secs(10), "noticed after {:?}", t.elapsed());
    h.ovs.signal(Daemon::Vswitchd, libc::SIGCONT);
}

#[tokio::test(flavor = "multi_thread")]
async fn packet_out_through_the_pipeline_comes_back_as_packet_in() {
    let lab = lab('o', 1);
    let h = &lab.hosts[0];
    let (vs, _mgmt, _ev) = bridge(h, "br0").await;
    let (of, _events) = controller(h, &vs, "br0", ConnectionOptions::default()).await;
    let mut packet_ins = of.take_packet_ins().expect("the packet-in queue");
    assert!(of.take_packet_ins().is_none(), "one reader only");
    let punt = FlowMod::add(0, 10, Match::new().eth_type(0x88b5))
        .cookie(0xc0ffee)
        .apply(vec![Action::RegLoad { dst: Field::Reg(2), ofs: 0, n_bits: 16, value: 0xbeef }, Action::controller()]);
    of.send_checked(&[Message::FlowMod(punt)]).await.unwrap();
    // A frame of the local-experimental ethertype, injected into table 0.
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5];
    frame.extend((0..50u8).collect::<Vec<_>>());
    let out = PacketOut { buffer_id: OFP_NO_BUFFER, in_port: OFPP_CONTROLLER, actions: vec![Action::output(OFPP_TABLE)], data: frame.clone() };
    of.send_checked(&[Message::PacketOut(out)]).await.unwrap();
    let pin = tokio::time::timeout(Duration::from_secs(5), packet_ins.recv()).await.expect("packet-in arrives").expect("a packet-in");
    assert_eq!(pin.data, frame);
    assert_eq!(pin.cookie, 0xc0ffee);
    assert_eq!(pin.match_.get(Field::Reg(2)).map(|f| f.value), Some(0xbeef), "registers travel with the packet: {:?}", pin.match_);
}

#[tokio::test(flavor = "multi_thread")]
async fn we_connect_to_a_switch_listening_on_tcp() {
    let lab = lab('o', 1);
    let h = &lab.hosts[0];
    let (vs, _mgmt, _ev) = bridge(h, "br0").await;
    // A passive target: the switch listens on its own loopback; we dial from inside.
    let port = plexus_agent::netns::bind_tcp(&h.netns, "127.0.0.1:0".parse().unwrap()).unwrap().local_addr().unwrap().port();
    vs.set_controllers("br0", &[format!("ptcp:{port}:127.0.0.1")]).await.unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(s) = plexus_agent::netns::connect_tcp(&h.netns, addr) {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = stream.expect("the switch listens on ptcp");
    s.set_nonblocking(true).unwrap();
    let (c, _e) = Connection::handshake(Stream::Tcp(tokio::net::TcpStream::from_std(s).unwrap()), ConnectionOptions::default()).await.unwrap();
    assert_eq!(c.datapath_id(), 0xabc);
    c.send_checked(&[Message::FlowMod(FlowMod::add(0, 7, Match::new().in_port(1)).apply(vec![Action::output(2)]))]).await.unwrap();
    assert_eq!(dump_flows(h, "br0"), vec!["priority=7,in_port=1 actions=output:2"]);
}
