//! The up-front memory check of the `local` world: before a world is built, or pods are added to
//! it (`scale`, `joinCluster`), the Envoys and apps it would add must fit in what this machine can
//! still give (`MemAvailable`), each counted at its measured proportional set size (PSS). The check
//! says how many pods fit either way, so a refused scenario says how far to shrink it.

use super::LocalProvider;
use crate::provider::local::memory;

/// PSS of one Envoy in a large world, in KiB: the median over the 205 Envoys of
/// `scenarios/scale-4x50.yaml` after its traffic was 15.0 MiB, measured by `cargo bench --bench
/// scale` (Envoy 1.40.0, 2 workers, Istio's stats inclusion list, 2026-12-03; it includes the
/// Envoy's 1/205 share of the binary's ~48 MiB of text, which a smaller world shares fewer ways,
/// hence 16). The bench prints the measured figure next to this one: update it when they part.
pub const ENVOY_PSS_KIB: u64 = 16 * 1024;
/// PSS of one echo app (`meshfed workload echo`) in the same world, in KiB: 395 MiB for 201 apps
/// and the client, measured the same way.
pub const APP_PSS_KIB: u64 = 2 * 1024;
/// What is kept for everything else (meshfed, the client, the kernel's namespaces, veths and
/// sockets, other programs): a tenth of `MemAvailable`, at least this much.
const MIN_RESERVE_KIB: u64 = 256 * 1024;

/// What a world (or a change) adds: pods (an app and its sidecar each) and gateways (an Envoy each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// Pods added.
    pub pods: usize,
    /// Gateways added.
    pub gateways: usize,
}

/// Checks `demand` against `available_kib` (`MemAvailable`). `Ok` says how many pods fit (for the
/// progress line); `Err` is the refusal, naming the need, what is available and how many pods fit.
pub fn check_memory(demand: Demand, available_kib: u64) -> Result<String, String> {
    let reserve = (available_kib / 10).max(MIN_RESERVE_KIB);
    let usable = available_kib.saturating_sub(reserve);
    let per_pod = ENVOY_PSS_KIB + APP_PSS_KIB;
    let needed = demand.pods as u64 * per_pod + demand.gateways as u64 * ENVOY_PSS_KIB;
    let fit = usable.saturating_sub(demand.gateways as u64 * ENVOY_PSS_KIB) / per_pod;
    let mib = |kib: u64| kib.div_ceil(1024);
    let need = format!(
        "{} pods and {} gateways need about {} MiB ({} MiB per pod: its Envoy and app; {} MiB per gateway; \
         measured PSS)",
        demand.pods,
        demand.gateways,
        mib(needed),
        mib(per_pod),
        mib(ENVOY_PSS_KIB)
    );
    let have = format!(
        "this machine has {} MiB available (MemAvailable in /proc/meminfo), {} MiB of it kept in reserve",
        mib(available_kib),
        mib(reserve)
    );
    if needed <= usable {
        Ok(format!("memory: {need}; {have}: about {fit} pods fit"))
    } else {
        Err(format!(
            "not enough memory: {need}, but {have}: about {fit} pods fit with these {} gateways; use fewer \
             replicas or free memory",
            demand.gateways
        ))
    }
}

/// [`check_memory`] against this machine's `MemAvailable` now.
pub fn check_memory_now(demand: Demand) -> Result<String, String> {
    let available = memory::mem_available_kib()
        .map_err(|error| format!("cannot tell whether the world fits in memory: reading /proc/meminfo: {error}"))?;
    check_memory(demand, available)
}

/// What the world's processes hold, counted as PSS ([`LocalProvider::memory`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorldMemory {
    /// PSS of each running Envoy (sidecars and gateways), KiB.
    pub envoys_pss_kib: Vec<u64>,
    /// PSS of every other running process of the world summed (apps, clients), KiB.
    pub others_pss_kib: u64,
}

impl WorldMemory {
    /// The Envoys' PSS summed, KiB.
    pub fn envoys_total_kib(&self) -> u64 {
        self.envoys_pss_kib.iter().sum()
    }
}

