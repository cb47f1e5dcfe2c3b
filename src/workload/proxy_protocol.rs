//! PROXY protocol version 2 headers, as the inbound sidecar puts them in front of each TCP
//! connection it hands to the echo workload: who the downstream peer was and which identity it
//! proved.
//!
//! Parsing (signature, version/command, family/transport, length, addresses, TLVs) is the `ppp`
//! crate's; this module only decides what a connection's first bytes mean for the echo workload
//! (no header, not yet complete, a header, or an invalid one) and reads the identity TLV.

use std::net::SocketAddr;

use ppp::v2::{Addresses, Command, Header, ParseError, TypeLengthValues};
use thiserror::Error;

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// TLV type carrying the caller's SPIFFE URI (UTF-8). In the custom range 0xE0–0xEF; what Envoy
/// can send here is still being verified, so every use goes through [`peer_identity_from_tlvs`].
pub const PEER_IDENTITY_TLV: u8 = 0xE0;

/// Index of the family/transport byte (after the signature and the version/command byte).
const FAMILY_TRANSPORT: usize = 13;

/// Why a PROXY v2 header is invalid. The connection cannot be trusted after one.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProxyProtocolError {
    /// The version nibble is not 2.
    #[error("PROXY protocol header has version {0}, expected 2")]
    Version(u8),
    /// The command nibble is neither LOCAL (0) nor PROXY (1).
    #[error("PROXY protocol header has unknown command {0}")]
    Command(u8),
    /// The family nibble is none of UNSPEC (0), INET (1), INET6 (2), UNIX (3).
    #[error("PROXY protocol header has unknown address family {0}, expected 0 to 3")]
    AddressFamily(u8),
    /// The transport nibble is none of UNSPEC (0), STREAM (1), DGRAM (2).
    #[error("PROXY protocol header has unknown transport {0}, expected 0 to 2")]
    Transport(u8),
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
    /// The TLVs end in fewer than the 3 bytes a TLV's type and length need.
    #[error("PROXY protocol TLVs end in a fragment shorter than a TLV's type and length")]
    TlvFragment,
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
    /// No PROXY v2 header: the stream's data starts at byte 0. A version 1 (text) header is not
    /// one either: the sidecar only sends version 2.
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
    let parsed = match Header::try_from(buf) {
        Ok(parsed) => parsed,
        Err(ParseError::Prefix) => return Ok(Detected::Absent),
        Err(ParseError::Incomplete(_) | ParseError::Partial(..)) => return Ok(Detected::Incomplete),
        // ppp reports the version as the masked high nibble (0x10 for version 1).
        Err(ParseError::Version(masked)) => return Err(ProxyProtocolError::Version(masked >> 4)),
        Err(ParseError::Command(command)) => return Err(ProxyProtocolError::Command(command)),
        Err(ParseError::AddressFamily(masked)) => {
            return Err(ProxyProtocolError::AddressFamily(masked >> 4));
        }
        Err(ParseError::Protocol(transport)) => {
            return Err(ProxyProtocolError::Transport(transport));
        }
        Err(ParseError::InvalidAddresses(length, _)) => {
            return Err(ProxyProtocolError::AddressesTruncated {
                family: buf[FAMILY_TRANSPORT] >> 4,
                length,
            });
        }
        // Only the TLV iterator yields these; kept exhaustive so a new ppp error is not ignored.
        Err(error @ (ParseError::InvalidTLV(..) | ParseError::Leftovers(_))) => {
            return Err(tlv_error(error));
        }
    };
    let (source, destination) = match (parsed.command, parsed.addresses) {
        (Command::Proxy, Addresses::IPv4(ip)) => (
            Some(SocketAddr::from((ip.source_address, ip.source_port))),
            Some(SocketAddr::from((ip.destination_address, ip.destination_port))),
        ),
        (Command::Proxy, Addresses::IPv6(ip)) => (
            Some(SocketAddr::from((ip.source_address, ip.source_port))),
            Some(SocketAddr::from((ip.destination_address, ip.destination_port))),
        ),
        // LOCAL (health checks by the proxy itself), UNSPEC and UNIX carry no usable peer.
        _ => (None, None),
    };
    let peer_identity = identity_among(parsed.tlvs())?;
    Ok(Detected::Present {
        header: ProxyHeader {
            source,
            destination,
            peer_identity,
        },
        len: parsed.len(),
    })
}

/// The caller's SPIFFE URI among the TLVs: the value of the first [`PEER_IDENTITY_TLV`].
/// Every TLV is bounds-checked, including the ones after it.
pub fn peer_identity_from_tlvs(tlvs: &[u8]) -> Result<Option<String>, ProxyProtocolError> {
    identity_among(TypeLengthValues::from(tlvs))
}

fn identity_among(tlvs: TypeLengthValues<'_>) -> Result<Option<String>, ProxyProtocolError> {
    let mut identity = None;
    for tlv in tlvs {
        let tlv = tlv.map_err(tlv_error)?;
        if tlv.kind == PEER_IDENTITY_TLV && identity.is_none() {
            let uri = std::str::from_utf8(&tlv.value).map_err(|_| ProxyProtocolError::IdentityNotUtf8)?;
            identity = Some(uri.to_string());
        }
    }
    Ok(identity)
}

/// The error for a TLV that does not fit: ppp names the type when the value overruns and
/// reports a fragment under 3 bytes as "leftovers".
fn tlv_error(error: ParseError) -> ProxyProtocolError {
    match error {
        ParseError::InvalidTLV(kind, _) => ProxyProtocolError::TlvTruncated(kind),
        _ => ProxyProtocolError::TlvFragment,
    }
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

    #[test]
    fn version_1_text_header_is_absent() {
        // The sidecar sends version 2 only; a text header is the stream's data, echoed as is.
        let text = b"PROXY TCP4 10.20.0.9 10.20.0.5 41202 9000\r\nhello\n";
        assert_eq!(detect(text).unwrap(), Detected::Absent);
    }

    #[test]
    fn unknown_family_or_transport_is_an_error() {
        // The hand-written parser read family 4 as "no addresses"; ppp rejects it, as the spec's
        // "other values are unspecified and must not be emitted" allows.
        let mut family_4 = header(1, 1, &IPV4_ADDRESSES, &[]);
        family_4[13] = 0x41;
        assert_eq!(detect(&family_4), Err(ProxyProtocolError::AddressFamily(4)));
        let mut transport_3 = header(1, 1, &IPV4_ADDRESSES, &[]);
        transport_3[13] = 0x13;
        assert_eq!(detect(&transport_3), Err(ProxyProtocolError::Transport(3)));
    }

    #[test]
    fn too_short_length_is_an_error_before_the_header_is_complete() {
        // ppp checks the declared length against the family as soon as the 16 fixed bytes are
        // there, so a lying header is refused without waiting for (and buffering) its body.
        let bytes = header(1, 1, &IPV4_ADDRESSES[..8], &[]);
        assert_eq!(
            detect(&bytes[..16]),
            Err(ProxyProtocolError::AddressesTruncated { family: 1, length: 8 })
        );
    }

    #[test]
    fn tlv_fragment_shorter_than_type_and_length_is_an_error() {
        let mut tlvs = tlv(PEER_IDENTITY_TLV, b"spiffe://x");
        tlvs.extend_from_slice(&[0x04, 0]);
        assert_eq!(
            detect(&header(1, 1, &IPV4_ADDRESSES, &tlvs)),
            Err(ProxyProtocolError::TlvFragment)
        );
        assert_eq!(peer_identity_from_tlvs(&[0x04]), Err(ProxyProtocolError::TlvFragment));
    }
}
