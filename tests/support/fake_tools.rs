//! Fake `kind`, `docker` and `istioctl` executables for tests of the `kind` provider: small
//! shell scripts written into a temp dir that append their arguments (and stdin where the real
//! tool reads it) to one log and answer as the real tools do. Their state (kind's cluster list,
//! the configs kind was given) lives in files next to them, with absolute paths baked in, so tests
//! running in parallel never share anything.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `docker network inspect kind` as Docker 27 prints it (IPv6 subnet first, one node attached):
/// a JSON array of the network's resource, as in the Docker CLI reference for `docker network
/// inspect`, with `IPAM.Config[].Subnet` and `Containers.<id>.IPv4Address` in CIDR form, and the
/// dual-stack subnets kind v0.30.0 asks for (`pkg/cluster/internal/providers/docker/network.go`).
pub const NETWORK_INSPECT: &str = r#"[
    {
        "Name": "kind",
        "Id": "5d1f0e6c2b1b",
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": true,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [
                { "Subnet": "fc00:f853:ccd:e793::/64" },
                { "Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1" }
            ]
        },
        "Containers": {
            "0b3a": { "Name": "unrelated-control-plane", "IPv4Address": "172.18.0.2/16", "IPv6Address": "fc00:f853:ccd:e793::2/64" }
        },
        "Options": { "com.docker.network.bridge.enable_ip_masquerade": "true" },
        "Labels": {}
    }
]"#;

/// A temp dir with `bin/` (the fakes), `state/` and `log`.
pub struct FakeTools {
    /// The root, removed on drop.
    pub root: PathBuf,
}

