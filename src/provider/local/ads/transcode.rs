//! Envoy resources from the JSON meshfed generates (proto3 JSON, as Envoy's own config files take
//! it) to the protobuf bytes gRPC xDS carries, through Envoy's API descriptors: the JSON generator
//! stays the one source of configuration, and a field Envoy's API does not have is an error here,
//! as it is in a config file.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};
use serde_json::Value;

/// Why a resource could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The descriptor set shipped with xds-api did not decode.
    #[error("Envoy's API descriptors did not load: {0}")]
    Descriptors(String),
    /// The resource has no `@type`, or one Envoy's API does not have.
    #[error("resource {name:?} has no known @type ({type_url:?})")]
    UnknownType {
        /// The resource's name.
        name: String,
        /// Its `@type`, if any.
        type_url: Option<String>,
    },
    /// The JSON does not fit the message.
    #[error("resource {name:?} of {type_url} does not fit Envoy's API: {source}")]
    Mismatch {
        /// The resource's name.
        name: String,
        /// Its type.
        type_url: String,
        /// What does not fit.
        #[source]
        source: serde_json::Error,
    },
}

/// Envoy's API descriptors, decoded once: the set xds-api ships (the core xDS API and a few
/// extensions) and the extension messages meshfed uses that it lacks ([`missing_extensions`]).
fn descriptors() -> Result<&'static DescriptorPool, TranscodeError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = DescriptorPool::decode(xds_api::FILE_DESCRIPTOR_SET).map_err(|error| error.to_string())?;
        pool.add_file_descriptor_protos(missing_extensions())
            .map_err(|error| error.to_string())?;
        Ok(pool)
    })
    .as_ref()
    .map_err(|error| TranscodeError::Descriptors(error.clone()))
}

