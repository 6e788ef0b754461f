#!/bin/bash
# Connects Zimbra's Postfix to toxmail-bridge (docs/postfix.md, "Zimbra"). Run as the zimbra user
# on each MTA server, after installing the bridge, and AGAIN AFTER EVERY ZIMBRA UPGRADE: an
# upgrade replaces master.cf.in, and with it the services this script adds there.
#
#   - zimbraMtaTransportMaps: the bridge's socketmap first, then the server's current tables
#     (read with zmprov gs; `zmprov ms` replaces the value, so it is never set from scratch);
#   - master.cf.in: a dedicated `toxlmtp` LMTP client (XFORWARD on: the bridge's idempotency key)
#     and the injection smtpd the bridge delivers received mail to, between marker lines;
#     Zimbra's own `lmtp` service (every local mailbox uses it) is left alone;
#   - with --milter: zimbraMtaSmtpdMilters gets the bridge's milter after the current ones, with
#     its own default_action=accept. zimbraMtaMilterDefaultAction (global) is not touched.
# Running it again changes nothing. --dry-run prints what it would change and changes nothing.
set -euo pipefail

socketmap="socketmap:inet:127.0.0.1:9025:transport"
lmtp="inet:[127.0.0.1]:2424"
inject_port=10036
milter=""
master_cf_in="/opt/zimbra/common/conf/master.cf.in"
dry_run=0
changed=0

usage() {
  cat <<USAGE
usage: toxmail-zimbra.sh [--dry-run] [--milter inet:127.0.0.1:8892] [--socketmap MAP]
                         [--inject-port PORT] [--master-cf-in PATH]
  --dry-run        print the changes, make none
  --milter SOCKET  also add the bridge's milter ([milter] listen in bridge.toml)
  --socketmap MAP  the bridge's socketmap (default $socketmap)
  --inject-port N  port of the injection smtpd on 127.0.0.1 (default $inject_port): set
                   [inbound] next_hop = "smtp:127.0.0.1:N" in bridge.toml
  --master-cf-in P Zimbra's master.cf template (default $master_cf_in)
USAGE
}

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --milter) milter=${2:?--milter needs a socket}; shift ;;
    --socketmap) socketmap=${2:?--socketmap needs a value}; shift ;;
    --inject-port) inject_port=${2:?--inject-port needs a port}; shift ;;
    --master-cf-in) master_cf_in=${2:?--master-cf-in needs a path}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "toxmail-zimbra.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$inject_port" in
  ''|*[!0-9]*) echo "toxmail-zimbra.sh: --inject-port must be a number" >&2; exit 2 ;;
esac

# Runs a command, or prints it under --dry-run.
change() {
  changed=1
  if [ "$dry_run" -eq 1 ]; then
    printf 'would run:'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# The value of one attribute of this server ("" when unset); each value on its own line.
server_attr() {
  zmprov gs "$server" "$1" | sed -n "s/^$1: //p"
}

# The items of a Postfix list (commas and blanks separate; Zimbra's tables have no braces).
items() {
  tr ',' '\n' | tr -s ' \t' '\n' | sed '/^$/d'
}

# "first, the others without first": the socketmap ahead of the current tables.
prepend() {
  local first=$1 current=$2 out=$1 item
  while IFS= read -r item; do
    [ "$item" = "$first" ] || out="$out, $item"
  done < <(printf '%s\n' "$current" | items)
  printf '%s' "$out"
}

# The entries of a milter list: `{ … }` groups whole, other items split like items().
milters() {
  printf '%s\n' "$1" | sed 's/{[^}]*}/\n&\n/g' | while IFS= read -r part; do
    case "$part" in
      "{"*) printf '%s\n' "$part" ;;
      *) printf '%s\n' "$part" | items ;;
    esac
  done | sed '/^$/d'
}