impl Drop for FakeTools {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn write_script(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl FakeTools {
    /// Fakes in a new temp dir named after `test`; kind lists `existing` clusters; `kind create
    /// cluster` waits (10 s at most) until `parallel` creations have started, so a sequential
    /// creation fails.
    pub fn new(test: &str, existing: &[&str], parallel: usize) -> FakeTools {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let root = std::env::temp_dir().join(format!("meshfed-fake-{test}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(root.join("state")).unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("log"), "").unwrap();
        let clusters: String = existing.iter().map(|name| format!("{name}\n")).collect();
        std::fs::write(root.join("state/clusters"), clusters).unwrap();
        let tools = FakeTools { root };
        tools.write_kind(parallel);
        tools.write_docker(true);
        tools
    }

    /// The directory to put on `PATH`.
    pub fn bin(&self) -> PathBuf {
        self.root.join("bin")
    }

    /// `PATH` for a test: the fakes first, then the system's basic tools (the fake scripts use
    /// `cat`, `cp`, `grep`, `sed`), where no kind, docker or istioctl is.
    pub fn path(&self) -> String {
        format!("{}:/usr/bin:/bin", self.bin().display())
    }

    /// What the fakes recorded, one line per call (stdin lines indented with `|`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("log")).unwrap()
    }

    /// kind's cluster list now.
    pub fn clusters(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("state/clusters"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The config `kind create cluster` got for `kind_name`.
    pub fn kind_config_given(&self, kind_name: &str) -> String {
        std::fs::read_to_string(self.root.join(format!("state/config-{kind_name}.yaml"))).unwrap()
    }

    /// The IstioOperator `istioctl install` got for `cluster`'s context.
    pub fn operator_given(&self, context: &str) -> String {
        std::fs::read_to_string(self.root.join(format!("state/operator-{context}.yaml"))).unwrap()
    }

    /// When the last `istioctl install` for `context` started and ended (Unix time).
    pub fn install_times(&self, context: &str) -> (std::time::SystemTime, std::time::SystemTime) {
        let read = |what: &str| {
            let nanos: u64 = std::fs::read_to_string(self.root.join(format!("state/install-{what}-{context}")))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos)
        };
        (read("started"), read("ended"))
    }

    fn write_kind(&self, parallel: usize) {
        let log = self.root.join("log");
        let state = self.root.join("state");
        write_script(
            &self.bin().join("kind"),
            &format!(
                r#"#!/bin/sh
log='{log}'; state='{state}'
printf 'kind %s\n' "$*" >> "$log"
case "$1 $2" in
  # kind v0.30.0 pkg/cmd/kind/version/version.go DisplayVersion: "kind v<version> <go> <os>/<arch>".
  "version ") echo "kind v0.30.0 go1.24.6 linux/amd64" ;;
  # kind v0.30.0 pkg/cmd/kind/get/clusters/clusters.go: one name per line on stdout, or the
  # logger's "No kind clusters found." (stderr) when there are none.
  "get clusters")
    if [ -s "$state/clusters" ]; then cat "$state/clusters"; else echo "No kind clusters found." >&2; fi ;;
  "create cluster")
    name="$4"; image="$6"; config="$8"; kubeconfig="${{10}}"
    echo "$name $image" >> "$state/images-created"
    cp "$config" "$state/config-$name.yaml" || exit 1
    touch "$state/started-$name"
    tries=0
    while [ "$(ls "$state" | grep -c '^started-')" -lt {parallel} ]; do
      tries=$((tries + 1))
      if [ $tries -gt 100 ]; then echo "ERROR: clusters were not created in parallel" >&2; exit 1; fi
      sleep 0.05
    done
    echo "$name" >> "$state/clusters"
    printf 'apiVersion: v1\nkind: Config\ncurrent-context: kind-%s\n' "$name" > "$kubeconfig"
    echo "Creating cluster \"$name\" ..." >&2 ;;
  "export kubeconfig")
    name="$4"; kubeconfig="$6"
    grep -qx "$name" "$state/clusters" || {{ echo "ERROR: could not locate any control plane nodes for cluster named '$name'" >&2; exit 1; }}
    printf 'apiVersion: v1\nkind: Config\ncurrent-context: kind-%s\n' "$name" > "$kubeconfig"
    echo "Set kubectl context to \"kind-$name\"" >&2 ;;
  "delete cluster")
    name="$4"
    grep -vx "$name" "$state/clusters" > "$state/clusters.new"; mv "$state/clusters.new" "$state/clusters"
    echo "Deleting cluster \"$name\" ..." >&2 ;;
  # kind v0.30.0 pkg/cmd/kind/load/image-archive/image-archive.go: silent on success, `no nodes
  # found for cluster "NAME"` when the cluster does not exist.
  "load image-archive")
    archive="$3"; name="$5"
    [ -f "$archive" ] || {{ echo "ERROR: failed to load image: open $archive: no such file or directory" >&2; exit 1; }}
    grep -qx "$name" "$state/clusters" || {{ echo "ERROR: no nodes found for cluster \"$name\"" >&2; exit 1; }}
    echo "$name $(cat "$archive")" >> "$state/loaded" ;;
  *) echo "fake kind: unexpected arguments: $*" >&2; exit 64 ;;
esac
"#,
                log = log.display(),
                state = state.display(),
            ),
        );
    }

    /// A docker whose engine answers (`engine_up`) or does not, as the real CLI says it.
    pub fn write_docker(&self, engine_up: bool) {
        let log = self.root.join("log");
        let info = if engine_up {
            "echo 27.3.1".to_owned()
        } else {
            "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1"
                .to_owned()
        };
        write_script(
            &self.bin().join("docker"),
            &format!(
                r#"#!/bin/sh
log='{log}'; state='{state}'
printf 'docker %s\n' "$*" >> "$log"
case "$1" in
  info) {info} ;;
  network) [ "$2 $3" = "inspect kind" ] || exit 64
    cat <<'JSON'
{NETWORK_INSPECT}
JSON
    ;;
  build) sed 's/^/  | /' >> "$log"; echo "naming to docker.io/library/$3 done" >&2 ;;
  image)
    case "$2" in
      ls) [ "$4" = "label=io.meshfed.managed-by=meshfed" ] || exit 64; cat "$state/images" 2>/dev/null ;;
      rm) grep -vx "$3" "$state/images" > "$state/images.new"; mv "$state/images.new" "$state/images"; echo "Untagged: $3" ;;
      *) exit 64 ;;
    esac ;;
  inspect) n=$(printf '%s' "$4" | cksum | cut -d' ' -f1); echo "172.18.0.$((n % 200 + 3))" ;;
  # `docker save --output FILE IMAGE` writes the archive and prints nothing (docker CLI reference,
  # `docker image save`).
  save) [ "$2" = "--output" ] || exit 64; printf 'archive of %s\n' "$4" > "$3" ;;
  # `docker exec NODE ip route replace unreachable CIDR`: `ip route replace` prints nothing on
  # success; a container that does not exist is the daemon's "No such container".
  exec)
    node="$2"
    grep -qx "${{node%-control-plane}}" "$state/clusters" || {{ echo "Error response from daemon: No such container: $node" >&2; exit 1; }}
    [ "$3 $4 $5 $6" = "ip route replace unreachable" ] || exit 64
    echo "$node $7" >> "$state/routes" ;;
  *) echo "fake docker: unexpected arguments: $*" >&2; exit 64 ;;
