//! Where the scenario's plain (not [`Spanned`]) fields were written, read in a second pass over
//! the same text, so validation can point at them without changing the model's field types.

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

/// Positions of the scenario's plain fields; `None` where a field was not written (its default
/// is then used, and defaults are valid).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioSpans {
    /// `name`.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// `description`.
    #[serde(default)]
    pub description: Option<Spanned<String>>,
    /// `trustDomain`.
    #[serde(default)]
    pub trust_domain: Option<Spanned<String>>,
    /// `clusters`: the sequence and each cluster's plain fields.
    #[serde(default)]
    pub clusters: Option<Spanned<Vec<ClusterSpans>>>,
    /// `services`: the sequence and each service's plain fields.
    #[serde(default)]
    pub services: Option<Spanned<Vec<ServiceSpans>>>,
}

/// Positions of one cluster's plain fields.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpans {
    /// `region`.
    #[serde(default)]
    pub region: Option<Spanned<String>>,
    /// `zone`.
    #[serde(default)]
    pub zone: Option<Spanned<String>>,
    /// `network`.
    #[serde(default)]
    pub network: Option<Spanned<String>>,
    /// `context`.
    #[serde(default)]
    pub context: Option<Spanned<String>>,
}

/// Positions of one service's plain fields.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpans {
    /// `serviceAccount`.
    #[serde(default)]
    pub service_account: Option<Spanned<String>>,
    /// `ports`.
    #[serde(default)]
    pub ports: Option<Spanned<serde::de::IgnoredAny>>,
}

impl ScenarioSpans {
    /// Reads the positions from text the model already parsed from; an empty set when that
    /// fails (it cannot for text the model accepted, but a position is never worth a panic).
    pub fn read(text: &str) -> ScenarioSpans {
        serde_saphyr::from_str_with_options(text, lenient_options()).unwrap_or_default()
    }

    /// Position of the `index`-th cluster's fields.
    pub fn cluster(&self, index: usize) -> Option<&ClusterSpans> {
        self.clusters.as_ref()?.value.get(index)
    }

    /// Position of the `index`-th service's fields.
    pub fn service(&self, index: usize) -> Option<&ServiceSpans> {
        self.services.as_ref()?.value.get(index)
    }
}

/// Options for reading positions only: the fields this view skips are read untyped, and an
/// untyped `.nan` (which the model reads as a float) must not fail the whole view.
pub fn lenient_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::AsString;
    options
}

/// The position of an optional span, or `fallback`.
pub fn at<T>(span: Option<&Spanned<T>>, fallback: Location) -> Location {
    span.map_or(fallback, |span| span.referenced)
}

#[cfg(test)]
mod tests {
    use super::ScenarioSpans;

    #[test]
    fn positions_are_read_past_values_the_view_skips() {
        let text = "name: t\nphases:\n  - expect: { mtlsRateAtLeast: .nan, x: !!binary aGk= }\n";
        let spans = ScenarioSpans::read(text);
        let name = spans.name.expect("the name's position");
        assert_eq!((name.referenced.line(), name.referenced.column()), (1, 7));
    }
}
