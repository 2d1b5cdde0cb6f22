//! OXM match fields (OpenFlow 1.3 basic class plus the Nicira NXM classes) and matches.
//!
//! Field numbers are those of `ovs-fields(7)`. A [`Match`] keeps its fields in canonical order
//! (prerequisites first), and [`Match::normalized`] fills in prerequisites that follow from the
//! fields present or refuses the match before anything reaches a switch.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::error::{DecodeError, EncodeError};
use super::wire::{Put, Reader};

/// OXM class of OpenFlow basic fields.
pub const OXM_CLASS_BASIC: u16 = 0x8000;
/// NXM class 0 (Nicira fields mirroring OpenFlow 1.0 ones).
pub const OXM_CLASS_NXM0: u16 = 0x0000;
/// NXM class 1 (Nicira extension fields: registers, tunnels, conntrack).
pub const OXM_CLASS_NXM1: u16 = 0x0001;
/// The class OVS gives Ericsson's ND fields (`nd_reserved`, `nd_options_type`), which turn a
/// Neighbor Solicitation into an Advertisement in place.
pub const OXM_CLASS_ERICSSON: u16 = 0x1000;

/// `icmpv6_type` of a Neighbor Solicitation.
pub const ND_SOLICIT: u8 = 135;
/// `icmpv6_type` of a Neighbor Advertisement.
pub const ND_ADVERT: u8 = 136;
/// ND option type "target link-layer address" (`nd_options_type`).
pub const ND_OPT_TARGET_LL: u8 = 2;

/// `arp_op` of an ARP request.
pub const ARP_REQUEST: u16 = 1;
/// `arp_op` of an ARP reply.
pub const ARP_REPLY: u16 = 2;

/// `vlan_vid` bit meaning "a VLAN tag is present" (OFPVID_PRESENT).
pub const OFPVID_PRESENT: u16 = 0x1000;

/// A match field. The declaration order is the canonical order on the wire: every field comes
/// after the fields that are its prerequisites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)]
pub enum Field {
    InPort,
    Metadata,
    TunnelId,
    TunIpv4Src,
    TunIpv4Dst,
    /// Nicira register `reg0`..`reg15` (32 bits each).
    Reg(u8),
    CtState,
    CtZone,
    CtMark,
    /// Nicira `conj_id`: the id of the conjunctive match a packet completed.
    ConjId,
    EthDst,
    EthSrc,
    EthType,
    VlanVid,
    VlanPcp,
    IpProto,
    IpDscp,
    Ipv4Src,
    Ipv4Dst,
    Ipv6Src,
    Ipv6Dst,
    TcpSrc,
    TcpDst,
    UdpSrc,
    UdpDst,
    Icmpv4Type,
    Icmpv4Code,
    Icmpv6Type,
    Icmpv6Code,
    /// The target address of an IPv6 Neighbor Solicitation or Advertisement.
    NdTarget,
    /// The source link-layer option of a Neighbor Solicitation.
    NdSll,
    /// The target link-layer option of a Neighbor Advertisement.
    NdTll,
    /// The 32 bits after an ND message's checksum (an advertisement's R, S and O flags).
    NdReserved,
    /// The type of an ND message's first option.
    NdOptionsType,
    ArpOp,
    ArpSpa,
    ArpTpa,
    ArpSha,
    ArpTha,
}

impl Field {
    /// Every field the codec knows, registers included.
    pub fn all() -> Vec<Field> {
        use Field::*;
        let mut v = vec![
            InPort,
            Metadata,
            TunnelId,
            TunIpv4Src,
            TunIpv4Dst,
            CtState,
            CtZone,
            CtMark,
            ConjId,
            EthDst,
            EthSrc,
            EthType,
            VlanVid,
            VlanPcp,
            IpProto,
            IpDscp,
            Ipv4Src,
            Ipv4Dst,
            Ipv6Src,
            Ipv6Dst,
            TcpSrc,
            TcpDst,
            UdpSrc,
            UdpDst,
            Icmpv4Type,
            Icmpv4Code,
            Icmpv6Type,
            Icmpv6Code,
            NdTarget,
            NdSll,
            NdTll,
            NdReserved,
            NdOptionsType,
            ArpOp,
            ArpSpa,
            ArpTpa,
            ArpSha,
            ArpTha,
        ];
        v.extend((0..16).map(Reg));
        v
    }