esac
"#,
                log = log.display(),
                state = self.root.join("state").display(),
            ),
        );
    }

    /// The images the fake docker lists for meshfed's label.
    pub fn set_labelled_images(&self, images: &[&str]) {
        let list: String = images.iter().map(|image| format!("{image}\n")).collect();
        std::fs::write(self.root.join("state/images"), list).unwrap();
    }

    /// `KIND_CLUSTER IMAGE` per `kind create cluster`, as `--image` named it.
    pub fn node_images_created(&self) -> Vec<String> {
        let mut lines: Vec<String> = std::fs::read_to_string(self.root.join("state/images-created"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// `NODE CIDR` per `unreachable` route added on a node, in order.
    pub fn unreachable_routes(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("state/routes"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `KIND_CLUSTER ARCHIVE-CONTENT` per image archive loaded.
    pub fn loaded_archives(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("state/loaded"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The labelled images left.
    pub fn labelled_images(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("state/images"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A fake istioctl of `version` at `path` (meshfed's cache layout).
    pub fn write_istioctl(&self, path: &Path, version: &str) {
        let log = self.root.join("log");
        let state = self.root.join("state");
        write_script(
            path,
            &format!(
                r#"#!/bin/sh
log='{log}'; state='{state}'
printf 'istioctl-{version} %s\n' "$*" >> "$log"
case "$1" in
  # istio/istio pkg/version/cobra.go (CobraCommandWithOptions): with no remote version, `--short`
  # prints the client's version alone; without it, the BuildInfo long form.
  version)
    case " $* " in
      *" --short "*) echo "{version}" ;;
      *) echo 'version.BuildInfo{{Version:"{version}", GitRevision:"0000000000000000000000000000000000000000", GolangVersion:"go1.24.6", BuildStatus:"Clean", GitTag:"{version}"}}' ;;
    esac ;;
  install)
    context=""; file=""
    while [ $# -gt 0 ]; do
      case "$1" in --context) context="$2"; shift ;; --filename) file="$2"; shift ;; esac
      shift
    done
    cp "$file" "$state/operator-$context.yaml" || exit 1
    # istioctl install returns once every component is ready, up to --readiness-timeout
    # ("Maximum time to wait for Istio resources in each component to be ready", 5m0s by
    # default: istio/istio operator/cmd/mesh/install.go, addInstallFlags), then prints
    # "Installation complete". When it started and ended is kept for the tests to compare with.
    date +%s%N > "$state/install-started-$context"
    sleep 0.2
    echo "✔ Istio core installed"; echo "✔ Installation complete"
    date +%s%N > "$state/install-ended-$context" ;;
  create-remote-secret)
    printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: istio-remote-secret-%s\n  namespace: istio-system\n' "$7" ;;
  *) echo "fake istioctl: unexpected arguments: $*" >&2; exit 64 ;;
esac
"#,
                log = log.display(),
                state = state.display(),
            ),
        );
    }
}
