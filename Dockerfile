# meshfed's workload image built from source. `meshfed run --provider kind` normally builds the
# same image from the running meshfed binary on debian:trixie-slim (src/provider/kind/workload_image.rs)
# and `kind load`s it; build this one instead when that binary needs a newer glibc, or to push it
# to your own registry for the kubeconfig provider:
#   docker build -t registry.example.com/meshfed-workload:dev . && docker push registry.example.com/meshfed-workload:dev
#   MESHFED_WORKLOAD_IMAGE=registry.example.com/meshfed-workload:dev meshfed run scenarios/seed.yaml --provider kind
FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin meshfed

FROM debian:bookworm-slim
COPY --from=build /src/target/release/meshfed /usr/local/bin/meshfed
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meshfed", "workload"]