    /// (class, field number, payload length in bytes) as on the wire.
    pub fn oxm(self) -> (u16, u8, u8) {
        use Field::*;
        match self {
            InPort => (OXM_CLASS_BASIC, 0, 4),
            Metadata => (OXM_CLASS_BASIC, 2, 8),
            EthDst => (OXM_CLASS_BASIC, 3, 6),
            EthSrc => (OXM_CLASS_BASIC, 4, 6),
            EthType => (OXM_CLASS_BASIC, 5, 2),
            VlanVid => (OXM_CLASS_BASIC, 6, 2),
            VlanPcp => (OXM_CLASS_BASIC, 7, 1),
            IpDscp => (OXM_CLASS_BASIC, 8, 1),
            IpProto => (OXM_CLASS_BASIC, 10, 1),
            Ipv4Src => (OXM_CLASS_BASIC, 11, 4),
            Ipv4Dst => (OXM_CLASS_BASIC, 12, 4),
            TcpSrc => (OXM_CLASS_BASIC, 13, 2),
            TcpDst => (OXM_CLASS_BASIC, 14, 2),
            UdpSrc => (OXM_CLASS_BASIC, 15, 2),
            UdpDst => (OXM_CLASS_BASIC, 16, 2),
            Icmpv4Type => (OXM_CLASS_BASIC, 19, 1),
            Icmpv4Code => (OXM_CLASS_BASIC, 20, 1),
            ArpOp => (OXM_CLASS_BASIC, 21, 2),
            ArpSpa => (OXM_CLASS_BASIC, 22, 4),
            ArpTpa => (OXM_CLASS_BASIC, 23, 4),
            ArpSha => (OXM_CLASS_BASIC, 24, 6),
            ArpTha => (OXM_CLASS_BASIC, 25, 6),
            Ipv6Src => (OXM_CLASS_BASIC, 26, 16),
            Ipv6Dst => (OXM_CLASS_BASIC, 27, 16),
            Icmpv6Type => (OXM_CLASS_BASIC, 29, 1),
            Icmpv6Code => (OXM_CLASS_BASIC, 30, 1),
            NdTarget => (OXM_CLASS_BASIC, 31, 16),
            NdSll => (OXM_CLASS_BASIC, 32, 6),
            NdTll => (OXM_CLASS_BASIC, 33, 6),
            NdReserved => (OXM_CLASS_ERICSSON, 1, 4),
            NdOptionsType => (OXM_CLASS_ERICSSON, 2, 1),
            TunnelId => (OXM_CLASS_BASIC, 38, 8),
            Reg(n) => (OXM_CLASS_NXM1, n, 4),
            TunIpv4Src => (OXM_CLASS_NXM1, 31, 4),
            TunIpv4Dst => (OXM_CLASS_NXM1, 32, 4),
            CtState => (OXM_CLASS_NXM1, 105, 4),
            CtZone => (OXM_CLASS_NXM1, 106, 2),
            CtMark => (OXM_CLASS_NXM1, 107, 4),
            ConjId => (OXM_CLASS_NXM1, 37, 4),
        }
    }

    /// The field with this class and number, if the codec knows it.
    pub fn from_oxm(class: u16, field: u8) -> Option<Field> {
        if class == OXM_CLASS_NXM1 && field < 16 {
            return Some(Field::Reg(field));
        }
        Field::all().into_iter().find(|f| {
            let (c, n, _) = f.oxm();
            c == class && n == field
        })
    }

    /// Payload width in bytes.
    pub fn width(self) -> usize {
        self.oxm().2 as usize
    }

    /// Payload width in bits.
    pub fn bits(self) -> u16 {
        self.width() as u16 * 8
    }

    /// The 32-bit NXM/OXM header without mask, as Nicira actions (`move`, `load`, `learn`) name
    /// fields.
    pub fn nxm_header(self) -> u32 {
        let (class, field, len) = self.oxm();
        ((class as u32) << 16) | ((field as u32) << 9) | len as u32
    }