# The socket of a milter entry: itself, or the first word inside `{ … }`.
milter_socket() {
  printf '%s\n' "$1" | sed 's/^{[[:space:]]*//; s/[[:space:]]*}$//; s/[,[:space:]].*//'
}

server=$(zmhostname)

# 1. master.cf.in first: main.cf settings naming a transport need its service.
begin="# toxmail begin (deploy/zimbra/toxmail-zimbra.sh; re-run after Zimbra upgrades)"
end="# toxmail end"
block="$begin
toxlmtp   unix  -       -       n       -       -       lmtp
  -o lmtp_send_xforward_command=yes
127.0.0.1:$inject_port inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/toxmail-inject
  -o mynetworks=
  -o smtpd_client_restrictions=
  -o smtpd_helo_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=reject_unauth_destination
  -o smtpd_recipient_restrictions=reject_unauth_destination
  -o smtpd_data_restrictions=reject_unauth_pipelining
  -o smtpd_milters=
  -o smtpd_forbid_unauth_pipelining=yes
  -o smtpd_forbid_bare_newline=yes
$end"
[ -f "$master_cf_in" ] || { echo "toxmail-zimbra.sh: $master_cf_in not found (--master-cf-in)" >&2; exit 1; }
# The template without an earlier toxmail block, then the block.
without=$(awk -v b="$begin" -v e="$end" '$0 == b { skip = 1 } !skip { print } $0 == e { skip = 0 }' "$master_cf_in")
wanted=$(printf '%s\n%s\n' "$without" "$block")
if [ "$wanted" = "$(cat "$master_cf_in")" ]; then
  echo "master.cf.in: toxlmtp and the injection service (127.0.0.1:$inject_port) are there"
elif [ "$dry_run" -eq 1 ]; then
  changed=1
  printf 'would write %s: its content without any toxmail block, then\n%s\n' "$master_cf_in" "$block"
else
  tmp=$(mktemp "$master_cf_in.XXXXXX")
  printf '%s\n' "$wanted" > "$tmp"
  chmod --reference="$master_cf_in" "$tmp"
  mv "$tmp" "$master_cf_in"
  changed=1
  echo "master.cf.in: added toxlmtp and the injection service (127.0.0.1:$inject_port)"
fi

# 2. The socketmap ahead of the current transport tables.
current=$(server_attr zimbraMtaTransportMaps)
merged=$(prepend "$socketmap" "$current")
if [ "$merged" = "$current" ]; then
  echo "zimbraMtaTransportMaps: already $current"
else
  change zmprov ms "$server" zimbraMtaTransportMaps "$merged"
fi

# 3. The milter after the current ones, accepting mail when the bridge is down.
if [ -n "$milter" ]; then
  ours="{ $milter, default_action=accept }"
  current=$(server_attr zimbraMtaSmtpdMilters | paste -sd, -)
  merged=""
  while IFS= read -r item; do
    [ "$(milter_socket "$item")" = "$milter" ] || merged="${merged:+$merged, }$item"
  done < <(milters "$current")
  merged="${merged:+$merged, }$ours"
  if [ "$merged" = "$current" ]; then
    echo "zimbraMtaSmtpdMilters: already $current"
  else
    change zmprov ms "$server" zimbraMtaSmtpdMilters "$merged"
  fi
fi

if [ "$changed" -eq 1 ]; then
  change zmmtactl reload
fi
if command -v postconf >/dev/null && [ "$(postconf -h enable_long_queue_ids)" != yes ]; then
  echo "note: enable_long_queue_ids is not yes: queue ids (the bridge's XFORWARD key) repeat over time"
fi
cat <<DONE
Set in bridge.toml: [lmtp] listen = "127.0.0.1:2424" (the socketmap then answers toxlmtp:$lmtp)
and [inbound] next_hop = "smtp:127.0.0.1:$inject_port". Check: postconf -M toxlmtp/unix;
postconf -h transport_maps; postmap -q <a Tox address> $socketmap
DONE