impl LocalProvider {
    /// The PSS of the world's running Envoys, each, and of its other processes together: what the
    /// world costs this machine, shared pages (the Envoy binary's text) split between the
    /// processes that map them. A process that exits while it is read counts nothing.
    pub fn memory(&mut self) -> WorldMemory {
        let Some(world) = self.world.as_mut() else {
            return WorldMemory::default();
        };
        let names: Vec<String> = world.proxies.values().map(|proxy| proxy.name.clone()).collect();
        let envoy_pids: Vec<u32> = names
            .iter()
            .filter_map(|name| {
                let id = world.supervisor.running_named(name)?;
                Some(world.supervisor.pid(id))
            })
            .collect();
        let envoys_pss_kib = envoy_pids.iter().filter_map(|pid| memory::pss_kib(*pid).ok()).collect();
        let others_pss_kib = world
            .supervisor
            .pids()
            .into_iter()
            .filter(|pid| !envoy_pids.contains(pid))
            .filter_map(|pid| memory::pss_kib(pid).ok())
            .sum();
        WorldMemory {
            envoys_pss_kib,
            others_pss_kib,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024;

    /// MiB the check prints for `pods` and `gateways`, and the pods that fit in `usable_kib`.
    fn expected(pods: u64, gateways: u64, usable_kib: u64) -> (u64, u64) {
        let per_pod = ENVOY_PSS_KIB + APP_PSS_KIB;
        (
            (pods * per_pod + gateways * ENVOY_PSS_KIB).div_ceil(1024),
            (usable_kib - gateways * ENVOY_PSS_KIB) / per_pod,
        )
    }

    #[test]
    fn a_world_that_fits_says_how_many_pods_would() {
        let said = check_memory(Demand { pods: 201, gateways: 4 }, 20 * GIB).unwrap();
        // A tenth of 20 GiB is kept in reserve.
        let (need, fit) = expected(201, 4, 18 * GIB);
        assert!(
            said.contains(&format!("201 pods and 4 gateways need about {need} MiB")),
            "{said}"
        );
        assert!(said.contains(&format!("about {fit} pods fit")), "{said}");
        assert!(said.contains("20480 MiB available"), "{said}");
    }

    #[test]
    fn a_world_too_large_for_the_memory_is_refused_saying_how_many_pods_fit() {
        let refusal = check_memory(Demand { pods: 201, gateways: 4 }, 2 * GIB).unwrap_err();
        // 256 MiB in reserve: more than a tenth of 2 GiB.
        let (need, fit) = expected(201, 4, 2 * GIB - 256 * 1024);
        assert!(
            refusal.starts_with(&format!(
                "not enough memory: 201 pods and 4 gateways need about {need} MiB"
            )),
            "{refusal}"
        );
        assert!(
            refusal.contains("2048 MiB available (MemAvailable in /proc/meminfo)"),
            "{refusal}"
        );
        assert!(
            refusal.contains(&format!("about {fit} pods fit with these 4 gateways")),
            "{refusal}"
        );
        assert!(fit < 201, "{fit}");
        assert!(refusal.contains("use fewer replicas"), "{refusal}");
    }

    #[test]
    fn the_boundary_is_the_usable_memory_exactly() {
        let available = 10 * GIB;
        let usable = available - available / 10;
        let pods = ((usable - ENVOY_PSS_KIB) / (ENVOY_PSS_KIB + APP_PSS_KIB)) as usize;
        assert!(check_memory(Demand { pods, gateways: 1 }, available).is_ok());
        assert!(
            check_memory(
                Demand {
                    pods: pods + 1,
                    gateways: 1
                },
                available
            )
            .is_err()
        );
    }

    /// The shipped large world: valid, runnable on `local`, 205 Envoys, and within a 16 GiB
    /// runner's memory (GitHub's Linux runners) with room to spare.
    #[test]
    fn the_4x50_scenario_is_valid_for_local_and_fits_a_16_gib_machine() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/scale-4x50.yaml");
        let scenario = crate::scenario::load(&path).unwrap_or_else(|error| panic!("{error}"));
        crate::driver::check_runnable(&scenario, &path, &super::super::LocalProvider::CAPABILITIES)
            .unwrap_or_else(|error| panic!("{error}"));
        let topology = crate::provider::local::topology::topology(&scenario).unwrap();
        let demand = Demand {
            pods: topology.clusters.iter().map(|cluster| cluster.pods.len()).sum(),
            gateways: topology.clusters.len(),
        };
        assert_eq!(demand, Demand { pods: 201, gateways: 4 }, "205 Envoys");
        check_memory(demand, 12 * GIB).unwrap();
    }

    #[test]
    fn nothing_added_always_fits() {
        assert!(check_memory(Demand { pods: 0, gateways: 0 }, 0).is_ok());
    }
}
