# syntax=docker/dockerfile:1
#
# Baton's images: one target per role, all from one build.
#
#   coordinator    the `baton` CLI (`baton coordinator`, `baton submit`, `baton status`, …),
#                  built without default features: no bench, no chaos runner, no test
#                  harness, no SQLite
#   agent-nlu      baton-agent-nlu        agent-sql     baton-agent-sql
#   agent-rag      baton-agent-rag        agent-answer  baton-agent-answer
#   agent-sim      baton-agent-sim (the simulation agent; `--type` picks any agent type)
#
#   docker build --target coordinator -t baton:dev .
#   buildah bud --isolation chroot --target agent-sim -t baton-agent-sim:dev .
#
# Layers: `planner` reduces the workspace to a recipe (manifests and lock file only), `deps`
# compiles every dependency from that recipe, so a change to Baton's own code rebuilds only
# Baton's crates. The release profile is fat LTO with one codegen unit (Cargo.toml): a cold
# build takes 20+ minutes on 2 cores, a warm one (deps cached) a few.
#
# The runtime image is Debian slim with nothing added but the binary and the CA bundle; it
# runs as UID/GID 10001, never writes to its root filesystem (run it read-only; give it an
# emptyDir at /tmp if anything should ever need scratch space) and serves /livez, /readyz and
# /metrics on BATON_ADMIN_ADDR (0.0.0.0:9090).
#
# Both base images are build arguments so an air-gapped build can point them at a local
# mirror (docs/deploy.md, "Building the images").

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME:-/usr/local/cargo}/registry"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS deps
COPY --from=planner /src/recipe.json recipe.json
# The same package, feature and binary selections as the builds below, so the dependency
# builds they need are exactly the ones cached here.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
        -p baton-cli --no-default-features --bin baton \
    && cargo chef cook --release --locked --recipe-path recipe.json \
        -p baton-agents --bins

FROM deps AS build-coordinator
COPY . .
RUN cargo build --release -p baton-cli --no-default-features --bin baton \
    && install -D -m 0755 target/release/baton /out/baton

FROM deps AS build-agents
COPY . .
RUN cargo build --release --locked -p baton-agents --bins \
    && mkdir -p /out \
    && for agent in nlu sql rag answer sim; do \
         install -m 0755 "target/release/baton-agent-${agent}" /out/; \
       done

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=chef /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV BATON_ADMIN_ADDR=0.0.0.0:9090 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 9090

FROM runtime AS agent-nlu
COPY --from=build-agents /out/baton-agent-nlu /usr/local/bin/baton-agent-nlu
ENTRYPOINT ["/usr/local/bin/baton-agent-nlu"]

FROM runtime AS agent-sql
COPY --from=build-agents /out/baton-agent-sql /usr/local/bin/baton-agent-sql
ENTRYPOINT ["/usr/local/bin/baton-agent-sql"]

FROM runtime AS agent-rag
COPY --from=build-agents /out/baton-agent-rag /usr/local/bin/baton-agent-rag
ENTRYPOINT ["/usr/local/bin/baton-agent-rag"]

FROM runtime AS agent-answer
COPY --from=build-agents /out/baton-agent-answer /usr/local/bin/baton-agent-answer
ENTRYPOINT ["/usr/local/bin/baton-agent-answer"]

FROM runtime AS agent-sim
COPY --from=build-agents /out/baton-agent-sim /usr/local/bin/baton-agent-sim
ENTRYPOINT ["/usr/local/bin/baton-agent-sim"]

# Last, so a plain `docker build .` gives the coordinator.
FROM runtime AS coordinator
COPY --from=build-coordinator /out/baton /usr/local/bin/baton
ENTRYPOINT ["/usr/local/bin/baton"]
CMD ["coordinator"]