    /// The field a 32-bit NXM header (mask bit ignored) names. Besides the OXM headers this
    /// accepts the legacy NXM names OVS still uses inside Nicira actions when it reports
    /// flows (`NXM_OF_ETH_SRC`, `NXM_NX_TUN_ID`, …).
    pub fn from_nxm_header(h: u32) -> Option<Field> {
        use Field::*;
        let (class, num) = ((h >> 16) as u16, ((h >> 9) & 0x7f) as u8);
        let legacy = match (class, num) {
            (OXM_CLASS_NXM0, 0) => Some(InPort),
            (OXM_CLASS_NXM0, 1) => Some(EthDst),
            (OXM_CLASS_NXM0, 2) => Some(EthSrc),
            (OXM_CLASS_NXM0, 3) => Some(EthType),
            (OXM_CLASS_NXM0, 6) => Some(IpProto),
            (OXM_CLASS_NXM0, 7) => Some(Ipv4Src),
            (OXM_CLASS_NXM0, 8) => Some(Ipv4Dst),
            (OXM_CLASS_NXM0, 9) => Some(TcpSrc),
            (OXM_CLASS_NXM0, 10) => Some(TcpDst),
            (OXM_CLASS_NXM0, 11) => Some(UdpSrc),
            (OXM_CLASS_NXM0, 12) => Some(UdpDst),
            (OXM_CLASS_NXM0, 13) => Some(Icmpv4Type),
            (OXM_CLASS_NXM0, 14) => Some(Icmpv4Code),
            (OXM_CLASS_NXM0, 15) => Some(ArpOp),
            (OXM_CLASS_NXM0, 16) => Some(ArpSpa),
            (OXM_CLASS_NXM0, 17) => Some(ArpTpa),
            (OXM_CLASS_NXM1, 16) => Some(TunnelId),
            (OXM_CLASS_NXM1, 17) => Some(ArpSha),
            (OXM_CLASS_NXM1, 18) => Some(ArpTha),
            (OXM_CLASS_NXM1, 19) => Some(Ipv6Src),
            (OXM_CLASS_NXM1, 20) => Some(Ipv6Dst),
            (OXM_CLASS_NXM1, 21) => Some(Icmpv6Type),
            (OXM_CLASS_NXM1, 22) => Some(Icmpv6Code),
            (OXM_CLASS_NXM1, 23) => Some(NdTarget),
            (OXM_CLASS_NXM1, 24) => Some(NdSll),
            (OXM_CLASS_NXM1, 25) => Some(NdTll),
            _ => None,
        };
        legacy.or_else(|| Field::from_oxm(class, num))
    }

    /// The name `ovs-ofctl` uses for the field.
    pub fn name(self) -> &'static str {
        use Field::*;
        const REGS: [&str; 16] =
            ["reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7", "reg8", "reg9", "reg10", "reg11", "reg12", "reg13", "reg14", "reg15"];
        match self {
            InPort => "in_port",
            Metadata => "metadata",
            EthDst => "dl_dst",
            EthSrc => "dl_src",
            EthType => "dl_type",
            VlanVid => "vlan_vid",
            VlanPcp => "vlan_pcp",
            IpDscp => "ip_dscp",
            IpProto => "nw_proto",
            Ipv4Src => "nw_src",
            Ipv4Dst => "nw_dst",
            TcpSrc => "tcp_src",
            TcpDst => "tcp_dst",
            UdpSrc => "udp_src",
            UdpDst => "udp_dst",
            Icmpv4Type => "icmp_type",
            Icmpv4Code => "icmp_code",
            ArpOp => "arp_op",
            ArpSpa => "arp_spa",
            ArpTpa => "arp_tpa",
            ArpSha => "arp_sha",
            ArpTha => "arp_tha",
            Ipv6Src => "ipv6_src",
            Ipv6Dst => "ipv6_dst",
            Icmpv6Type => "icmpv6_type",
            Icmpv6Code => "icmpv6_code",
            NdTarget => "nd_target",
            NdSll => "nd_sll",
            NdTll => "nd_tll",
            NdReserved => "nd_reserved",
            NdOptionsType => "nd_options_type",
            TunnelId => "tun_id",
            TunIpv4Src => "tun_src",
            TunIpv4Dst => "tun_dst",
            Reg(n) => REGS.get((n & 15) as usize).copied().unwrap_or("reg"),
            CtState => "ct_state",
            CtZone => "ct_zone",
            CtMark => "ct_mark",
            ConjId => "conj_id",
        }
    }

    fn max_value(self) -> u128 {
        match self.width() {
            16 => u128::MAX,
            n => (1u128 << (n * 8)) - 1,
        }
    }
}

/// One field of a match (or the target of a `set_field`): a value and an optional mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatchField {
    /// The field.
    pub field: Field,
    /// Its value, right-aligned in the field's width.
    pub value: u128,
    /// The bits that must match (`None` = all).
    pub mask: Option<u128>,
}

impl MatchField {
    /// An exact field.
    pub fn new(field: Field, value: u128) -> Self {
        MatchField { field, value, mask: None }
    }

