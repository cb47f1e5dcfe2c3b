//! Resilience settings as Istio has them: a DestinationRule's `outlierDetection` and
//! `localityLbSetting.failover`, a VirtualService's `retries` and `timeout`. Each value is checked
//! while it is read (bounds, duration grammar, Envoy's retry conditions), so a bad one is reported
//! at its own line and column; the checks across fields are in [`check_resilience`].

use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_saphyr::Spanned;

/// Longest duration a resilience setting may name (longer ones would outlast any phase).
pub const MAX_DURATION_MILLIS: u64 = 3_600_000;
/// Most retries a VirtualService may ask for (Istio sets no bound; more only multiplies load).
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// A duration as Istio's CRDs spell it, restricted to one whole number and a unit: `250ms`,
/// `10s`, `1m`, `1h`; from 1 ms (the CRDs' own lower bound) to [`MAX_DURATION_MILLIS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct IstioDuration {
    /// The duration in milliseconds.
    pub millis: u64,
}

impl IstioDuration {
    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        IstioDuration { millis }
    }
}

impl FromStr for IstioDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let allowed = "a whole number and a unit (ms, s, m, h) such as 250ms, 10s, 1m, from 1ms to 1h";
        let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        let scale = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(format!("duration {text:?} is not {allowed}")),
        };
        let millis = number
            .parse::<u64>()
            .ok()
            .and_then(|number| number.checked_mul(scale))
            .filter(|millis| (1..=MAX_DURATION_MILLIS).contains(millis))
            .ok_or_else(|| format!("duration {text:?} is not {allowed}"))?;
        Ok(IstioDuration { millis })
    }
}

impl fmt::Display for IstioDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis.is_multiple_of(1_000) {
            write!(f, "{}s", self.millis / 1_000)
        } else {
            write!(f, "{}ms", self.millis)
        }
    }
}

impl From<IstioDuration> for String {
    fn from(duration: IstioDuration) -> String {
        duration.to_string()
    }
}

impl<'de> Deserialize<'de> for IstioDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// A percentage, 0 to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Percent(pub u32);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u32::deserialize(deserializer)?;
        if value > 100 {
            return Err(de::Error::custom(format!("{value} is not a percentage (0 to 100)")));
        }
        Ok(Percent(value))
    }
}

/// `trafficPolicy.outlierDetection`. Unset fields keep Envoy's defaults, as Istio leaves them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// 5xx responses (and, Envoy's default, local connect failures) in a row that eject a host;
    /// 0 turns this check off.
    #[serde(rename = "consecutive5xxErrors", default)]
    pub consecutive_5xx_errors: Option<u32>,
    /// 502, 503 and 504 responses (and connect failures) in a row that eject a host.
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    /// Time between ejection sweeps (Envoy's default 10s).
    #[serde(default)]
    pub interval: Option<IstioDuration>,
    /// Minimum ejection time; it grows with each ejection of the same host (Envoy's default 30s).
    #[serde(default)]
    pub base_ejection_time: Option<IstioDuration>,
    /// Most hosts that may be ejected at once, in percent (Envoy's default 10, which still ejects
    /// one host of few).
    #[serde(default)]
    pub max_ejection_percent: Option<Percent>,
}

impl OutlierDetection {
    /// What `outlierDetection: true` means: the values of Istio's documentation example (5
    /// consecutive 5xx, 10 s interval, 30 s ejection), meshfed's setting before the fields existed.
    pub fn documented_example() -> Self {
        OutlierDetection {
            consecutive_5xx_errors: Some(5),
            consecutive_gateway_errors: None,
            interval: Some(IstioDuration::from_millis(10_000)),
            base_ejection_time: Some(IstioDuration::from_millis(30_000)),
            max_ejection_percent: None,
        }
    }
}

/// Reads `outlierDetection: true | false | {fields}` (a bool stays accepted for older scenarios).
pub fn deserialize_outlier_detection<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<OutlierDetection>, D::Error> {
    struct BoolOrFields;

    impl<'de> Visitor<'de> for BoolOrFields {
        type Value = Option<OutlierDetection>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "true, false, or a map of consecutive5xxErrors, consecutiveGatewayErrors, interval, \
                 baseEjectionTime, maxEjectionPercent",
            )
        }

        fn visit_bool<E: de::Error>(self, on: bool) -> Result<Self::Value, E> {
            Ok(on.then(OutlierDetection::documented_example))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            OutlierDetection::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    deserializer.deserialize_any(BoolOrFields)
}

/// `trafficPolicy.loadBalancer.localityLbSetting` (only `failover`: `distribute` and
/// `failoverPriority` are not emulated, so they are refused rather than ignored).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    /// When a caller's region has no healthy endpoint, which region to try before the others.
    pub failover: Vec<RegionFailover>,
}

/// One `failover` rule: callers in region `from` fail over to region `to` first.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionFailover {
    /// The callers' region.
    pub from: Spanned<String>,
    /// The region their calls go to when their own has no healthy endpoint.
    pub to: Spanned<String>,
}

/// A VirtualService's `http[].retries`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retries {
    /// Retries after the first try (0 turns off even Istio's default retries).
    pub attempts: RetryAttempts,
    /// Deadline of each try.
    #[serde(default)]
    pub per_try_timeout: Option<IstioDuration>,
    /// Envoy's retry conditions and HTTP status codes, comma separated.
    #[serde(default)]
    pub retry_on: Option<RetryOn>,
}

