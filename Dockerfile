# cistern's container image: `cistern serve` as PID 1 in front of the host's
# daemon (README, "Container image", has the `docker run` line).
#
#   docker build -t cistern .                    # compiles cistern in `build`
#   docker build --target prebuilt -t cistern .  # packages dist/cistern instead
#
# Two ways to the same runtime stage:
# - The default (the last stage) compiles cistern in a Rust image of the same
#   Debian suite, so the binary links against the glibc it runs with. This
#   needs `rust:1-<suite>` from a registry.
# - `--target prebuilt` copies a binary built on a host of the same Debian
#   suite: `cargo build --release --locked -p cistern && mkdir -p dist &&
#   objcopy --strip-debug target/release/cistern dist/cistern` (another path
#   in the context with `--build-arg CISTERN_BINARY=...`). For hosts without
#   a Rust image, and for tests/image.rs: no registry is reachable there, and
#   compiling from nothing in the build would take many minutes that the
#   host's own release build has spent already.
# Both take the runtime from `base`, the only stage they share, so the test
# runs what users run, down to the binary's origin.
#
# Stage order matters: the classic builder (DOCKER_BUILDKIT=0) runs every stage
# up to the target, whether the target needs it or not, so `prebuilt` comes
# before `build`. BuildKit runs only the stages the target needs.

# The host's Debian suite (`. /etc/os-release; echo $VERSION_CODENAME`).
ARG DEBIAN_SUITE=bookworm

FROM debian:${DEBIAN_SUITE}-slim AS base
# The caching proxy verifies origins against the operating system's trust
# store (/etc/ssl/certs/ca-certificates.crt); slim images have none.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY config/container.yaml /etc/cistern/cistern.yaml
# State (tenants' images, jobs, container sockets' records, the CA keys) and
# the disk cache: kept across upgrades by mounting the same volumes.
VOLUME ["/var/lib/cistern", "/var/cache/cistern"]
LABEL org.opencontainers.image.title="cistern" \
      org.opencontainers.image.description="A Docker API proxy that makes shared CI runners safe and fast" \
      org.opencontainers.image.licenses="Apache-2.0"
# Exec form: cistern itself is PID 1 and gets `docker stop`'s SIGTERM, on
# which it stops accepting, removes its sockets and lets requests under way
# finish for up to `shutdown_grace` (run with `--stop-timeout` above it).
# It starts no child processes, so there are no orphans to reap.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/cistern"]
CMD ["serve", "--config", "/etc/cistern/cistern.yaml"]

FROM base AS prebuilt
ARG CISTERN_BINARY=dist/cistern
COPY ${CISTERN_BINARY} /usr/local/bin/cistern

FROM rust:1-${DEBIAN_SUITE} AS build
WORKDIR /src
COPY . .
# Debug information stripped (the release profile keeps line tables for
# local profiling); symbols stay, so backtraces still name functions.
RUN cargo build --release --locked -p cistern \
    && objcopy --strip-debug target/release/cistern /cistern

FROM base
COPY --from=build /cistern /usr/local/bin/cistern