    pub(crate) fn check(&self) -> Result<(), EncodeError> {
        let max = self.field.max_value();
        if self.value > max || self.mask.is_some_and(|m| m > max) {
            return Err(EncodeError::Invalid {
                what: self.field.name(),
                reason: format!("value {:#x} does not fit in {} bits", self.value, self.field.bits()),
            });
        }
        Ok(())
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.check()?;
        let (class, field, len) = self.field.oxm();
        let has_mask = self.mask.is_some();
        out.put_u16(class);
        out.put_u8((field << 1) | has_mask as u8);
        out.put_u8(if has_mask { len * 2 } else { len });
        out.put_uint(self.value, len as usize);
        if let Some(m) = self.mask {
            out.put_uint(m, len as usize);
        }
        Ok(())
    }

    /// Decodes one OXM TLV. Unknown fields are an error: a match the codec cannot represent
    /// must not be silently narrowed.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<MatchField, DecodeError> {
        let class = r.u16()?;
        let fh = r.u8()?;
        let len = r.u8()? as usize;
        let (num, has_mask) = (fh >> 1, fh & 1 == 1);
        let field = Field::from_oxm(class, num)
            .ok_or_else(|| DecodeError::Invalid { what: "oxm", reason: format!("unknown field class {class:#06x} number {num}") })?;
        let want = field.width() * if has_mask { 2 } else { 1 };
        if len != want {
            return Err(DecodeError::BadLength { what: "oxm", len, reason: "does not match the field's width" });
        }
        let value = r.uint(field.width())?;
        let mask = if has_mask { Some(r.uint(field.width())?) } else { None };
        Ok(MatchField { field, value, mask })
    }
}

/// An OXM match: a set of fields, at most one of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Match {
    fields: Vec<MatchField>,
}

const ETH_IPV4: u128 = 0x0800;
const ETH_IPV6: u128 = 0x86dd;
const ETH_ARP: u128 = 0x0806;

impl Match {
    /// The empty match (matches every packet).
    pub fn new() -> Self {
        Match::default()
    }

    /// The fields, in canonical order.
    pub fn fields(&self) -> &[MatchField] {
        &self.fields
    }

    /// The value of `field`, if matched exactly or masked.
    pub fn get(&self, field: Field) -> Option<&MatchField> {
        self.fields.iter().find(|f| f.field == field)
    }

    /// Adds (or replaces) a field, keeping canonical order.
    pub fn set(mut self, mf: MatchField) -> Self {
        self.fields.retain(|f| f.field != mf.field);
        let at = self.fields.partition_point(|f| f.field < mf.field);
        self.fields.insert(at, mf);
        self
    }

    /// Adds an exact field.
    pub fn with(self, field: Field, value: impl Into<u128>) -> Self {
        self.set(MatchField::new(field, value.into()))
    }

    /// Adds a masked field.
    pub fn masked(self, field: Field, value: impl Into<u128>, mask: impl Into<u128>) -> Self {
        self.set(MatchField { field, value: value.into(), mask: Some(mask.into()) })
    }

    /// `in_port`.
    pub fn in_port(self, port: u32) -> Self {
        self.with(Field::InPort, port)
    }
    /// `dl_type`.
    pub fn eth_type(self, t: u16) -> Self {
        self.with(Field::EthType, t)
    }
    /// `dl_src`.
    pub fn eth_src(self, mac: [u8; 6]) -> Self {
        self.with(Field::EthSrc, mac_u128(mac))
    }
    /// `dl_dst`.
    pub fn eth_dst(self, mac: [u8; 6]) -> Self {
        self.with(Field::EthDst, mac_u128(mac))
    }
    /// `nw_src` (IPv4).
    pub fn ipv4_src(self, a: Ipv4Addr) -> Self {
        self.with(Field::Ipv4Src, u32::from(a))
    }
    /// `nw_dst` (IPv4).
    pub fn ipv4_dst(self, a: Ipv4Addr) -> Self {
        self.with(Field::Ipv4Dst, u32::from(a))
    }
    /// `ipv6_src`.
    pub fn ipv6_src(self, a: Ipv6Addr) -> Self {
        self.with(Field::Ipv6Src, u128::from(a))
    }
    /// `ipv6_dst`.
    pub fn ipv6_dst(self, a: Ipv6Addr) -> Self {
        self.with(Field::Ipv6Dst, u128::from(a))
    }
    /// `tun_id`.
    pub fn tunnel_id(self, id: u64) -> Self {
        self.with(Field::TunnelId, id)
    }
    /// `regN`.
    pub fn reg(self, n: u8, v: u32) -> Self {
        self.with(Field::Reg(n), v)
    }

