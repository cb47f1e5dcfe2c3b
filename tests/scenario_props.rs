//! Property test of the scenario loader and the planner: arbitrary scenario text (mostly valid
//! scenarios, some with odd values, some mutated into broken YAML, some alias bombs) never makes
//! them panic, and no single allocation exceeds 512 MiB. A scenario that validates always lays
//! out in the local address layout and plans and renders.
//!
//! Generator: a hand-written one over a seeded SplitMix64, not proptest. The inputs are text, so
//! shrinking would mostly shrink YAML into syntax errors; a seed plus the saved failing text
//! reproduce a failure exactly, and no crate has to be compiled for it.
//!
//! `cargo test --test scenario_props` runs a few seconds of cases. A long run:
//! `MESHFED_FUZZ_SECONDS=620 cargo test --release --test scenario_props -- --nocapture`
//! (`MESHFED_FUZZ_SEED` picks the first seed).

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meshfed::provider::local::topology;
use meshfed::scenario::{self, MAX_CLUSTERS, MAX_PLANNED_PORTS, MAX_PODS, MAX_PORTS_PER_SERVICE, MAX_SERVICES};
use meshfed::{inventory, plan};

/// Largest single allocation allowed: anything bigger means a count reached an allocation unchecked.
const ALLOCATION_LIMIT: usize = 512 * 1024 * 1024;

/// The system allocator, refusing any single allocation over [`ALLOCATION_LIMIT`] (Rust's
/// allocation-error handler then aborts with "memory allocation of N bytes failed"), and keeping
/// the live and peak heap size for the report.
struct LimitedAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);
static LARGEST_ALLOCATION: AtomicUsize = AtomicUsize::new(0);

impl LimitedAllocator {
    fn grant(size: usize) -> bool {
        if size > ALLOCATION_LIMIT {
            return false;
        }
        LARGEST_ALLOCATION.fetch_max(size, Ordering::Relaxed);
        let live = LIVE_BYTES.fetch_add(size, Ordering::Relaxed) + size;
        PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
        true
    }
}

// SAFETY: every call is forwarded to `System` with the same layout; only sizes are counted.
#[allow(unsafe_code, reason = "a global allocator that bounds allocations is an unsafe impl")]
unsafe impl GlobalAlloc for LimitedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::grant(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Self::grant(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Self::grant(new_size) {
            return std::ptr::null_mut();
        }
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LimitedAllocator = LimitedAllocator;

/// SplitMix64: small, fast, and the same sequence for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (bound > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// True with `percent` % probability.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Strings that break one grammar or another (or none).
const ODD_STRINGS: &[&str] = &[
    "",
    "A",
    "Bar",
    "1abc",
    "-a",
    "a-",
    "a--b",
    "a.b",
    "a..b",
    "a_b",
    "a/b",
    "a b",
    "8080",
    "http",
    "caf\u{e9}",
    "tab\there",
    "line\nbreak",
    "esc\u{1b}[31m",
    "nul\u{0}",
    "\u{202e}rtl",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "spiffe://x/ns/a",
    "cluster.local",
    "*",
    "&",
    "~",
];

/// Scalars that break one type or bound or another.
const ODD_NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "1.5",
    "1e400",
    ".nan",
    ".inf",
    "-.inf",
    "~",
    "null",
    "true",
    "0x10",
    "0o17",
    "65535",
    "65536",
    "1024",
    "16384",
    "16385",
    "1000000",
    "1000001",
    "2000000000",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "\"12\"",
    "[]",
    "{}",
];

/// Tokens spliced into text to break it.
const YAML_TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    ":",
    ": ",
    "- ",
    ",",
    "\t",
    "\"",
    "'",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!!str ",
    "? ",
    "|",
    ">",
    "#",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "\n",
    "\n  ",
    "\u{feff}",
    "\u{0}",
    "\r",
];

struct Generator<'a> {
    rng: &'a mut Rng,
    /// Percent chance a value is odd rather than valid.
    oddness: u64,
}

