# cistern's container image: `cistern serve` as PID 1 in front of the host's
# daemon (README, "Container image", has the `docker run` line).
#
#   docker build -t cistern .
#
# The binary comes from the `build` stage, in one of two ways:
# - by default it is compiled there, in a Rust image of the same Debian suite
#   as the runtime, so it links against the glibc it runs with; this needs
#   `rust:1-<suite>` from a registry;
# - with `--build-arg CISTERN_BINARY=dist/cistern --build-arg
#   BUILD_IMAGE=debian:bookworm-slim` it is a binary built on a host of the
#   same suite, copied from the build context: `cargo build --release
#   --locked -p cistern && mkdir -p dist && objcopy --strip-debug
#   target/release/cistern dist/cistern`. For hosts without a Rust image, and
#   for tests/image.rs: no registry is reachable there, and compiling from
#   nothing would take many minutes the host's build has spent already.
# Both end in the same runtime stage (the last), so the test runs what users
# run.
#
# A build argument rather than a stage per source, chosen with --target: the
# classic builder (the default of Debian's docker.io 20.10, or
# DOCKER_BUILDKIT=0) runs every stage up to the target, needed or not, so a
# `prebuilt` stage would break the default build where dist/ is empty.

# The host's Debian suite (`. /etc/os-release; echo $VERSION_CODENAME`).
ARG DEBIAN_SUITE=bookworm
# The image the `build` stage runs in.
ARG BUILD_IMAGE=rust:1-${DEBIAN_SUITE}

FROM ${BUILD_IMAGE} AS build
# A binary in the build context to package instead of compiling one.
ARG CISTERN_BINARY=
WORKDIR /src
COPY . .
# Compiled: debug information stripped (the release profile keeps line
# tables for local profiling); symbols stay, so backtraces name functions.
RUN set -eu; \
    if [ -n "$CISTERN_BINARY" ]; then \
        cp "$CISTERN_BINARY" /cistern; \
    else \
        cargo build --release --locked -p cistern; \
        objcopy --strip-debug target/release/cistern /cistern; \
    fi

FROM debian:${DEBIAN_SUITE}-slim
# The caching proxy verifies origins against the operating system's trust
# store (/etc/ssl/certs/ca-certificates.crt); slim images have none. A base
# that has it (tests/image.rs's, made by debootstrap) downloads nothing.
RUN if ! dpkg -s ca-certificates >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
        && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi
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
COPY --from=build /cistern /usr/local/bin/cistern