    /// Checks prerequisites (OpenFlow 1.3 §7.2.3.6), filling in those implied by the fields
    /// present, and refusing a match whose prerequisites are contradicted or ambiguous.
    pub fn normalized(&self) -> Result<Match, EncodeError> {
        use Field::*;
        let mut m = self.clone();
        for f in &m.fields {
            f.check()?;
        }
        let val = |m: &Match, f: Field| m.get(f).map(|x| (x.value, x.mask.is_some()));

        // The IP protocol a transport field needs.
        let proto_need = m.fields.iter().find_map(|f| match f.field {
            TcpSrc | TcpDst => Some((f.field, 6u128)),
            UdpSrc | UdpDst => Some((f.field, 17)),
            Icmpv4Type | Icmpv4Code => Some((f.field, 1)),
            Icmpv6Type | Icmpv6Code | NdTarget | NdSll | NdTll | NdReserved | NdOptionsType => Some((f.field, 58)),
            _ => None,
        });
        if let Some((field, proto)) = proto_need {
            match val(&m, IpProto) {
                None => m = m.with(IpProto, proto),
                Some((p, false)) if p == proto => {}
                Some((p, _)) => {
                    return Err(EncodeError::Prerequisite { field: field.name(), reason: format!("needs nw_proto={proto}, but the match has nw_proto={p}") })
                }
            }
        }

        // The Ethernet type the fields need: a single value, or "IPv4 or IPv6".
        let mut need: Option<(Field, &'static [u128])> = None;
        // Judge by the caller's fields, so an error names the field they wrote.
        for f in &self.fields {
            let req: &'static [u128] = match f.field {
                Ipv4Src | Ipv4Dst | Icmpv4Type | Icmpv4Code => &[ETH_IPV4],
                Ipv6Src | Ipv6Dst | Icmpv6Type | Icmpv6Code | NdTarget | NdSll | NdTll | NdReserved | NdOptionsType => &[ETH_IPV6],
                ArpOp | ArpSpa | ArpTpa | ArpSha | ArpTha => &[ETH_ARP],
                IpProto | IpDscp | TcpSrc | TcpDst | UdpSrc | UdpDst => &[ETH_IPV4, ETH_IPV6],
                _ => continue,
            };
            need = match need {
                None => Some((f.field, req)),
                Some((pf, prev)) => {
                    let both: Vec<u128> = prev.iter().copied().filter(|x| req.contains(x)).collect();
                    match both.as_slice() {
                        [] => {
                            return Err(EncodeError::Prerequisite { field: f.field.name(), reason: format!("cannot be matched together with {}", pf.name()) })
                        }
                        [ETH_IPV4] => Some((f.field, &[ETH_IPV4])),
                        [ETH_IPV6] => Some((f.field, &[ETH_IPV6])),
                        [ETH_ARP] => Some((f.field, &[ETH_ARP])),
                        _ => Some((pf, prev)),
                    }
                }
            };
        }
        if let Some((field, allowed)) = need {
            match val(&m, EthType) {
                Some((t, false)) if allowed.contains(&t) => {}
                Some((t, _)) => {
                    return Err(EncodeError::Prerequisite {
                        field: field.name(),
                        reason: format!("needs dl_type {}, but the match has dl_type={t:#06x}", eth_list(allowed)),
                    })
                }
                None if allowed.len() == 1 => m = m.with(EthType, allowed.first().copied().unwrap_or_default() as u16),
                None => {
                    return Err(EncodeError::Prerequisite {
                        field: field.name(),
                        reason: format!("needs dl_type {} and nothing in the match says which", eth_list(allowed)),
                    })
                }
            }
        }
        // ND fields need the ICMPv6 type that carries them, which nothing else implies.
        let nd_type = |f: Field| match f {
            NdTarget | NdReserved | NdOptionsType => Some(&[ND_SOLICIT, ND_ADVERT][..]),
            NdSll => Some(&[ND_SOLICIT][..]),
            NdTll => Some(&[ND_ADVERT][..]),
            _ => None,
        };
        for f in &self.fields {
            let Some(types) = nd_type(f.field) else { continue };
            match val(&m, Icmpv6Type) {
                Some((t, false)) if types.iter().any(|x| u128::from(*x) == t) => {}
                other => {
                    let have = other.map_or("no icmpv6_type".to_string(), |(t, _)| format!("icmpv6_type={t}"));
                    let want: Vec<String> = types.iter().map(|t| t.to_string()).collect();
                    return Err(EncodeError::Prerequisite {
                        field: f.field.name(),
                        reason: format!("needs icmpv6_type {}, but the match has {have}", want.join(" or ")),
                    });
                }
            }
        }
        if m.get(VlanPcp).is_some() && m.get(VlanVid).is_none_or(|v| v.value & OFPVID_PRESENT as u128 == 0) {
            return Err(EncodeError::Prerequisite { field: VlanPcp.name(), reason: "needs vlan_vid with the VLAN-present bit (0x1000)".into() });
        }
        Ok(m)
    }

