//! PROXY protocol version 2 headers, as the inbound sidecar puts them in front of each TCP
//! connection it hands to the echo workload: who the downstream peer was and which identity it
//! proved.
//!
//! Layout (haproxy's `proxy-protocol.txt` §2.2): 12-byte signature, version/command byte,
//! family/transport byte, 16-bit big-endian length of what follows, the addresses for the family,
//! then TLVs (type byte, 16-bit big-endian length, value).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// TLV type carrying the caller's SPIFFE URI (UTF-8). In the custom range 0xE0–0xEF; what Envoy
/// can send here is still being verified, so every use goes through [`peer_identity_from_tlvs`].
pub const PEER_IDENTITY_TLV: u8 = 0xE0;

/// Bytes before the addresses: signature, version/command, family/transport, length.
const FIXED_LEN: usize = 16;

/// Why a PROXY v2 header is invalid. The connection cannot be trusted after one.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProxyProtocolError {
    /// The version nibble is not 2.
    #[error("PROXY protocol header has version {0}, expected 2")]
    Version(u8),
    /// The command nibble is neither LOCAL (0) nor PROXY (1).
    #[error("PROXY protocol header has unknown command {0}")]
    Command(u8),
    /// The declared length is shorter than the addresses of the declared family.
    #[error("PROXY protocol header length {length} is too short for address family {family}")]
    AddressesTruncated {
        /// The family nibble.
        family: u8,
        /// The declared length.
        length: usize,
    },
    /// A TLV runs past the end of the header.
    #[error("PROXY protocol TLV of type {0:#04x} runs past the header")]
    TlvTruncated(u8),
    /// The identity TLV is not UTF-8.
    #[error("PROXY protocol identity TLV is not UTF-8")]
    IdentityNotUtf8,
}

/// What a PROXY v2 header said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The downstream peer (source) address; `None` for LOCAL, UNSPEC and UNIX headers.
    pub source: Option<SocketAddr>,
    /// The address the peer connected to; `None` like `source`.
    pub destination: Option<SocketAddr>,
    /// The caller's SPIFFE URI from the [`PEER_IDENTITY_TLV`], if present.
    pub peer_identity: Option<String>,
}

/// What the first bytes of a connection are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detected {
    /// Too few bytes to tell (a prefix of the signature, or a header not yet complete).
    Incomplete,
    /// No PROXY v2 header: the stream's data starts at byte 0.
    Absent,
    /// A header of `len` bytes; the stream's data starts after it.
    Present {
        /// The parsed header.
        header: ProxyHeader,
        /// Its length in bytes.
        len: usize,
    },
}

/// Looks for a PROXY v2 header at the start of `buf`.
pub fn detect(buf: &[u8]) -> Result<Detected, ProxyProtocolError> {
    let compared = buf.len().min(SIGNATURE.len());
    if buf[..compared] != SIGNATURE[..compared] {
        return Ok(Detected::Absent);
    }
    if buf.len() < FIXED_LEN {
        return Ok(Detected::Incomplete);
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    let family = buf[13] >> 4;
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if version != 2 {
        return Err(ProxyProtocolError::Version(version));
    }
    if command > 1 {
        return Err(ProxyProtocolError::Command(command));
    }
    let total = FIXED_LEN + length;
    if buf.len() < total {
        return Ok(Detected::Incomplete);
    }
    let body = &buf[FIXED_LEN..total];
    let address_len = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body.len() < address_len {
        return Err(ProxyProtocolError::AddressesTruncated { family, length });
    }
    let (addresses, tlvs) = body.split_at(address_len);
    let (source, destination) = match (command, family) {
        (1, 1) => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    addresses[at],
                    addresses[at + 1],
                    addresses[at + 2],
                    addresses[at + 3],
                ))
            };
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
            )
        }
        (1, 2) => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&addresses[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
            )
        }
        // LOCAL (health checks by the proxy itself), UNSPEC and UNIX carry no usable peer.
        _ => (None, None),
    };
    let peer_identity = peer_identity_from_tlvs(tlvs)?;
    Ok(Detected::Present {
        header: ProxyHeader {
            source,
            destination,
            peer_identity,
        },
        len: total,
    })
}

