# toxmail-bridge and toxmail-relay on Debian 12, for docker-compose.yml (docs/postfix.md, "Docker").
# Not built in CI (no Docker engine there); scripts/deploy-check.sh validates the compose files.

FROM rust:1.95-bookworm AS build
# bindgen reads Debian's tox.h (c-toxcore 0.2.18) at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libtoxcore-dev libclang-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p toxmail-bridge -p toxmail-relay

FROM debian:bookworm-slim
# libtoxcore2 (with libsodium23) is the only library the binaries link besides libc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libtoxcore2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# One unprivileged user for both daemons; fresh named volumes take these directories' owner.
RUN useradd --system --user-group --home-dir /var/lib/toxmail --shell /usr/sbin/nologin toxmail \
 && install -d -o toxmail -g toxmail -m 0700 /var/lib/toxmail /var/lib/toxmail-relay
COPY --from=build /src/target/release/toxmail-bridge /src/target/release/toxmail-relay /usr/bin/
COPY deploy/docker/bridge-start.sh deploy/docker/ready.sh /usr/lib/toxmail/
USER toxmail
CMD ["/usr/lib/toxmail/bridge-start.sh"]