/// A number of retries, 0 to [`MAX_RETRY_ATTEMPTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RetryAttempts(pub u32);

impl<'de> Deserialize<'de> for RetryAttempts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u32::deserialize(deserializer)?;
        if value > MAX_RETRY_ATTEMPTS {
            return Err(de::Error::custom(format!(
                "{value} retries is more than {MAX_RETRY_ATTEMPTS}"
            )));
        }
        Ok(RetryAttempts(value))
    }
}

/// The retry conditions Envoy's router knows (`x-envoy-retry-on` and `x-envoy-retry-grpc-on`),
/// which Istio passes through.
pub const RETRY_CONDITIONS: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// `retryOn`: conditions and HTTP status codes, as written (Istio splits the codes out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct RetryOn(pub String);

impl RetryOn {
    /// The conditions (what Envoy's `retry_on` gets), with `retriable-status-codes` added when
    /// codes are listed, as Istio does.
    pub fn conditions(&self) -> Vec<String> {
        let mut conditions: Vec<String> = self
            .parts()
            .filter(|part| part.parse::<u16>().is_err())
            .map(str::to_owned)
            .collect();
        if !self.status_codes().is_empty() && !conditions.iter().any(|c| c == "retriable-status-codes") {
            conditions.push("retriable-status-codes".to_owned());
        }
        conditions
    }

    /// The HTTP status codes listed.
    pub fn status_codes(&self) -> Vec<u16> {
        self.parts().filter_map(|part| part.parse().ok()).collect()
    }

    fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split(',').map(str::trim).filter(|part| !part.is_empty())
    }
}

impl From<RetryOn> for String {
    fn from(retry_on: RetryOn) -> String {
        retry_on.0
    }
}

impl FromStr for RetryOn {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let retry_on = RetryOn(text.to_owned());
        if retry_on.parts().next().is_none() {
            return Err("retryOn is empty: list conditions or HTTP status codes, comma separated".to_owned());
        }
        for part in retry_on.parts() {
            let status_code = part.parse::<u16>().is_ok_and(|code| (100..=599).contains(&code));
            if !status_code && !RETRY_CONDITIONS.contains(&part) {
                return Err(format!(
                    "retryOn condition {part:?} is not an HTTP status code (100-599) or one of {}",
                    RETRY_CONDITIONS.join(", ")
                ));
            }
        }
        Ok(retry_on)
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// The checks across fields: a failover rule needs outlier detection (without it Istio applies no
/// failover priorities, and meshfed never accepts a setting that does nothing), gateway endpoints
/// with a locality (`federation.locality`), and its regions to be clusters' regions.
pub fn check_resilience(scenario: &super::Scenario) -> Result<(), (serde_saphyr::Location, String)> {
    let federation = &scenario.federation;
    let Some(setting) = &federation.locality_lb_setting else {
        return Ok(());
    };
    let at = setting.referenced;
    if federation.outlier_detection.is_none() {
        return Err((
            at,
            "localityLbSetting.failover needs outlierDetection: Istio programs failover priorities only with it"
                .to_owned(),
        ));
    }
    if !federation.locality {
        return Err((
            at,
            "localityLbSetting.failover needs `locality: true`: without it remote gateways carry no region".to_owned(),
        ));
    }
    let regions: Vec<&str> = scenario
        .clusters
        .iter()
        .map(|cluster| cluster.region.as_str())
        .collect();
    for rule in &setting.value.failover {
        for region in [&rule.from, &rule.to] {
            if !regions.contains(&region.value.as_str()) {
                return Err((
                    region.referenced,
                    format!(
                        "region {:?} is no cluster's region; the clusters' regions are {}",
                        region.value,
                        regions.join(", ")
                    ),
                ));
            }
        }
        if rule.from.value == rule.to.value {
            return Err((
                rule.to.referenced,
                "a failover rule's `from` and `to` must differ".to_owned(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_istio_spells_them_and_print_back() {
        assert_eq!("250ms".parse::<IstioDuration>().unwrap().millis, 250);
        assert_eq!("10s".parse::<IstioDuration>().unwrap().to_string(), "10s");
        assert_eq!("1m".parse::<IstioDuration>().unwrap().millis, 60_000);
        for bad in ["", "10", "0s", "1.5s", "-1s", "2h", "10 s", "10sec"] {
            let error = bad.parse::<IstioDuration>().unwrap_err();
            assert!(error.contains("from 1ms to 1h"), "{bad}: {error}");
        }
    }

    #[test]
    fn retry_on_splits_status_codes_out_and_adds_their_condition() {
        let retry_on: RetryOn = "connect-failure, 503".parse().unwrap();
        assert_eq!(retry_on.conditions(), ["connect-failure", "retriable-status-codes"]);
        assert_eq!(retry_on.status_codes(), [503]);
        let error = "connect-failure,timeout".parse::<RetryOn>().unwrap_err();
        assert!(
            error.contains("\"timeout\"") && error.contains("gateway-error"),
            "{error}"
        );
        assert!(",".parse::<RetryOn>().is_err());
        assert!("999".parse::<RetryOn>().is_err());
    }
}