/// The messages meshfed's configuration uses that xds-api's descriptor set does not have, with
/// only the fields meshfed sets, numbered as envoyproxy/data-plane-api declares them:
/// - `envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto`: `TcpProxy` `stat_prefix` 1,
///   `cluster` 2, `proxy_protocol_tlvs` 19 (`config.core.v3.TlvEntry`);
/// - `envoy/config/core/v3/proxy_protocol.proto`: `TlvEntry` `type` 1 (uint32), `value` 2 (bytes),
///   `format_string` 3 (`SubstitutionFormatString`), newer than xds-api's copy;
/// - `envoy/extensions/transport_sockets/proxy_protocol/v3/upstream_proxy_protocol.proto`:
///   `ProxyProtocolUpstreamTransport` `config` 1, `transport_socket` 2;
/// - `envoy/extensions/upstreams/http/v3/http_protocol_options.proto`: `HttpProtocolOptions`
///   `common_http_protocol_options` 1, `explicit_http_config` 3 (`ExplicitHttpConfig`:
///   `http_protocol_options` 1, `http2_protocol_options` 2);
/// - `envoy/extensions/transport_sockets/tls/v3/tls.proto` (xds-api has its `common.proto` and
///   `secret.proto` only): `UpstreamTlsContext` `common_tls_context` 1, `sni` 2;
///   `DownstreamTlsContext` `common_tls_context` 1, `require_client_certificate` 2 (BoolValue);
///   `CommonTlsContext` `validation_context` 3, `alpn_protocols` 4,
///   `tls_certificate_sds_secret_configs` 6, `combined_validation_context` 8
///   (`CombinedCertificateValidationContext`: `default_validation_context` 1,
///   `validation_context_sds_secret_config` 2);
/// - `TlsInspector` (`envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto`) and
///   `RawBuffer` (`envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto`), used
///   without fields.
///
/// A field number wrong here would give Envoy another field: `tests/local/envoy_config_validates.rs`
/// has a real Envoy take every generated resource through this path and compares its
/// `/config_dump` with the JSON.
fn missing_extensions() -> Vec<FileDescriptorProto> {
    use prost_types::field_descriptor_proto::{Label, Type};
    let field = |name: &str, number: i32, kind: Type, message: Option<&str>, repeated: bool| FieldDescriptorProto {
        name: Some(name.to_owned()),
        number: Some(number),
        label: Some(if repeated { Label::Repeated } else { Label::Optional } as i32),
        r#type: Some(kind as i32),
        type_name: message.map(|message| format!(".{message}")),
        json_name: Some(lower_camel(name)),
        ..FieldDescriptorProto::default()
    };
    let message = |name: &str, fields: Vec<FieldDescriptorProto>, nested: Vec<DescriptorProto>| DescriptorProto {
        name: Some(name.to_owned()),
        field: fields,
        nested_type: nested,
        ..DescriptorProto::default()
    };
    let file = |name: &str, package: &str, dependency: &[&str], messages: Vec<DescriptorProto>| FileDescriptorProto {
        name: Some(format!("meshfed/{name}")),
        package: Some(package.to_owned()),
        dependency: dependency.iter().map(|file| file.to_string()).collect(),
        message_type: messages,
        syntax: Some("proto3".to_owned()),
        ..FileDescriptorProto::default()
    };
    let core = "envoy.config.core.v3";
    let tls = "envoy.extensions.transport_sockets.tls.v3";
    let common_tls_context = || {
        field(
            "common_tls_context",
            1,
            Type::Message,
            Some("envoy.extensions.transport_sockets.tls.v3.CommonTlsContext"),
            false,
        )
    };
    vec![
        file(
            "envoy/extensions/transport_sockets/tls/v3/tls.proto",
            tls,
            &[
                "envoy/extensions/transport_sockets/tls/v3/common.proto",
                "envoy/extensions/transport_sockets/tls/v3/secret.proto",
                "google/protobuf/wrappers.proto",
            ],
            vec![
                message(
                    "UpstreamTlsContext",
                    vec![common_tls_context(), field("sni", 2, Type::String, None, false)],
                    vec![],
                ),
                message(
                    "DownstreamTlsContext",
                    vec![
                        common_tls_context(),
                        field(
                            "require_client_certificate",
                            2,
                            Type::Message,
                            Some("google.protobuf.BoolValue"),
                            false,
                        ),
                    ],
                    vec![],
                ),
                message(
                    "CommonTlsContext",
                    vec![
                        field(
                            "validation_context",
                            3,
                            Type::Message,
                            Some("envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext"),
                            false,
                        ),
                        field("alpn_protocols", 4, Type::String, None, true),
                        field(
                            "tls_certificate_sds_secret_configs",
                            6,
                            Type::Message,
                            Some("envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig"),
                            true,
                        ),
                        field(
                            "combined_validation_context",
                            8,
                            Type::Message,
                            Some(
                                "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext",
                            ),
                            false,
                        ),
                    ],
                    vec![message(
                        "CombinedCertificateValidationContext",
                        vec![
                            field(
                                "default_validation_context",
                                1,
                                Type::Message,
                                Some("envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext"),
                                false,
                            ),
                            field(
                                "validation_context_sds_secret_config",
                                2,
                                Type::Message,
                                Some("envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig"),
                                false,
                            ),
                        ],
                        vec![],
                    )],
                ),
            ],
        ),
        file(
            "envoy/config/core/v3/tlv_entry.proto",
            core,
            &["envoy/config/core/v3/substitution_format_string.proto"],
            vec![message(
                "TlvEntry",
                vec![
                    field("type", 1, Type::Uint32, None, false),
                    field("value", 2, Type::Bytes, None, false),
                    field(
                        "format_string",
                        3,
                        Type::Message,
                        Some("envoy.config.core.v3.SubstitutionFormatString"),
                        false,
                    ),
                ],
                vec![],
            )],
        ),
        file(
            "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
            "envoy.extensions.filters.network.tcp_proxy.v3",
            &["meshfed/envoy/config/core/v3/tlv_entry.proto"],
            vec![message(
                "TcpProxy",
                vec![
                    field("stat_prefix", 1, Type::String, None, false),
                    field("cluster", 2, Type::String, None, false),
                    field(
                        "proxy_protocol_tlvs",
                        19,
                        Type::Message,
                        Some("envoy.config.core.v3.TlvEntry"),
                        true,
                    ),
                ],
                vec![],
            )],
        ),
        file(
            "envoy/extensions/transport_sockets/proxy_protocol/v3/upstream_proxy_protocol.proto",
            "envoy.extensions.transport_sockets.proxy_protocol.v3",
            &[
                "envoy/config/core/v3/proxy_protocol.proto",
                "envoy/config/core/v3/base.proto",
            ],
            vec![message(
                "ProxyProtocolUpstreamTransport",
                vec![
                    field(
                        "config",
                        1,
                        Type::Message,
                        Some("envoy.config.core.v3.ProxyProtocolConfig"),
                        false,
                    ),
                    field(
                        "transport_socket",
                        2,
                        Type::Message,
                        Some("envoy.config.core.v3.TransportSocket"),
                        false,
                    ),
                ],
                vec![],
            )],
        ),
        file(
            "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
            "envoy.extensions.upstreams.http.v3",
            &["envoy/config/core/v3/protocol.proto"],
            vec![message(
                "HttpProtocolOptions",
                vec![
                    field(
                        "common_http_protocol_options",
                        1,
                        Type::Message,
                        Some("envoy.config.core.v3.HttpProtocolOptions"),
                        false,
                    ),
                    field(
                        "explicit_http_config",
                        3,
                        Type::Message,
                        Some("envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig"),
                        false,
                    ),
                ],
                vec![message(
                    "ExplicitHttpConfig",
                    vec![
                        field(
                            "http_protocol_options",
                            1,
                            Type::Message,
                            Some("envoy.config.core.v3.Http1ProtocolOptions"),
                            false,
                        ),
                        field(
                            "http2_protocol_options",
                            2,
                            Type::Message,
                            Some("envoy.config.core.v3.Http2ProtocolOptions"),
                            false,
                        ),
                    ],
                    vec![],
                )],
            )],
        ),
        file(
            "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
            "envoy.extensions.filters.listener.tls_inspector.v3",
            &[],
            vec![message("TlsInspector", vec![], vec![])],
        ),
        file(
            "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
            "envoy.extensions.transport_sockets.raw_buffer.v3",
            &[],
            vec![message("RawBuffer", vec![], vec![])],
        ),
    ]
}

