#!/usr/bin/env bash
# Installs the Debian packages toxmail's build, tests and demo need. Idempotent: installs only what
# is missing, and runs apt-get update only then. Sourced by test.sh and demo.sh.
set -euo pipefail

TOXMAIL_PACKAGES=(
  pkg-config libclang-dev      # bindgen reads tox.h at build time
  libtoxcore-dev               # c-toxcore 0.2.18; newer: scripts/build-toxcore.sh (docs/operations.md)
  toxcore-utils                # tox-bootstrapd for the private-DHT tests
  iproute2 util-linux          # ip + unshare: tests run in a namespace with only loopback
  dnsmasq-base                 # dnsmasq binary only (no system service): test DNS server (tests/src/dns.rs)
  knot                         # knotd + knotc: a DNSSEC-signing DNS server for the DNSSEC tests (tests/src/knot.rs)
  postgresql                   # PostgreSQL 15: tests start private clusters (tests/src/postgres.rs)
  prometheus                   # promtool: checks scrapes, alert rules and their unit tests (no server is started)
  postfix                      # private Postfix sites + smtp-sink (tests/src/postfix.rs); smtp-source (bridge/tests/lmtp.rs)
  docker-compose shellcheck    # scripts/deploy-check.sh: `docker-compose config` (1.29.2, no engine needed) checks the compose files; shellcheck the deploy scripts
  dpkg-dev                     # dpkg-shlibdeps (cargo-deb's $auto Depends) and strip: scripts/package-check.sh
  systemd                      # systemd-analyze verify of the packaged units (systemd need not be running)
  g++ xxd                      # scripts/fuzz.sh: libfuzzer-sys compiles libFuzzer (C++); xxd seeds the protocol corpora
  rabbitmq-server              # RabbitMQ 3.10 + Erlang: tests start private brokers with their own epmd (tests/src/rabbitmq.rs); the system one is never used
)

install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  # Unseeded, postfix's postinst writes a main.cf and starts a system Postfix on port 25; tests
  # start their own instances and must never use that one.
  if [[ " ${missing[*]} " == *" postfix "* ]]; then
    echo "postfix postfix/main_mailer_type select No configuration" | "${sudo[@]}" debconf-set-selections
  fi
  # The packages must not start system services we would then depend on: tests start their own.
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian starts a system Prometheus (and RabbitMQ) at install; nothing here uses them.
  if command -v systemctl >/dev/null 2>&1; then
    for p in prometheus rabbitmq-server; do
      [[ " ${missing[*]} " == *" $p "* ]] && "${sudo[@]}" systemctl disable --now "$p" >/dev/null 2>&1 || true
    done
  fi
}

install_missing "${TOXMAIL_PACKAGES[@]}"

# Runs "$@" in a fresh network namespace whose only interface is loopback, so nothing can leave
# the machine. Needs root (or unprivileged user namespaces); falls back to running it directly
# with a warning where the machine forbids namespaces.
in_loopback_namespace() {
  if [ "$(id -u)" -eq 0 ] && unshare -n true 2>/dev/null; then
    unshare -n -- bash -c 'ip link set lo up && exec "$@"' _ "$@"
  elif unshare -rn true 2>/dev/null; then
    unshare -rn -- bash -c 'ip link set lo up && exec "$@"' _ "$@"
  else
    echo "WARNING: no network namespace available; running without isolation" >&2
    "$@"
  fi
}