impl Generator<'_> {
    fn string(&mut self, valid: &str) -> String {
        let text = if self.rng.chance(self.oddness) {
            (*self.rng.pick(ODD_STRINGS)).to_owned()
        } else {
            valid.to_owned()
        };
        quote(self.rng, &text)
    }

    /// One of `valid`, or (when odd) one of `odd`.
    fn choice(&mut self, valid: &[&str], odd: &[&str]) -> String {
        let from = if self.rng.chance(self.oddness) { odd } else { valid };
        (*self.rng.pick(from)).to_owned()
    }

    fn number(&mut self, valid: u64) -> String {
        if self.rng.chance(self.oddness) {
            (*self.rng.pick(ODD_NUMBERS)).to_owned()
        } else {
            valid.to_string()
        }
    }

    fn cidr(&mut self, valid: String) -> String {
        if !self.rng.chance(self.oddness) {
            return valid;
        }
        let prefix = self.rng.below(33) as u32;
        let address = (self.rng.next() as u32) & if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        let address = std::net::Ipv4Addr::from(if self.rng.chance(10) { address | 1 } else { address });
        match self.rng.below(6) {
            0 => format!("127.0.0.0/{}", 8 + self.rng.below(25)),
            1 => format!("100.64.0.0/{}", 9 + self.rng.below(24)),
            2 => "10.0.0.0/33".to_owned(),
            3 => "not-a-cidr".to_owned(),
            _ => format!("{address}/{prefix}"),
        }
    }

    fn optional(&mut self, percent: u64, line: impl FnOnce(&mut Self) -> String) -> String {
        if self.rng.chance(percent) {
            line(self)
        } else {
            String::new()
        }
    }

    fn scenario(&mut self) -> String {
        let wide = self.rng.chance(3);
        let cluster_count = if wide {
            1 + self.rng.below(MAX_CLUSTERS as u64 + 2)
        } else {
            1 + self.rng.below(4)
        };
        let service_count = if wide {
            let bound = if self.rng.chance(20) {
                MAX_SERVICES as u64 + 2
            } else {
                24
            };
            self.rng.below(bound)
        } else {
            self.rng.below(5)
        };
        let mut text = format!("name: {}\n", self.string("fuzz"));
        text += &self.optional(30, |g| format!("description: {}\n", g.string("A fuzzed scenario.")));
        text += &self.optional(30, |g| format!("trustDomain: {}\n", g.string("example.org")));
        text += &self.optional(10, |g| {
            let algorithm = g.choice(&["ecdsa-p256", "ecdsa-p384"], &["rsa-2048", "", "ECDSA-P256"]);
            format!("pki: {{ keyAlgorithm: {algorithm} }}\n")
        });
        text += "clusters:\n";
        let clusters: Vec<String> = (0..cluster_count).map(|index| format!("c{index}")).collect();
        for (index, name) in clusters.iter().enumerate() {
            text += &format!("  - name: {}\n", self.string(name));
            text += &self.optional(40, |g| format!("    region: {}\n", g.string(&format!("region{index}"))));
            text += &self.optional(40, |g| format!("    zone: {}\n", g.string("zone-a")));
            text += &self.optional(20, |g| format!("    network: {}\n", g.string(&format!("net{index}"))));
            text += &self.optional(10, |g| format!("    context: {}\n", g.string(&format!("kind-{name}"))));
            text += &self.optional(15, |g| {
                let version = g.choice(
                    &["1.4.0", "1.7", "1.24.3", "v1.22.0"],
                    &["1.x", "1.2.3.4", "", "4294967296.0"],
                );
                format!("    istioVersion: {}\n", quote(g.rng, &version))
            });
            let pod_prefix = 16 + self.rng.below(13);
            let pod = self.cidr(format!("10.{index}.0.0/{pod_prefix}"));
            let service_prefix = 16 + self.rng.below(13);
            let service = self.cidr(format!("10.{}.0.0/{service_prefix}", 100 + index));
            text += &format!("    podCidr: {pod}\n    serviceCidr: {service}\n");
        }
        text += "services:";
        let mut services = Vec::new();
        if service_count == 0 {
            text += " []";
        }
        text += "\n";
        for index in 0..service_count {
            let name = (*self.rng.pick(&["foo", "bar", "baz", "qux-1"])).to_owned();
            let namespace = format!("ns{}", if self.rng.chance(70) { index } else { self.rng.below(3) });
            text += &format!(
                "  - name: {}\n    namespace: {}\n",
                self.string(&name),
                self.string(&namespace)
            );
            text += &self.optional(20, |g| {
                format!("    serviceAccount: {}\n", g.string(&format!("{name}-sa")))
            });
            let port_count = if wide && self.rng.chance(10) {
                self.rng.below(MAX_PORTS_PER_SERVICE as u64 + 2)
            } else {
                1 + self.rng.below(3)
            };
            let mut ports = Vec::new();
            text += "    ports:";
            if port_count == 0 {
                text += " []";
            }
            text += "\n";
            for port in 0..port_count {
                let port_name = format!("p{port}");
                let protocol = self.choice(&["http", "tcp"], &["grpc", "HTTP", "[]"]);
                text += &format!(
                    "      - {{ name: {}, number: {}, protocol: {protocol} }}\n",
                    self.string(&port_name),
                    self.number(80 + port)
                );
                ports.push(port_name);
            }
            text += "    replicas: {";
            let mut first = true;
            let mut with_pods = Vec::new();
            for cluster in &clusters {
                if self.rng.chance(50) {
                    let count = if self.rng.chance(2) {
                        *self
                            .rng
                            .pick(&[MAX_PODS, MAX_PODS + 1, 2_000_000_000, u64::from(u32::MAX)])
                    } else {
                        self.rng.below(4)
                    };
                    text += &format!("{}{cluster}: {}", if first { " " } else { ", " }, self.number(count));
                    first = false;
                    if count > 0 {
                        with_pods.push(cluster.clone());
                    }
                }
            }
            text += " }\n";
            services.push(ServiceDraft {
                reference: format!("{name}.{namespace}"),
                ports,
                with_pods,
            });
        }
        text += &self.optional(50, |g| {
            let mode = g.choice(&["serviceentry", "endpoint-discovery"], &["mesh", "~"]);
            let weights = g.choice(&["equal", "ready-pods"], &["weighted"]);
            let mtls = g.choice(&["PERMISSIVE", "STRICT"], &["strict", "DISABLE"]);
            format!(
                "federation: {{ mode: {mode}, endpointWeights: {weights}, locality: {}, mtls: {mtls} }}\n",
                g.rng.chance(50)
            )
        });
        if !services.is_empty() && self.rng.chance(80) {
            text += "phases:\n";
            for index in 0..1 + self.rng.below(4) {
                text += &self.phase(index, &clusters, &services);
            }
        }
        text
    }

    fn phase(&mut self, index: u64, clusters: &[String], services: &[ServiceDraft]) -> String {
        let source = self.rng.pick(services);
        let from = source.reference.clone();
        let cluster = if source.with_pods.is_empty() || self.rng.chance(10) {
            self.rng.pick(clusters).clone()
        } else {
            self.rng.pick(&source.with_pods).clone()
        };
        let target = self.rng.pick(services);
        let to = target.reference.clone();
        let port = if target.ports.is_empty() {
            "80".to_owned()
        } else {
            self.rng.pick(&target.ports).clone()
        };
        let mut text = format!(
            "  - name: {}\n    from: {{ service: {}, cluster: {} }}\n    to: {{ service: {}, port: {} }}\n",
            self.string(&format!("phase{index}")),
            self.string(&from),
            self.string(&cluster),
            self.string(&to),
            self.string(&port),
        );
        text += &self.optional(60, |g| {
            let valid = 1 + g.rng.below(2000);
            format!("    requests: {}\n", g.number(valid))
        });
        text += &self.optional(40, |g| {
            let valid = 1 + g.rng.below(16);
            format!("    concurrency: {}\n", g.number(valid))
        });
        text += &self.optional(20, |g| {
            let policy = g.choice(&["pooled", "new-connection-per-request"], &["fresh"]);
            format!("    connections: {policy}\n")
        });
        text += &self.optional(20, |g| {
            let fault = match g.rng.below(4) {
                0 => "foreignClientCert: {}".to_owned(),
                1 => format!("gatewayDown: {{ cluster: {cluster} }}"),
                2 => format!(
                    "scale: {{ cluster: {cluster}, service: {to}, replicas: {} }}",
                    g.number(2)
                ),
                _ => format!(
                    "delay: {{ cluster: {cluster}, service: {to}, millis: {} }}",
                    g.number(100)
                ),
            };
            format!("    faults: [{{ {fault} }}]\n")
        });
        text += &self.optional(25, |g| {
            let rate = 1 + g.rng.below(1000);
            let mut actions = format!("    ratePerSecond: {}\n", g.number(rate));
            if g.rng.chance(20) {
                let bucket = 10 + g.rng.below(1000);
                actions += &format!("    bucketMillis: {}\n", g.number(bucket));
            }
            actions += "    actions:\n";
            let mut at = 0;
            for index in 0..1 + g.rng.below(3) {
                at += g.rng.below(300);
                let change = match g.rng.below(7) {
                    0 => format!("stopGateway: {{ cluster: {} }}", g.string(&cluster)),
                    1 => format!("startGateway: {{ cluster: {} }}", g.string(&cluster)),
                    2 => format!("partition: {{ cluster: {} }}", g.string(&cluster)),
                    3 => format!(
                        "scale: {{ cluster: {}, service: {}, replicas: {} }}",
                        g.string(&cluster),
                        g.string(&to),
                        g.number(3)
                    ),
                    4 => format!(
                        "delay: {{ cluster: {cluster}, service: {to}, millis: {} }}",
                        g.number(50)
                    ),
                    5 => format!(
                        "kill: {{ cluster: {cluster}, pod: {}, container: {} }}",
                        g.string("bar-0"),
                        g.choice(&["sidecar", "app"], &["init"])
                    ),
                    _ => format!("rotateIntermediate: {{ cluster: {} }}", g.string(&cluster)),
                };
                actions += &format!(
                    "      - {{ atMillis: {}, name: {}, {change} }}\n",
                    g.number(at),
                    g.string(&format!("a{index}"))
                );
            }
            actions
        });
        text += &self.optional(60, |g| {
            let mut expect = String::from("    expect:\n");
            for field in ["mtlsRateAtLeast", "successRateAtLeast", "successRateAtMost"] {
                if g.rng.chance(30) {
                    let value = g.choice(&["1.0", "0.5", "0"], &["1.5", "-0.1", ".nan", "\"1\""]);
                    expect += &format!("      {field}: {value}\n");
                }
            }
            for field in ["maxSkewRatioAtMost", "maxSkewRatioAtLeast"] {
                if g.rng.chance(30) {
                    let value = g.choice(&["1.0", "1.3", "2"], &["0.5", ".inf", ".nan"]);
                    expect += &format!("      {field}: {value}\n");
                }
            }
            if g.rng.chance(30) {
                expect += &format!("      clustersReached: [{}]\n", g.string(&cluster));
            }
            if g.rng.chance(20) {
                expect += &format!("      serverTlsFailuresAtLeast: {}\n", g.number(1));
            }
            if g.rng.chance(15) {
                let from = g.rng.below(500);
                let to = from + 1 + g.rng.below(500);
                expect += &format!(
                    "      windows: [{{ fromMillis: {}, toMillis: {}, successRateAtLeast: {}, callsToClusterAtMost: {{ cluster: {}, calls: {} }} }}]\n",
                    g.number(from),
                    g.number(to),
                    g.choice(&["1.0", "0.5"], &["2", ".nan"]),
                    g.string(&cluster),
                    g.number(0)
                );
            }
            if g.rng.chance(10) {
                expect += &format!(
                    "      everyBucket: {{ successRateAtLeast: {} }}\n",
                    g.choice(&["0.9", "0"], &["-1"])
                );
            }
            if g.rng.chance(10) {
                expect += &format!(
                    "      recovery: {{ after: {}, successRateAtLeast: 0.9, withinMillis: {} }}\n",
                    g.string("a0"),
                    g.number(1000)
                );
            }
            if g.rng.chance(10) {
                expect += &format!("      convergenceMillisAtMost: {}\n", g.number(1000));
            }
            expect
        });
        text
    }
}