/// protoc's JSON name of a field: `stat_prefix` -> `statPrefix`.
fn lower_camel(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for character in name.chars() {
        if character == '_' {
            upper = true;
        } else if upper {
            out.extend(character.to_uppercase());
            upper = false;
        } else {
            out.push(character);
        }
    }
    out
}

/// The name of `resource` and its protobuf encoding, from its JSON with an `@type` (a resource
/// of a DiscoveryResponse as [`crate::provider::local::envoy_config`] writes it).
pub fn encode_resource(resource: &Value) -> Result<(String, Vec<u8>), TranscodeError> {
    let name = resource["name"].as_str().unwrap_or_default().to_owned();
    let type_url = resource["@type"].as_str();
    let message = type_url
        .and_then(|type_url| type_url.rsplit_once('/'))
        .map(|(_, message)| message)
        .and_then(|message| descriptors().ok()?.get_message_by_name(message));
    let (Some(message), Some(type_url)) = (message, type_url) else {
        descriptors()?;
        return Err(TranscodeError::UnknownType {
            name,
            type_url: type_url.map(str::to_owned),
        });
    };
    let mut fields = resource.clone();
    if let Some(object) = fields.as_object_mut() {
        object.remove("@type");
    }
    let decoded = DynamicMessage::deserialize(message, fields).map_err(|source| TranscodeError::Mismatch {
        name: name.clone(),
        type_url: type_url.to_owned(),
        source,
    })?;
    Ok((name, decoded.encode_to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `Cluster.name` is field 1 and `connect_timeout` (a Duration, `"10s"` in JSON) field 4 in
    /// `envoy/config/cluster/v3/cluster.proto`; a Duration's `seconds` is its field 1.
    #[test]
    fn a_cluster_is_encoded_with_envoys_field_numbers() {
        let (name, bytes) = encode_resource(&json!({
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "c",
            "connect_timeout": "10s",
        }))
        .unwrap();
        assert_eq!(name, "c");
        assert_eq!(bytes, vec![0x0a, 1, b'c', 0x22, 2, 0x08, 10]);
    }

    #[test]
    fn a_field_envoys_api_does_not_have_is_an_error_naming_the_resource() {
        let error = encode_resource(&json!({
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "c",
            "bogus_field": 1,
        }))
        .unwrap_err()
        .to_string();
        assert!(error.contains("resource \"c\""), "{error}");
        assert!(error.contains("bogus_field"), "{error}");
    }

    #[test]
    fn nested_any_fields_are_encoded_through_their_own_type() {
        let (_, bytes) = encode_resource(&json!({
            "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
            "name": "l",
            "filter_chains": [{ "filters": [{
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "s",
                    "cluster": "c",
                },
            }]}],
        }))
        .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_type_is_an_error() {
        let error = encode_resource(&json!({ "@type": "type.googleapis.com/nope.Nope", "name": "x" })).unwrap_err();
        assert!(matches!(error, TranscodeError::UnknownType { .. }), "{error}");
    }
}
