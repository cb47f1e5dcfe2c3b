//! Scenario files: the model of what meshfed builds, federates, sends and expects, and its loading.
//!
//! A scenario is YAML (reference: `docs/scenario.md`). [`load`] reads a file (a regular file of at
//! most [`MAX_INPUT_BYTES`]), [`parse`] rejects unknown keys and checks the whole model: bounds,
//! string grammars, references, name collisions and networks against the local address layout.
//! Every error names the file, line and column and what is allowed. Fields whose position a later
//! check must point at are kept as [`Spanned`]; the others' positions are read in a second pass.
//!
//! The model is in `model.rs`, reading and parsing in `load.rs`, the checks in `validate/` (by what
//! they check), the value types every layer shares (`IstioVersion`, `Ipv4Cidr`) here.

pub mod address_layout;
mod file;
mod grammar;
mod load;
mod model;
pub mod resilience;
pub(crate) mod spans;
mod validate;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
pub use serde_saphyr::Spanned;

pub use file::{MAX_INPUT_BYTES, read_text};
pub(crate) use load::syntax_message;
pub use load::{ScenarioError, load, load_with_istio_version, parse, parse_with_istio_version};
pub use model::*;
pub use validate::{
    MAX_ACTIONS_PER_PHASE, MAX_BUCKET_MILLIS, MAX_CLUSTERS, MAX_CONCURRENCY, MAX_DELAY_MILLIS, MAX_FAULTS_PER_PHASE,
    MAX_PHASE_TIMEOUT_SECONDS, MAX_PHASES, MAX_PLANNED_PORTS, MAX_PODS, MAX_PORTS_PER_SERVICE, MAX_RATE_PER_SECOND,
    MAX_REQUESTS, MAX_SERVICES, MAX_WINDOWS_PER_PHASE, MIN_BUCKET_MILLIS,
};

/// An Istio version `major.minor[.patch]`. Serialised as the text it is read from (`"1.22.0"`), so
/// what meshfed writes (report.json's inventory events) reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IstioVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version (0 when not given).
    pub patch: u32,
}

impl IstioVersion {
    /// The version `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        IstioVersion { major, minor, patch }
    }
}

impl fmt::Display for IstioVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for IstioVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("invalid Istio version {text:?}: expected major.minor[.patch], e.g. 1.30.3");
        let mut numbers = text.trim_start_matches('v').split('.').map(str::parse::<u32>);
        let major = numbers.next().and_then(Result::ok).ok_or_else(invalid)?;
        let minor = numbers.next().and_then(Result::ok).ok_or_else(invalid)?;
        let patch = match numbers.next() {
            None => 0,
            Some(patch) => patch.map_err(|_| invalid())?,
        };
        if numbers.next().is_some() {
            return Err(invalid());
        }
        Ok(IstioVersion::new(major, minor, patch))
    }
}

impl Serialize for IstioVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IstioVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 network `a.b.c.d/len` whose host bits are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct Ipv4Cidr {
    /// Network address.
    pub network: Ipv4Addr,
    /// Prefix length (0–32).
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// Netmask as an integer.
    fn mask(self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len)
        }
    }

    /// Whether the two networks share any address.
    pub fn overlaps(self, other: Ipv4Cidr) -> bool {
        let shorter = self.prefix_len.min(other.prefix_len);
        let mask = Ipv4Cidr {
            network: self.network,
            prefix_len: shorter,
        }
        .mask();
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    /// Whether `ip` lies in this network.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// The `index`-th address of the network (0 is the network address itself), if it fits.
    pub fn host(self, index: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix_len));
        (u64::from(index) < size).then(|| Ipv4Addr::from(u32::from(self.network) + index))
    }

    /// Number of addresses in the network.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl From<Ipv4Cidr> for String {
    fn from(cidr: Ipv4Cidr) -> String {
        cidr.to_string()
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| format!("invalid IPv4 CIDR {text:?}: {why} (expected e.g. 10.10.0.0/16)");
        let (address, prefix) = text.split_once('/').ok_or_else(|| invalid("missing /prefix"))?;
        let network: Ipv4Addr = address.parse().map_err(|_| invalid("bad address"))?;
        let prefix_len: u8 = prefix.parse().map_err(|_| invalid("bad prefix length"))?;
        if prefix_len > 32 {
            return Err(invalid("prefix length over 32"));
        }
        let cidr = Ipv4Cidr { network, prefix_len };
        if u32::from(network) & !cidr.mask() != 0 {
            return Err(invalid("host bits are set"));
        }
        Ok(cidr)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Istio version assumed when a cluster does not say: a supported release of the 1.30 line.
pub const DEFAULT_ISTIO_VERSION: IstioVersion = IstioVersion::new(1, 30, 3);
/// Oldest Istio minor version the `local` emulation follows (docs/fidelity.md).
pub const OLDEST_EMULATED_ISTIO: IstioVersion = IstioVersion::new(1, 1, 0);
/// Newest Istio minor version the `local` emulation follows (any patch of it).
pub const NEWEST_EMULATED_ISTIO: IstioVersion = IstioVersion::new(1, 30, 0);

#[cfg(test)]
mod tests {
    use super::{Ipv4Cidr, IstioVersion};

    #[test]
    fn an_istio_version_serialises_as_the_text_it_is_read_from() {
        let version = IstioVersion::new(1, 22, 0);
        let json = serde_json::to_string(&version).unwrap();
        assert_eq!(json, "\"1.22.0\"");
        assert_eq!(serde_json::from_str::<IstioVersion>(&json).unwrap(), version);
    }

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_cidr_parses_contains_and_overlaps() {
        let pods = cidr("10.1.0.0/24");
        assert_eq!(pods.to_string(), "10.1.0.0/24");
        assert!(pods.contains("10.1.0.255".parse().unwrap()));
        assert!(!pods.contains("10.1.1.0".parse().unwrap()));
        assert!(cidr("10.0.0.0/8").overlaps(pods));
        assert!(pods.overlaps(cidr("10.0.0.0/8")));
        assert!(!pods.overlaps(cidr("10.2.0.0/24")));
        assert!(cidr("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!("10.1.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.1.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.1.0.7/24".parse::<Ipv4Cidr>().is_err(), "a network has no host bits");
    }
}