/// What a phase needs to know about a generated service.
struct ServiceDraft {
    reference: String,
    ports: Vec<String>,
    with_pods: Vec<String>,
}

/// `text` as a YAML scalar: plain when that reads back as the same string, else double-quoted
/// (JSON strings are YAML double-quoted scalars).
fn quote(rng: &mut Rng, text: &str) -> String {
    let plain = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && text.starts_with(|c: char| c.is_ascii_alphabetic());
    if plain && rng.chance(80) {
        text.to_owned()
    } else {
        serde_json::to_string(text).expect("a string serialises")
    }
}

/// Breaks `text` a few times: deletes, duplicates or swaps ranges, splices YAML tokens, cuts it.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len() as u64) as usize;
        let len = (1 + rng.below(24) as usize).min(bytes.len() - at);
        match rng.below(6) {
            0 => {
                bytes.drain(at..at + len);
            }
            1 => {
                let copy = bytes[at..at + len].to_vec();
                bytes.splice(at..at, copy);
            }
            2 => {
                let token = rng.pick(YAML_TOKENS).as_bytes().to_vec();
                bytes.splice(at..at, token);
            }
            3 => bytes.truncate(at),
            4 => bytes[at] = rng.next() as u8,
            _ => {
                let digits = rng.pick(ODD_NUMBERS).as_bytes().to_vec();
                bytes.splice(at..at + len, digits);
            }
        }
    }
    // The loader takes text: make it UTF-8 the way a reader would see it.
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A YAML alias bomb ("billion laughs") placed where the loader reads a list of strings.
fn alias_bomb(rng: &mut Rng, valid: &str) -> String {
    let levels = 4 + rng.below(8);
    let mut bomb = String::from("\n      clustersReached: &l0 [a, a, a, a, a, a, a, a, a, a]\n");
    for level in 1..=levels {
        let refs = vec![format!("*l{}", level - 1); 10].join(", ");
        bomb += &format!("      x{level}: &l{level} [{refs}]\n");
    }
    if valid.contains("    expect:\n") {
        valid.replacen("    expect:\n", &format!("    expect:{bomb}"), 1)
    } else {
        format!("bomb: &l0 [a, a]\n{valid}{}", bomb.replace("      ", ""))
    }
}

