//! The frames around DNS: a query as the switch sends it up (Ethernet, IPv4, UDP to port 53),
//! and the answer's frame back to the container, from the gateway. Parsed from untrusted
//! bytes with every length checked.

use std::net::Ipv4Addr;

/// A UDP datagram to port 53, with what the answer's frame needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Udp4<'a> {
    /// Ethernet source (the container).
    pub src_mac: [u8; 6],
    /// Ethernet destination (the gateway's MAC).
    pub dst_mac: [u8; 6],
    /// IPv4 source (the container).
    pub src_ip: Ipv4Addr,
    /// IPv4 destination (the gateway).
    pub dst_ip: Ipv4Addr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// Reads an untagged Ethernet frame carrying an unfragmented IPv4 UDP datagram; `None` for
/// anything else (which the switch's flow never sends, but the bytes are not trusted).
pub fn parse(frame: &[u8]) -> Option<Udp4<'_>> {
    let mac = |i: usize| -> Option<[u8; 6]> { frame.get(i..i + 6)?.try_into().ok() };
    let (dst_mac, src_mac) = (mac(0)?, mac(6)?);
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if *ip.first()? >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    // More fragments, or a fragment's offset: not a whole datagram.
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x3fff != 0 || ip[9] != 17 || total < ihl + 8 || total > ip.len() {
        return None;
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = &ip[ihl..total];
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen < 8 || ulen > udp.len() {
        return None;
    }
    Some(Udp4 {
        src_mac,
        dst_mac,
        src_ip,
        dst_ip,
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[8..ulen],
    })
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The frame that answers `q` with `payload`: addresses and ports turned around, so it comes
/// from the gateway's address, MAC and port 53.
pub fn reply(q: &Udp4<'_>, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + total);
    f.extend(q.src_mac);
    f.extend(q.dst_mac);
    f.extend([0x08, 0x00]);
    let ip_start = f.len();
    // Version 4, 20-byte header; DF; TTL 64; UDP.
    f.extend([0x45, 0]);
    f.extend((total as u16).to_be_bytes());
    f.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend(q.dst_ip.octets());
    f.extend(q.src_ip.octets());
    let csum = fold(sum16(&f[ip_start..ip_start + 20], 0));
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
    let udp_start = f.len();
    f.extend(q.dst_port.to_be_bytes());
    f.extend(q.src_port.to_be_bytes());
    f.extend((udp_len as u16).to_be_bytes());
    f.extend([0, 0]);
    f.extend_from_slice(payload);
    // The UDP checksum over the pseudo-header; 0 goes out as 0xffff (0 means none).
    let mut acc = sum16(&q.dst_ip.octets(), 0);
    acc = sum16(&q.src_ip.octets(), acc);
    acc += 17 + udp_len as u32;
    let c = fold(sum16(&f[udp_start..], acc));
    let c = if c == 0 { 0xffff } else { c };
    f[udp_start + 6..udp_start + 8].copy_from_slice(&c.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_reads_back_turned_around_with_valid_checksums() {
        let q = Udp4 {
            src_mac: [2, 0, 0, 0, 0, 5],
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_ip: Ipv4Addr::new(10, 0, 0, 5),
            dst_ip: Ipv4Addr::new(10, 0, 0, 1),
            src_port: 40000,
            dst_port: 53,
            payload: b"query",
        };
        let f = reply(&q, b"an answer");
        let r = parse(&f).expect("a parsable frame");
        assert_eq!((r.src_ip, r.dst_ip, r.src_port, r.dst_port, r.payload), (q.dst_ip, q.src_ip, 53, 40000, &b"an answer"[..]));
        assert_eq!((r.src_mac, r.dst_mac), (q.dst_mac, q.src_mac));
        assert_eq!(fold(sum16(&f[14..34], 0)), 0, "the IPv4 header checksum verifies");
        let mut acc = sum16(&f[26..34], 0);
        acc += 17 + (f.len() - 34) as u32;
        assert_eq!(fold(sum16(&f[34..], acc)), 0, "the UDP checksum verifies");
    }

    #[test]
    fn refuses_other_frames() {
        assert_eq!(parse(&[0; 10]), None);
        let q = Udp4 { src_mac: [0; 6], dst_mac: [0; 6], src_ip: Ipv4Addr::LOCALHOST, dst_ip: Ipv4Addr::LOCALHOST, src_port: 1, dst_port: 53, payload: b"x" };
        let mut f = reply(&q, b"x");
        f[20] = 0x20; // more fragments
        assert_eq!(parse(&f), None);
        let mut g = reply(&q, b"x");
        g[16..18].copy_from_slice(&500u16.to_be_bytes()); // longer than the frame
        assert_eq!(parse(&g), None);
    }
}
