//! The protobuf and gRPC wire formats of the few xDS transport messages the ADS server reads and
//! writes itself: `DiscoveryRequest` (decoded), `DiscoveryResponse` and `google.protobuf.Any`
//! (encoded), and gRPC's length-prefixed message framing.
//!
//! Field numbers are those of `envoy/service/discovery/v3/discovery.proto` (envoyproxy/data-plane-api):
//! DiscoveryRequest `version_info` 1, `node` 2 (`config.core.v3.Node.id` 1), `resource_names` 3,
//! `type_url` 4, `response_nonce` 5, `error_detail` 6 (`google.rpc.Status`: `code` 1, `message` 2);
//! DiscoveryResponse `version_info` 1, `resources` 2, `type_url` 4, `nonce` 5; `Any` `type_url` 1,
//! `value` 2. The resources themselves are encoded by [`super::transcode`].

/// Type URL of clusters (CDS).
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of listeners (LDS).
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of secrets (SDS).
pub const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// What meshfed reads of one `DiscoveryRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryRequest {
    /// The version the request ACKs (or, with `error_detail`, the last one accepted).
    pub version_info: String,
    /// The node id (sent on the first request of a stream at least).
    pub node_id: Option<String>,
    /// The resources asked for; empty is a wildcard (all of the type).
    pub resource_names: Vec<String>,
    /// The resource type.
    pub type_url: String,
    /// The nonce of the response this request answers; empty on a first request.
    pub response_nonce: String,
    /// Set when the response with `response_nonce` was rejected: Envoy's reason.
    pub error_detail: Option<String>,
}

/// A `DiscoveryResponse` with already encoded resources (each the bytes of its message).
pub fn encode_discovery_response(version_info: &str, type_url: &str, nonce: &str, resources: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, version_info.as_bytes());
    for resource in resources {
        let mut any = Vec::new();
        put_bytes(&mut any, 1, type_url.as_bytes());
        put_bytes(&mut any, 2, resource);
        put_bytes(&mut out, 2, &any);
    }
    put_bytes(&mut out, 4, type_url.as_bytes());
    put_bytes(&mut out, 5, nonce.as_bytes());
    out
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The bytes end inside a field.
    #[error("the message ends inside a field")]
    Truncated,
    /// A wire type protobuf does not have (or a deprecated group).
    #[error("unsupported wire type {0}")]
    WireType(u64),
    /// A string field that is not UTF-8.
    #[error("field {0} is not UTF-8")]
    Utf8(u64),
}

/// Decodes a `DiscoveryRequest`, skipping the fields meshfed does not read.
pub fn decode_discovery_request(bytes: &[u8]) -> Result<DiscoveryRequest, WireError> {
    let mut request = DiscoveryRequest::default();
    for field in Fields::new(bytes) {
        let (number, value) = field?;
        match (number, value) {
            (1, Value::Bytes(text)) => request.version_info = utf8(number, text)?,
            (2, Value::Bytes(node)) => {
                for node_field in Fields::new(node) {
                    if let (1, Value::Bytes(id)) = node_field? {
                        request.node_id = Some(utf8(1, id)?);
                    }
                }
            }
            (3, Value::Bytes(name)) => request.resource_names.push(utf8(number, name)?),
            (4, Value::Bytes(text)) => request.type_url = utf8(number, text)?,
            (5, Value::Bytes(text)) => request.response_nonce = utf8(number, text)?,
            (6, Value::Bytes(status)) => {
                let mut message = String::new();
                for status_field in Fields::new(status) {
                    if let (2, Value::Bytes(text)) = status_field? {
                        message = utf8(2, text)?;
                    }
                }
                request.error_detail = Some(message);
            }
            _ => {}
        }
    }
    Ok(request)
}

/// gRPC's framing of one message: a zero "compressed" flag, the big-endian u32 length, the bytes.
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Takes every complete gRPC message off the front of `buffer` (bytes of a request body as they
/// arrive), leaving an incomplete one there. A compressed message is an error: meshfed never
/// offers compression, so Envoy never sends one.
pub fn take_grpc_messages(buffer: &mut Vec<u8>) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut messages = Vec::new();
    loop {
        if buffer.len() < 5 {
            return Ok(messages);
        }
        if buffer[0] != 0 {
            return Err("a compressed gRPC message, though no compression was negotiated");
        }
        let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
        if buffer.len() < 5 + length {
            return Ok(messages);
        }
        messages.push(buffer[5..5 + length].to_vec());
        buffer.drain(..5 + length);
    }
}

