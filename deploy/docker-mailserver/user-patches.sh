#!/bin/bash
# toxmail for docker-mailserver: copy to docker-data/dms/config/user-patches.sh (or append to
# yours). docker-mailserver runs it at every start, after its own Postfix setup. Run the bridge
# in the mailserver container's network (network_mode: "service:mailserver"), so that these
# 127.0.0.1 addresses are the bridge's. Running it again changes nothing.
set -euo pipefail
socketmap="socketmap:inet:127.0.0.1:9025:transport"

# master.cf first: the main.cf setting below names the toxlmtp service.
postconf -M 'toxlmtp/unix=toxlmtp unix - - n - - lmtp -o lmtp_send_xforward_command=yes'
postconf -M '127.0.0.1:10026/inet=127.0.0.1:10026 inet n - n - - smtpd -o syslog_name=postfix/toxmail-inject -o mynetworks= -o smtpd_client_restrictions= -o smtpd_helo_restrictions= -o smtpd_sender_restrictions= -o smtpd_relay_restrictions=reject_unauth_destination -o smtpd_recipient_restrictions=reject_unauth_destination -o smtpd_data_restrictions=reject_unauth_pipelining -o smtpd_forbid_unauth_pipelining=yes -o smtpd_forbid_bare_newline=yes'

# The socketmap ahead of docker-mailserver's own transport tables, once.
merged=$socketmap
while IFS= read -r table; do
  [ "$table" = "$socketmap" ] || merged="$merged, $table"
done < <(postconf -h transport_maps | tr ',' '\n' | tr -s ' \t' '\n' | sed '/^$/d')
postconf -e "transport_maps = $merged" "toxlmtp_destination_recipient_limit = 50"
