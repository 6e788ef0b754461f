#!/bin/bash
# toxmail: mailcow runs the executables in data/hooks/postfix/ each time postfix-mailcow starts.
# This adds the bridge's two master.cf services (postconf -M replaces an entry of the same name,
# so running it again changes nothing). mailcow has no file of its own for extra master.cf
# services, and its master.cf is replaced on updates: the hook puts them back at every start.
# Check: docker compose exec postfix-mailcow postconf -c /opt/postfix/conf -M toxlmtp/unix
set -eu
conf=/opt/postfix/conf
postconf -c "$conf" -M 'toxlmtp/unix=toxlmtp unix - - n - - lmtp -o lmtp_send_xforward_command=yes'
postconf -c "$conf" -M '127.0.0.1:10026/inet=127.0.0.1:10026 inet n - n - - smtpd -o syslog_name=postfix/toxmail-inject -o mynetworks= -o smtpd_client_restrictions= -o smtpd_helo_restrictions= -o smtpd_sender_restrictions= -o smtpd_relay_restrictions=reject_unauth_destination -o smtpd_recipient_restrictions=reject_unauth_destination -o smtpd_data_restrictions=reject_unauth_pipelining -o smtpd_forbid_unauth_pipelining=yes -o smtpd_forbid_bare_newline=yes'