/// The caller's SPIFFE URI among the TLVs: the value of the first [`PEER_IDENTITY_TLV`].
/// Every TLV is bounds-checked, including the ones after it.
pub fn peer_identity_from_tlvs(mut tlvs: &[u8]) -> Result<Option<String>, ProxyProtocolError> {
    let mut identity = None;
    while !tlvs.is_empty() {
        let kind = tlvs[0];
        if tlvs.len() < 3 {
            return Err(ProxyProtocolError::TlvTruncated(kind));
        }
        let len = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        let value = tlvs.get(3..3 + len).ok_or(ProxyProtocolError::TlvTruncated(kind))?;
        if kind == PEER_IDENTITY_TLV && identity.is_none() {
            let uri = std::str::from_utf8(value).map_err(|_| ProxyProtocolError::IdentityNotUtf8)?;
            identity = Some(uri.to_string());
        }
        tlvs = &tlvs[3 + len..];
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut bytes = SIGNATURE.to_vec();
        bytes.push(0x20 | command);
        bytes.push(family << 4 | 1);
        bytes.extend_from_slice(&((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        bytes.extend_from_slice(addresses);
        bytes.extend_from_slice(tlvs);
        bytes
    }

    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&(value.len() as u16).to_be_bytes());
        bytes.extend_from_slice(value);
        bytes
    }

    const IPV4_ADDRESSES: [u8; 12] = [10, 20, 0, 9, 10, 20, 0, 5, 0xa0, 0xf2, 0x23, 0x28];

    #[test]
    fn ipv4_header_gives_source_destination_and_identity() {
        let mut tlvs = tlv(0x04, b"");
        tlvs.extend(tlv(PEER_IDENTITY_TLV, b"spiffe://cluster.local/ns/ns1/sa/foo"));
        let mut bytes = header(1, 1, &IPV4_ADDRESSES, &tlvs);
        let len = bytes.len();
        bytes.extend_from_slice(b"hello\n");
        let Detected::Present {
            header,
            len: parsed_len,
        } = detect(&bytes).unwrap()
        else {
            panic!("no header")
        };
        assert_eq!(parsed_len, len);
        assert_eq!(header.source, Some("10.20.0.9:41202".parse().unwrap()));
        assert_eq!(header.destination, Some("10.20.0.5:9000".parse().unwrap()));
        assert_eq!(
            header.peer_identity.as_deref(),
            Some("spiffe://cluster.local/ns/ns1/sa/foo")
        );
    }

    #[test]
    fn ipv6_header_gives_source() {
        let mut addresses = vec![0u8; 36];
        addresses[15] = 1;
        addresses[31] = 2;
        addresses[32..34].copy_from_slice(&4000u16.to_be_bytes());
        let bytes = header(1, 2, &addresses, &[]);
        let Detected::Present { header, .. } = detect(&bytes).unwrap() else {
            panic!("no header")
        };
        assert_eq!(header.source, Some("[::1]:4000".parse().unwrap()));
        assert_eq!(header.peer_identity, None);
    }

    #[test]
    fn local_command_has_no_peer_but_keeps_tlvs() {
        let bytes = header(0, 1, &IPV4_ADDRESSES, &tlv(PEER_IDENTITY_TLV, b"spiffe://x"));
        let Detected::Present { header, .. } = detect(&bytes).unwrap() else {
            panic!("no header")
        };
        assert_eq!(header.source, None);
        assert_eq!(header.peer_identity.as_deref(), Some("spiffe://x"));
    }

    #[test]
    fn plain_data_is_absent_and_prefixes_are_incomplete() {
        assert_eq!(detect(b"hello\n").unwrap(), Detected::Absent);
        assert_eq!(detect(b"\r\n\r\nX").unwrap(), Detected::Absent);
        assert_eq!(detect(b"").unwrap(), Detected::Incomplete);
        assert_eq!(detect(&SIGNATURE[..7]).unwrap(), Detected::Incomplete);
        let bytes = header(1, 1, &IPV4_ADDRESSES, &[]);
        for cut in 0..bytes.len() {
            assert_eq!(detect(&bytes[..cut]).unwrap(), Detected::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn invalid_headers_are_errors() {
        let mut wrong_version = header(1, 1, &IPV4_ADDRESSES, &[]);
        wrong_version[12] = 0x11;
        assert_eq!(detect(&wrong_version), Err(ProxyProtocolError::Version(1)));
        assert_eq!(
            detect(&header(1, 1, &IPV4_ADDRESSES[..8], &[])),
            Err(ProxyProtocolError::AddressesTruncated { family: 1, length: 8 })
        );
        let truncated_tlv = [PEER_IDENTITY_TLV, 0, 9, b'a'];
        assert_eq!(
            detect(&header(1, 1, &IPV4_ADDRESSES, &truncated_tlv)),
            Err(ProxyProtocolError::TlvTruncated(PEER_IDENTITY_TLV))
        );
        assert_eq!(
            peer_identity_from_tlvs(&tlv(PEER_IDENTITY_TLV, &[0xff, 0xfe])),
            Err(ProxyProtocolError::IdentityNotUtf8)
        );
    }
}
