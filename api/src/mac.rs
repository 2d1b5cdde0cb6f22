//! MAC addresses: parsed once at the edge, carried as bytes, shown as `aa:bb:cc:dd:ee:ff`.

use std::fmt;
use std::str::FromStr;

use crate::problem::FieldError;

/// A unicast MAC address (never multicast, never all zeros): what an endpoint may wear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac([u8; 6]);

impl Mac {
    /// The address's bytes.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// `0a:58` and an IPv4 address: the MAC an endpoint gets when it asks for none, and the
    /// gateway's. Unique in a network because the address is; locally administered.
    pub const fn from_ipv4(ip: std::net::Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([0x0a, 0x58, o[0], o[1], o[2], o[3]])
    }

    /// The IPv6 link-local address Linux gives an interface wearing this MAC (modified EUI-64,
    /// `addr_gen_mode` 0, its default): what the switch answers Neighbor Solicitations for and
    /// lets the endpoint send from.
    pub const fn link_local(self) -> std::net::Ipv6Addr {
        let m = self.0;
        std::net::Ipv6Addr::new(
            0xfe80,
            0,
            0,
            0,
            u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
            u16::from_be_bytes([m[2], 0xff]),
            u16::from_be_bytes([0xfe, m[3]]),
            u16::from_be_bytes([m[4], m[5]]),
        )
    }

    /// Parses a unicast MAC, naming `field` in the error.
    pub fn parse(field: &str, s: &str) -> Result<Mac, FieldError> {
        let bad = || FieldError::new(field, format!("{s:?} is not a MAC address like 02:00:00:00:00:01"));
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in m.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Mac::try_from(m).map_err(|reason| FieldError::new(field, reason))
    }
}

/// Formats any six bytes as a MAC, multicast or not (a device's address, a peer's).
pub fn format_mac(m: [u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

impl TryFrom<[u8; 6]> for Mac {
    type Error = String;

    /// Refuses what an endpoint cannot wear: multicast and all zeros.
    fn try_from(m: [u8; 6]) -> Result<Mac, String> {
        if m[0] & 1 == 1 {
            return Err(format!("{} is a multicast address", Mac(m)));
        }
        if m == [0; 6] {
            return Err("00:00:00:00:00:00 is not a usable address".into());
        }
        Ok(Mac(m))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_mac(self.0))
    }
}

impl FromStr for Mac {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Mac, FieldError> {
        Mac::parse("mac", s)
    }
}

crate::serde_as_str!(Mac);

impl utoipa::PartialSchema for Mac {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"))
            .description(Some("A unicast MAC address"))
            .into()
    }
}

impl utoipa::ToSchema for Mac {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unicast_and_refuses_the_rest_naming_the_field() {
        let m = Mac::parse("mac", "02:00:00:AA:bb:0c").unwrap();
        assert_eq!(m.to_string(), "02:00:00:aa:bb:0c");
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:00:00:aa:bb:0c\"");
        assert_eq!(serde_json::from_str::<Mac>("\"02:00:00:aa:bb:0c\"").unwrap(), m);
        for bad in ["02:00:00:00:00", "02:00:00:00:00:00:00", "02:00:00:00:00:0g", "2:00:00:00:00:01", ""] {
            let e = Mac::parse("spec.mac", bad).unwrap_err();
            assert_eq!(e.field, "spec.mac", "{bad}");
        }
        assert!(Mac::parse("mac", "01:00:5e:00:00:01").unwrap_err().to_string().contains("multicast"));
        assert!(Mac::parse("mac", "00:00:00:00:00:00").is_err());
        assert_eq!(Mac::from_ipv4("10.1.2.3".parse().unwrap()).to_string(), "0a:58:0a:01:02:03");
    }

    #[test]
    fn the_link_local_address_is_linux_s_eui64() {
        // What `ip -6 addr` shows for an interface wearing 0a:58:0a:3d:00:02.
        let m = Mac::parse("mac", "0a:58:0a:3d:00:02").unwrap();
        assert_eq!(m.link_local().to_string(), "fe80::858:aff:fe3d:2");
    }
}