    /// Encodes as `ofp_match` (type OXM), padded to 8 bytes. The match must be normalized.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.put_u16(1); // OFPMT_OXM
        out.put_u16(0);
        for f in &self.fields {
            f.encode(out)?;
        }
        let len = super::wire::len16(out.len() - start, "match")?;
        out.patch_u16(start + 2, len);
        out.pad_to_8(start);
        Ok(())
    }

    /// Decodes an `ofp_match` including its padding.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Match, DecodeError> {
        let mtype = r.u16()?;
        let len = r.u16()? as usize;
        if mtype != 1 {
            return Err(DecodeError::Invalid { what: "match", reason: format!("type {mtype} is not OXM (1)") });
        }
        if len < 4 {
            return Err(DecodeError::BadLength { what: "match", len, reason: "less than its 4-byte header" });
        }
        let mut body = r.sub(len - 4, "match")?;
        r.skip((8 - len % 8) % 8)?;
        let mut m = Match::new();
        while !body.is_empty() {
            let f = MatchField::decode(&mut body)?;
            if m.get(f.field).is_some() {
                return Err(DecodeError::Invalid { what: "match", reason: format!("field {} repeated", f.field.name()) });
            }
            m = m.set(f);
        }
        Ok(m)
    }
}

fn eth_list(v: &[u128]) -> String {
    v.iter().map(|t| format!("{t:#06x}")).collect::<Vec<_>>().join(" or ")
}

/// A MAC address as the right-aligned integer the codec stores.
pub fn mac_u128(mac: [u8; 6]) -> u128 {
    mac.iter().fold(0u128, |a, &b| (a << 8) | b as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nd_fields_imply_icmpv6_and_need_their_message_type() {
        let target = u128::from("fd00::2".parse::<Ipv6Addr>().unwrap());
        let ns = Match::new().with(Field::Icmpv6Type, ND_SOLICIT).with(Field::NdTarget, target).normalized().unwrap();
        assert_eq!(ns.get(Field::EthType).map(|f| f.value), Some(0x86dd));
        assert_eq!(ns.get(Field::IpProto).map(|f| f.value), Some(58));
        // A target without the message type is ambiguous; a TLL needs an advertisement.
        let err = Match::new().with(Field::NdTarget, target).normalized().unwrap_err();
        assert!(err.to_string().contains("nd_target"), "{err}");
        let err = Match::new().with(Field::Icmpv6Type, ND_SOLICIT).with(Field::NdTll, 1u8).normalized().unwrap_err();
        assert!(err.to_string().contains("icmpv6_type 136"), "{err}");
        // IPv4 ICMP and ICMPv6 cannot meet in one match.
        assert!(Match::new().with(Field::Icmpv4Type, 8u8).with(Field::Icmpv6Type, 128u8).normalized().is_err());
    }

    #[test]
    fn ericsson_nd_fields_round_trip() {
        let m = Match::new().with(Field::Icmpv6Type, ND_ADVERT).with(Field::NdReserved, 0x6000_0000u32).with(Field::NdOptionsType, ND_OPT_TARGET_LL);
        let m = m.normalized().unwrap();
        let mut buf = Vec::new();
        m.encode(&mut buf).unwrap();
        let back = Match::decode(&mut Reader::new(&buf, "test")).unwrap();
        assert_eq!(back, m);
        assert_eq!(Field::from_nxm_header(Field::NdTll.nxm_header()), Some(Field::NdTll));
        assert_eq!(Field::from_nxm_header((1 << 16) | (25 << 9) | 6), Some(Field::NdTll), "OVS's legacy NXM_NX_ND_TLL");
    }
}
