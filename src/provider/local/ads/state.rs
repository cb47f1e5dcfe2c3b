//! What the ADS server knows, without I/O: the resources each node should have, what each node
//! accepted or rejected, and one stream's protocol state (state of the world, per the xDS
//! protocol: a request with an empty nonce subscribes, a request carrying the nonce of the last
//! response ACKs it, or NACKs it with `error_detail`; a request with an older nonce is stale and
//! ignored).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::wire::{DiscoveryRequest, SECRET_TYPE};

/// The resources of one type a node should have, each `(name, encoded message)`.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Its version (a hash of the content: the same resources keep the same version).
    pub version: String,
    /// Name and protobuf bytes of each resource.
    pub resources: Vec<(String, Vec<u8>)>,
}

/// A response Envoy rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The rejected version.
    pub version: String,
    /// Envoy's reason (`error_detail.message` of the NACK).
    pub detail: String,
}

/// One node's desired resources and answers, per type URL.
#[derive(Debug, Default)]
struct NodeState {
    desired: BTreeMap<String, Arc<Snapshot>>,
    acked: BTreeMap<String, String>,
    rejected: BTreeMap<String, Rejection>,
}

/// Every node's state.
#[derive(Debug, Default)]
pub struct State {
    nodes: HashMap<String, NodeState>,
}

/// What a wait for an ACK found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The version was accepted.
    Acked,
    /// The version was rejected.
    Rejected(Rejection),
    /// Neither yet.
    Pending,
}

impl State {
    /// Sets what `node` should have of `type_url`; true when it changed.
    pub fn set(&mut self, node: &str, type_url: &str, snapshot: Snapshot) -> bool {
        let desired = &mut self.nodes.entry(node.to_owned()).or_default().desired;
        if desired.get(type_url).is_some_and(|current| **current == snapshot) {
            return false;
        }
        desired.insert(type_url.to_owned(), Arc::new(snapshot));
        true
    }

    /// Whether `node` has accepted or rejected `version` of `type_url`.
    pub fn answer(&self, node: &str, type_url: &str, version: &str) -> Answer {
        let Some(state) = self.nodes.get(node) else {
            return Answer::Pending;
        };
        if state.acked.get(type_url).is_some_and(|acked| acked == version) {
            return Answer::Acked;
        }
        match state.rejected.get(type_url) {
            Some(rejection) if rejection.version == version => Answer::Rejected(rejection.clone()),
            _ => Answer::Pending,
        }
    }

    /// The last response of `type_url` that `node` rejected.
    pub fn last_rejection(&self, node: &str, type_url: &str) -> Option<Rejection> {
        self.nodes.get(node)?.rejected.get(type_url).cloned()
    }

    fn desired(&self, node: &str, type_url: &str) -> Option<Arc<Snapshot>> {
        self.nodes.get(node)?.desired.get(type_url).cloned()
    }
}

/// A response to send on a stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Resource type.
    pub type_url: String,
    /// The snapshot's version.
    pub version: String,
    /// This response's nonce.
    pub nonce: String,
    /// Encoded resources.
    pub resources: Vec<Vec<u8>>,
}

/// One subscription of a stream: the names asked for (empty: all) and the last response sent.
#[derive(Debug, Default)]
struct Subscription {
    names: Vec<String>,
    sent: Option<(String, String)>,
}

/// What happened on a stream that the server records.
#[derive(Debug, Default)]
pub struct StreamEvents {
    /// Responses to send, in order.
    pub outgoing: Vec<Outgoing>,
    /// Whether an ACK or NACK was recorded (waiters look again).
    pub answered: bool,
}

/// One Envoy's stream.
#[derive(Debug, Default)]
pub struct Stream {
    node: Option<String>,
    subscriptions: BTreeMap<String, Subscription>,
    nonces: u64,
}

