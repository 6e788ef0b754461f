#!/bin/bash
# Container healthcheck: GET /readyz on a daemon's [metrics] listener, healthy on 200. The image
# has no HTTP client, so bash's /dev/tcp speaks HTTP/1.0 (the server closes after its answer).
# Usage: ready.sh PORT   (the listener is on 127.0.0.1)
set -eu
port=${1:?usage: ready.sh PORT}
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
IFS= read -r status <&3
case "$status" in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "not ready: $status" >&2; exit 1 ;;
esac