/// One case: load, and when it loads, lay out, plan, render and summarise. Panics on a broken
/// property; returns the refusal message, or `None` when the scenario was accepted.
fn check(text: &str) -> Option<String> {
    match scenario::parse(Path::new("fuzz.yaml"), text) {
        Err(error) => {
            let shown = error.to_string();
            assert!(
                !shown.chars().any(char::is_control),
                "an error message carries a raw control character: {shown:?}"
            );
            // Only a text over the size cap has no position: it is refused before it is read.
            assert!(
                error.has_position() || text.len() as u64 > scenario::MAX_INPUT_BYTES,
                "an error in text that was read has a position: {shown:?}"
            );
            Some(error.message)
        }
        Ok(scenario) => {
            let layout = topology::topology(&scenario);
            assert!(layout.is_ok(), "a valid scenario must lay out: {:?}", layout.err());
            let inventory = inventory::from_scenario(&scenario);
            let plan = plan::plan(&scenario, &inventory);
            plan::render(&plan).expect("a valid plan renders");
            let _ = plan::summary(&plan);
            None
        }
    }
}

struct Totals {
    cases: u64,
    accepted: u64,
    slowest: Duration,
    /// Refusals by the start of their message, to see what the generator reaches.
    refusals: std::collections::BTreeMap<String, u64>,
}