impl Stream {
    /// Handles one request from Envoy.
    pub fn on_request(&mut self, state: &mut State, request: DiscoveryRequest) -> StreamEvents {
        let mut events = StreamEvents::default();
        if let Some(node) = request.node_id {
            self.node = Some(node);
        }
        let Some(node) = self.node.clone() else {
            return events;
        };
        let type_url = request.type_url;
        let subscription = self.subscriptions.entry(type_url.clone()).or_default();
        if request.response_nonce.is_empty() {
            // A (re)subscription: whatever this node's earlier process accepted is not this one's.
            let node_state = state.nodes.entry(node.clone()).or_default();
            node_state.acked.remove(&type_url);
            node_state.rejected.remove(&type_url);
            subscription.names = request.resource_names;
            subscription.sent = None;
        } else {
            let Some((version, nonce)) = subscription.sent.clone() else {
                return events;
            };
            if nonce != request.response_nonce {
                return events;
            }
            let node_state = state.nodes.entry(node.clone()).or_default();
            match request.error_detail {
                Some(detail) => {
                    node_state
                        .rejected
                        .insert(type_url.clone(), Rejection { version, detail });
                }
                None => {
                    node_state.acked.insert(type_url.clone(), version);
                }
            }
            events.answered = true;
            if subscription.names == request.resource_names {
                return events;
            }
            subscription.names = request.resource_names;
        }
        if let Some(outgoing) = self.respond(state, &node, &type_url) {
            events.outgoing.push(outgoing);
        }
        events
    }

