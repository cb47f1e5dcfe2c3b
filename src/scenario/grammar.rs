//! The grammars of the places a scenario's strings end up: Kubernetes object names and label
//! values, port names, SPIFFE trust domains and path segments, and free text. Each check returns
//! what is allowed when the text does not fit; the caller adds where and which field.

use crate::printable;

/// A grammar a string must follow, named after where it ends up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grammar {
    /// RFC 1123 label (Kubernetes namespaces, meshfed cluster names).
    Dns1123Label,
    /// RFC 1035 label (Kubernetes Service names: must start with a letter).
    Dns1035Label,
    /// RFC 1123 subdomain that is also a SPIFFE path segment (service accounts).
    ServiceAccount,
    /// Kubernetes label value, not empty (an empty one would leave a locality or name blank).
    LabelValue,
    /// Kubernetes `IANA_SVC_NAME` (port names).
    PortName,
    /// SPIFFE trust domain.
    TrustDomain,
    /// One line of text (descriptions).
    Text,
    /// A kubeconfig context name: printable text.
    ContextName,
}

/// Longest description accepted.
pub const MAX_TEXT_CHARS: usize = 1000;
/// Longest kubeconfig context name accepted.
pub const MAX_CONTEXT_CHARS: usize = 253;

impl Grammar {
    /// What the grammar allows, for messages.
    pub fn allowed(self) -> &'static str {
        match self {
            Grammar::Dns1123Label => {
                "a DNS label: 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
            }
            Grammar::Dns1035Label => {
                "a Kubernetes Service name (DNS-1035 label): 1-63 lowercase letters, digits and '-', \
                 starting with a letter and ending with a letter or digit"
            }
            Grammar::ServiceAccount => {
                "a service account name (DNS subdomain and SPIFFE path segment): 1-253 lowercase letters, \
                 digits, '-' and '.', each dot-separated part starting and ending with a letter or digit"
            }
            Grammar::LabelValue => {
                "a non-empty Kubernetes label value: 1-63 letters, digits, '-', '_' and '.', \
                 starting and ending with a letter or digit"
            }
            Grammar::PortName => {
                "a port name (IANA service name): 1-15 lowercase letters, digits and '-', with at least one letter, \
                 not starting or ending with '-' and no '--'"
            }
            Grammar::TrustDomain => {
                "a SPIFFE trust domain: 1-255 lowercase letters, digits, '.', '-' and '_', e.g. cluster.local"
            }
            Grammar::Text => {
                "one line of at most 1000 characters without control characters, bidirectional formatting \
                 characters (U+202A-U+202E, U+2066-U+2069, ...), line or paragraph separators (U+2028, U+2029), \
                 invisible characters or noncharacters"
            }
            Grammar::ContextName => {
                "at most 253 characters without spaces, control characters, bidirectional formatting characters, \
                 line or paragraph separators, invisible characters or noncharacters"
            }
        }
    }

    /// Whether `text` follows the grammar.
    pub fn accepts(self, text: &str) -> bool {
        match self {
            Grammar::Dns1123Label => is_dns1123_label(text),
            Grammar::Dns1035Label => is_dns1123_label(text) && text.starts_with(|c: char| c.is_ascii_lowercase()),
            Grammar::ServiceAccount => !text.is_empty() && text.len() <= 253 && text.split('.').all(is_dns1123_label),
            Grammar::LabelValue => is_label_value(text),
            Grammar::PortName => is_port_name(text),
            Grammar::TrustDomain => {
                !text.is_empty()
                    && text.len() <= 255
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            }
            // What the one escaper would escape is refused: a description is printed in every
            // summary, and text that reads other than it is has no place in one.
            Grammar::Text => text.chars().count() <= MAX_TEXT_CHARS && !text.chars().any(printable::is_escaped),
            Grammar::ContextName => {
                text.chars().count() <= MAX_CONTEXT_CHARS
                    && !text.chars().any(|c| printable::is_escaped(c) || c.is_whitespace())
            }
        }
    }
}

fn is_dns1123_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

fn is_label_value(text: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_alphanumeric();
    !text.is_empty()
        && text.len() <= 63
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && text.starts_with(alphanumeric)
        && text.ends_with(alphanumeric)
}

fn is_port_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 15
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && text.bytes().any(|b| b.is_ascii_lowercase())
        && !text.starts_with('-')
        && !text.ends_with('-')
        && !text.contains("--")
}

#[cfg(test)]
mod tests {
    use super::Grammar::*;

    #[test]
    fn grammars_accept_and_refuse_like_kubernetes_and_spiffe() {
        let cases = [
            (Dns1123Label, "cluster-1", true),
            (Dns1123Label, "1cluster", true),
            (Dns1123Label, "Cluster", false),
            (Dns1123Label, "-a", false),
            (Dns1123Label, &"a".repeat(64), false),
            (Dns1035Label, "1bar", false),
            (Dns1035Label, "bar-1", true),
            (ServiceAccount, "bar.sa", true),
            (ServiceAccount, "bar..sa", false),
            (ServiceAccount, "bar/sa", false),
            (LabelValue, "", false),
            (LabelValue, "Region_1.a", true),
            (LabelValue, "region 1", false),
            (LabelValue, "_a", false),
            (PortName, "http-web", true),
            (PortName, "80", false),
            (PortName, "http--web", false),
            (PortName, "a-very-long-port-name", false),
            (TrustDomain, "example.org", true),
            (TrustDomain, "Example.org", false),
            (TrustDomain, "", false),
            (TrustDomain, "a/b", false),
            (Text, "Two clusters; skew.", true),
            (Text, "bell\u{7}", false),
            (Text, "two\nlines", false),
            (ContextName, "kind-cluster1", true),
            (ContextName, "a b", false),
        ];
        for (grammar, text, expected) in cases {
            assert_eq!(grammar.accepts(text), expected, "{grammar:?} {text:?}");
        }
    }
}