fn run(seed: u64, budget: Budget) -> Totals {
    let started = Instant::now();
    let mut totals = Totals {
        cases: 0,
        accepted: 0,
        slowest: Duration::ZERO,
        refusals: std::collections::BTreeMap::new(),
    };
    loop {
        match budget {
            Budget::Cases(cases) if totals.cases >= cases => break,
            Budget::Time(time) if started.elapsed() >= time => break,
            _ => {}
        }
        let case_seed = seed.wrapping_add(totals.cases);
        let mut rng = Rng(case_seed);
        let oddness = *rng.pick(&[0, 0, 2, 5, 20]);
        let valid = Generator { rng: &mut rng, oddness }.scenario();
        let text = match rng.below(10) {
            0..=5 => valid,
            6..=8 => mutate(&mut rng, &valid),
            _ => alias_bomb(&mut rng, &valid),
        };
        let case_started = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(&text)));
        totals.slowest = totals.slowest.max(case_started.elapsed());
        match outcome {
            Ok(None) => totals.accepted += 1,
            Ok(Some(message)) => {
                if std::env::var_os("MESHFED_FUZZ_DEBUG").is_some() {
                    eprintln!("{message}");
                }
                let kind: String = message.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
                *totals.refusals.entry(kind).or_default() += 1;
            }
            Err(_) => {
                let saved = std::env::temp_dir().join(format!("meshfed-fuzz-failure-{case_seed}.yaml"));
                let _ = std::fs::write(&saved, &text);
                panic!(
                    "case with seed {case_seed} broke a property (text saved to {}); rerun it with \
                     MESHFED_FUZZ_SEED={case_seed}",
                    saved.display()
                );
            }
        }
        totals.cases += 1;
    }
    totals
}