    /// Responses for every subscription whose desired version differs from the one last sent.
    pub fn on_change(&mut self, state: &State) -> Vec<Outgoing> {
        let Some(node) = self.node.clone() else {
            return Vec::new();
        };
        let changed: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|(type_url, subscription)| {
                let sent = subscription.sent.as_ref().map(|(version, _)| version);
                state
                    .desired(&node, type_url)
                    .is_some_and(|snapshot| sent != Some(&snapshot.version))
            })
            .map(|(type_url, _)| type_url.clone())
            .collect();
        changed
            .iter()
            .filter_map(|type_url| self.respond(state, &node, type_url))
            .collect()
    }

    fn respond(&mut self, state: &State, node: &str, type_url: &str) -> Option<Outgoing> {
        let snapshot = state.desired(node, type_url)?;
        let subscription = self.subscriptions.get_mut(type_url)?;
        // Clusters and listeners are wildcard subscriptions (all of them); secrets are asked for
        // by name, and a response carries only those.
        let named = type_url == SECRET_TYPE || !subscription.names.is_empty();
        let resources = snapshot
            .resources
            .iter()
            .filter(|(name, _)| !named || subscription.names.contains(name))
            .map(|(_, bytes)| bytes.clone())
            .collect();
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        subscription.sent = Some((snapshot.version.clone(), nonce.clone()));
        Some(Outgoing {
            type_url: type_url.to_owned(),
            version: snapshot.version.clone(),
            nonce,
            resources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::local::ads::wire::CLUSTER_TYPE;

    fn snapshot(version: &str, names: &[&str]) -> Snapshot {
        Snapshot {
            version: version.into(),
            resources: names
                .iter()
                .map(|name| (name.to_string(), name.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn request(
        node: Option<&str>,
        type_url: &str,
        names: &[&str],
        nonce: &str,
        error: Option<&str>,
    ) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: String::new(),
            node_id: node.map(str::to_owned),
            resource_names: names.iter().map(|name| name.to_string()).collect(),
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            error_detail: error.map(str::to_owned),
        }
    }

    /// A state holding `snapshot` as `node`'s `type_url` resources, and a new stream on which
    /// `node` subscribed to `names` of them (every one when empty), with what it was sent first.
    fn subscribed(node: &str, type_url: &str, snapshot: Snapshot, names: &[&str]) -> (State, Stream, StreamEvents) {
        let mut state = State::default();
        state.set(node, type_url, snapshot);
        let mut stream = Stream::default();
        let first = stream.on_request(&mut state, request(Some(node), type_url, names, "", None));
        (state, stream, first)
    }

    #[test]
    fn a_subscription_gets_the_snapshot_an_ack_is_recorded_and_a_change_is_pushed() {
        let (mut state, mut stream, first) = subscribed("foo-0.c1", CLUSTER_TYPE, snapshot("v1", &["a", "b"]), &[]);
        assert_eq!(first.outgoing.len(), 1);
        assert_eq!(first.outgoing[0].resources, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(state.answer("foo-0.c1", CLUSTER_TYPE, "v1"), Answer::Pending);
        let nonce = first.outgoing[0].nonce.clone();
        let ack = stream.on_request(&mut state, request(None, CLUSTER_TYPE, &[], &nonce, None));
        assert!(ack.answered && ack.outgoing.is_empty());
        assert_eq!(state.answer("foo-0.c1", CLUSTER_TYPE, "v1"), Answer::Acked);
        assert!(stream.on_change(&state).is_empty(), "nothing changed");
        assert!(state.set("foo-0.c1", CLUSTER_TYPE, snapshot("v2", &["a"])));
        let pushed = stream.on_change(&state);
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0].version, "v2");
        assert_ne!(pushed[0].nonce, nonce);
    }

    #[test]
    fn a_nack_records_the_rejected_version_and_envoys_reason_and_a_stale_nonce_is_ignored() {
        let (mut state, mut stream, first) = subscribed("gw.c2", CLUSTER_TYPE, snapshot("v1", &["a"]), &[]);
        let old_nonce = first.outgoing[0].nonce.clone();
        state.set("gw.c2", CLUSTER_TYPE, snapshot("v2", &["a", "b"]));
        let second = stream.on_change(&state);
        let stale = stream.on_request(&mut state, request(None, CLUSTER_TYPE, &[], &old_nonce, None));
        assert!(!stale.answered, "an answer to an older response is stale");
        assert_eq!(state.answer("gw.c2", CLUSTER_TYPE, "v1"), Answer::Pending);
        stream.on_request(
            &mut state,
            request(None, CLUSTER_TYPE, &[], &second[0].nonce, Some("duplicate cluster b")),
        );
        let rejection = Rejection {
            version: "v2".into(),
            detail: "duplicate cluster b".into(),
        };
        assert_eq!(
            state.answer("gw.c2", CLUSTER_TYPE, "v2"),
            Answer::Rejected(rejection.clone())
        );
        assert_eq!(state.last_rejection("gw.c2", CLUSTER_TYPE), Some(rejection));
        assert!(
            stream.on_change(&state).is_empty(),
            "a rejected version is not sent again"
        );
    }

    #[test]
    fn secrets_are_sent_by_name_and_a_new_name_gets_a_response() {
        let (mut state, mut stream, first) = subscribed(
            "bar-0.c2",
            SECRET_TYPE,
            snapshot("s1", &["default", "ROOTCA"]),
            &["default"],
        );
        assert_eq!(first.outgoing[0].resources, vec![b"default".to_vec()]);
        let both = stream.on_request(
            &mut state,
            request(
                None,
                SECRET_TYPE,
                &["default", "ROOTCA"],
                &first.outgoing[0].nonce,
                None,
            ),
        );
        assert!(both.answered);
        assert_eq!(
            both.outgoing[0].resources,
            vec![b"default".to_vec(), b"ROOTCA".to_vec()]
        );
    }

    #[test]
    fn a_resubscription_forgets_what_an_earlier_process_acked() {
        let (mut state, mut stream, first) = subscribed("foo-0.c1", CLUSTER_TYPE, snapshot("v1", &["a"]), &[]);
        stream.on_request(
            &mut state,
            request(None, CLUSTER_TYPE, &[], &first.outgoing[0].nonce, None),
        );
        assert_eq!(state.answer("foo-0.c1", CLUSTER_TYPE, "v1"), Answer::Acked);
        let mut restarted = Stream::default();
        restarted.on_request(&mut state, request(Some("foo-0.c1"), CLUSTER_TYPE, &[], "", None));
        assert_eq!(state.answer("foo-0.c1", CLUSTER_TYPE, "v1"), Answer::Pending);
    }
}