fn utf8(number: u64, bytes: &[u8]) -> Result<String, WireError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Utf8(number))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    if bytes.is_empty() {
        // proto3: an empty string is the default and is not written.
        return;
    }
    put_varint(out, number << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One field's value as the wire has it.
enum Value<'a> {
    Varint,
    Fixed,
    Bytes(&'a [u8]),
}

/// The fields of a message, in wire order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { rest: bytes }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.rest.split_first().ok_or(WireError::Truncated)?;
            self.rest = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Truncated)
    }

    fn skip(&mut self, count: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < count {
            return Err(WireError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = (|| {
            let key = self.varint()?;
            let value = match key & 7 {
                0 => self.varint().map(|_| Value::Varint)?,
                1 => self.skip(8).map(|_| Value::Fixed)?,
                2 => {
                    let length = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                    Value::Bytes(self.skip(length)?)
                }
                5 => self.skip(4).map(|_| Value::Fixed)?,
                other => return Err(WireError::WireType(other)),
            };
            Ok((key >> 3, value))
        })();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
        put_varint(out, number << 3 | 2);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// A NACK as Envoy sends it: the last accepted version, the rejected response's nonce and a
    /// `google.rpc.Status` whose `message` is the reason (grpc_mux_impl.cc puts the exception text
    /// there); an unknown field (7, resource_locators) and a varint (Status.code) are skipped.
    #[test]
    fn a_nack_is_decoded_with_its_nonce_and_reason() {
        let mut node = Vec::new();
        field(&mut node, 1, b"bar-0.cluster2");
        field(&mut node, 2, b"meshfed");
        let mut status = Vec::new();
        put_varint(&mut status, 1 << 3);
        put_varint(&mut status, 13);
        field(
            &mut status,
            2,
            b"Error adding/updating listener(s) 0.0.0.0_15443: duplicate",
        );
        let mut request = Vec::new();
        field(&mut request, 1, b"v1");
        field(&mut request, 2, &node);
        field(
            &mut request,
            4,
            b"type.googleapis.com/envoy.config.listener.v3.Listener",
        );
        field(&mut request, 5, b"3");
        field(&mut request, 6, &status);
        field(&mut request, 7, b"ignored");
        let decoded = decode_discovery_request(&request).unwrap();
        assert_eq!(decoded.node_id.as_deref(), Some("bar-0.cluster2"));
        assert_eq!(decoded.version_info, "v1");
        assert_eq!(decoded.response_nonce, "3");
        assert_eq!(
            decoded.type_url,
            "type.googleapis.com/envoy.config.listener.v3.Listener"
        );
        assert_eq!(
            decoded.error_detail.as_deref(),
            Some("Error adding/updating listener(s) 0.0.0.0_15443: duplicate")
        );
    }

    #[test]
    fn a_truncated_request_is_an_error_not_a_panic() {
        let mut request = Vec::new();
        field(&mut request, 4, b"type.googleapis.com/x");
        request.truncate(request.len() - 3);
        assert_eq!(decode_discovery_request(&request), Err(WireError::Truncated));
    }

    #[test]
    fn grpc_messages_are_taken_whole_and_a_partial_one_waits() {
        let mut buffer = grpc_frame(b"one");
        buffer.extend(grpc_frame(b"second"));
        let partial = grpc_frame(b"third");
        buffer.extend_from_slice(&partial[..6]);
        assert_eq!(
            take_grpc_messages(&mut buffer).unwrap(),
            vec![b"one".to_vec(), b"second".to_vec()]
        );
        buffer.extend_from_slice(&partial[6..]);
        assert_eq!(take_grpc_messages(&mut buffer).unwrap(), vec![b"third".to_vec()]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn a_response_wraps_each_resource_in_an_any_of_its_type() {
        let response = encode_discovery_response("v2", "t/x", "7", &[b"abc".to_vec()]);
        let fields: Vec<(u64, Vec<u8>)> = Fields::new(&response)
            .map(|field| match field.unwrap() {
                (number, Value::Bytes(bytes)) => (number, bytes.to_vec()),
                (number, _) => panic!("field {number} is not length-delimited"),
            })
            .collect();
        let mut any = Vec::new();
        field(&mut any, 1, b"t/x");
        field(&mut any, 2, b"abc");
        assert_eq!(
            fields,
            vec![(1, b"v2".to_vec()), (2, any), (4, b"t/x".to_vec()), (5, b"7".to_vec())]
        );
    }
}
