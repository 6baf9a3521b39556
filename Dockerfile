# syntax=docker/dockerfile:1
# One image with the three binaries: `stayler-api` (the default command), `stayler-worker`
# and `stayler-scheduler`.
#
#     docker build -t stayler-storage .
#     docker run --rm stayler-storage stayler-api mint-token --role user   # with STAYLER_* env
#
# Configuration comes from STAYLER_* environment variables (see compose.yaml) or a YAML file
# named by STAYLER_CONFIG (or --config). Images and backups live under the /data volume;
# /backups is there, owned by the service's user, for a volume of its own (compose.yaml): a
# named volume takes the owner of the folder it is mounted on.

# Pinned: a new Rust release never changes an image built from the same commit. The runtime
# stage is the same Debian release, so the binaries find the libraries they were linked with.
FROM rust:1.95.0-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libturbojpeg0-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Queries are checked at compile time against the committed .sqlx/ metadata, not a database.
# The image's binaries are stripped of symbols and debug info, for a smaller image; the
# workspace's release profile keeps line tables for profiling outside images.
ENV SQLX_OFFLINE=true \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols

# Dependencies first, built against empty crates: this layer is reused until Cargo.toml or
# Cargo.lock change. Keep the member list in step with the workspace.
COPY Cargo.toml Cargo.lock ./
COPY shared/Cargo.toml shared/build.rs shared/
COPY api/Cargo.toml api/
COPY worker/Cargo.toml worker/
COPY scheduler/Cargo.toml scheduler/
COPY e2e/Cargo.toml e2e/
RUN mkdir -p shared/src shared/benches api/src worker/src scheduler/src e2e/src \
 && touch shared/src/lib.rs api/src/lib.rs worker/src/lib.rs scheduler/src/lib.rs e2e/src/lib.rs \
 && for main in api/src/main.rs worker/src/main.rs scheduler/src/main.rs shared/benches/thumbnails.rs; do echo 'fn main() {}' > "$main"; done \
 && for crate in shared api scheduler e2e; do mkdir -p "$crate/tests" && touch "$crate/tests/main.rs"; done \
 && cargo build --release --locked --bins \
 && rm -rf shared/src shared/benches api/src worker/src scheduler/src e2e/src

# Then the sources. Touched so cargo rebuilds the workspace crates over the empty ones.
COPY .sqlx .sqlx
COPY migrations migrations
COPY shared shared
COPY api api
COPY worker worker
COPY scheduler scheduler
COPY e2e e2e
# Test sources stay out of the image (.dockerignore); the manifests name their entry files.
RUN for crate in shared api scheduler e2e; do mkdir -p "$crate/tests" && touch "$crate/tests/main.rs"; done \
 && find shared api worker scheduler -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bins \
 && cp target/release/stayler-api target/release/stayler-worker target/release/stayler-scheduler /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libturbojpeg0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin stayler \
 && mkdir -p /data/storage /data/backups /backups \
 && chown -R stayler:stayler /data /backups
COPY --from=builder /usr/local/bin/stayler-api /usr/local/bin/stayler-worker /usr/local/bin/stayler-scheduler /usr/local/bin/
# The volume is this image's storage; the server's defaults are 0.0.0.0:8080.
ENV STAYLER_STORAGE__BASE_PATH=/data/storage \
    STAYLER_STORAGE__BACKUP_PATH=/data/backups
USER stayler
WORKDIR /data
VOLUME /data
EXPOSE 8080
CMD ["stayler-api"]