#[derive(Clone, Copy)]
enum Budget {
    Cases(u64),
    Time(Duration),
}

#[test]
fn loader_and_planner_never_panic_nor_allocate_over_512_mib() {
    let seed = std::env::var("MESHFED_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x6d65_7368_6665_6400);
    let budget = match std::env::var("MESHFED_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()) {
        Some(seconds) => Budget::Time(Duration::from_secs(seconds)),
        None => Budget::Cases(1500),
    };
    let started = Instant::now();
    let totals = run(seed, budget);
    println!(
        "scenario fuzz: seed {seed}, {} cases in {:.1} s, {} accepted and planned, {} refused; slowest case {:.3} s; \
         largest allocation {} bytes; peak live heap of the test process {} bytes",
        totals.cases,
        started.elapsed().as_secs_f64(),
        totals.accepted,
        totals.cases - totals.accepted,
        totals.slowest.as_secs_f64(),
        LARGEST_ALLOCATION.load(Ordering::Relaxed),
        PEAK_BYTES.load(Ordering::Relaxed),
    );
    let mut refusals: Vec<(&String, &u64)> = totals.refusals.iter().collect();
    refusals.sort_by(|a, b| b.1.cmp(a.1));
    for (kind, count) in refusals.iter().take(25) {
        println!("  {count:>8}  {kind}");
    }
    println!("  ({} kinds of refusal)", refusals.len());
    // The generator must reach the planner, or the test would only test the refusals.
    assert!(
        totals.accepted * 10 >= totals.cases,
        "only {} of {} cases were valid scenarios",
        totals.accepted,
        totals.cases
    );
    assert!(totals.accepted < totals.cases, "no case was refused");
}

/// A scenario at the bounds (most clusters, services and pods, and nearly the most ports in the
/// plan) plans and renders without any allocation over the limit.
#[test]
fn largest_allowed_scenario_plans_within_the_allocation_limit() {
    let mut text = String::from("name: largest\nclusters:\n");
    for index in 0..MAX_CLUSTERS {
        text += &format!(
            "  - {{ name: c{index}, podCidr: 10.{index}.0.0/16, serviceCidr: 10.{}.0.0/16 }}\n",
            100 + index
        );
    }
    text += "services:\n";
    let ports_per_service = (MAX_PLANNED_PORTS as usize / MAX_CLUSTERS / MAX_SERVICES).max(1);
    let pods_per_service = MAX_PODS as usize / MAX_SERVICES;
    let ports: Vec<String> = (0..ports_per_service)
        .map(|port| format!("{{ name: p{port}, number: {}, protocol: http }}", 1000 + port))
        .collect();
    for index in 0..MAX_SERVICES {
        text += &format!(
            "  - {{ name: s{index}, namespace: ns{}, ports: [{}], replicas: {{ c{}: {pods_per_service} }} }}\n",
            index % 20,
            ports.join(", "),
            index % MAX_CLUSTERS
        );
    }
    let started = Instant::now();
    let scenario = scenario::parse(Path::new("largest.yaml"), &text).unwrap_or_else(|error| panic!("{error}"));
    let plan = plan::plan(&scenario, &inventory::from_scenario(&scenario));
    let planned = started.elapsed();
    let files = plan::render(&plan).unwrap();
    let bytes: usize = files.iter().map(|file| file.yaml.len()).sum();
    println!(
        "largest scenario: {} bytes of YAML, {MAX_CLUSTERS} clusters, {MAX_SERVICES} services, {} pods; \
         {} files, {bytes} bytes rendered; planned in {:.1} s, rendered in {:.1} s; largest allocation {} bytes, \
         peak live heap {} bytes",
        text.len(),
        pods_per_service * MAX_SERVICES,
        files.len(),
        planned.as_secs_f64(),
        (started.elapsed() - planned).as_secs_f64(),
        LARGEST_ALLOCATION.load(Ordering::Relaxed),
        PEAK_BYTES.load(Ordering::Relaxed),
    );
    assert!(
        text.len() as u64 <= scenario::MAX_INPUT_BYTES,
        "the largest scenario fits the input cap"
    );
    assert_eq!(
        files.len(),
        plan.clusters.iter().map(|cluster| cluster.objects.len()).sum::<usize>()
    );
}
