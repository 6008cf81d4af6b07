#!/bin/sh
# make demo: one real message through relayq into a throwaway local relay
# that speaks STARTTLS and wants AUTH, with a CA made for this run.
# Everything lives in a temporary directory that is removed at the end.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
d=$(mktemp -d /tmp/relayq-demo.XXXXXX)
relay_pid=""
cleanup() {
	[ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
	rm -rf "$d"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. a test CA and a certificate for 127.0.0.1"
$py "$top/tests/e2e/certs.py" "$d/certs" | sed -n 's/^\(ca\|server_cert\)=/  &/p'

say "2. a local relay on 127.0.0.1: STARTTLS required, AUTH as demo@example.com"
printf 'demo-password\n' > "$d/password"
chmod 600 "$d/password"
$py "$top/tests/e2e/fakerelay.py" --cert "$d/certs/server.pem" \
	--key "$d/certs/server.key" --user demo@example.com \
	--password-file "$d/password" --port-file "$d/port" \
	--maildir "$d/received" > "$d/relay.log" 2>&1 &
relay_pid=$!
i=0
while [ ! -s "$d/port" ]; do
	i=$((i + 1))
	[ $i -gt 100 ] && { cat "$d/relay.log"; echo "relay did not start" >&2; exit 1; }
	sleep 0.1
done
port=$(cat "$d/port")
echo "  listening on 127.0.0.1:$port"

cat > "$d/relayq.ini" <<INI
[relay]
host = 127.0.0.1
port = $port
ca_file = $d/certs/ca.pem
user = demo@example.com
password_file = $d/password
timeout = 30
[queue]
dir = $d/spool
[sender]
address = noreply@demo.example
[aliases]
root = admin@demo.example
[log]
target = stderr
INI
say "3. the configuration ($d/relayq.ini)"
sed 's/^/  /' "$d/relayq.ini"

say "4. queue a message only (-odq), as cron calls sendmail: to root, from root"
printf 'From: root (Cron Daemon)\nSubject: relayq demo\nTo: root\n\nHello from relayq.\n.\nA lone dot above is data with -i.\n' |
	"$top/relayq" -C "$d/relayq.ini" -FCronDaemon -i -B8BITMIME -oem -odq root
echo "  the queue (relayq -bp, as mailq shows it):"
"$top/relayq" -C "$d/relayq.ini" -bp | sed 's/^/    /'

say "5. deliver the queue (relayq -q -v: the SMTP dialogue, credentials hidden)"
"$top/relayq" -C "$d/relayq.ini" -q -v

say "6. a second message, delivered at once (the default), with -t"
printf 'To: Alice <alice@example.com>\nBcc: bob@example.com\nSubject: second\n\nBcc is removed.\n' |
	"$top/relayq" -C "$d/relayq.ini" -t -i

sleep 0.3
say "7. what the relay received"
cat "$d/relay.log" | grep '#' | sed 's/^/  /'
for f in "$d"/received/*.eml; do
	echo "  --- $(basename "$f")"
	tr -d '\r' < "$f" | sed 's/^/  | /'
done

say "8. the queue afterwards (empty: everything was delivered)"
"$top/relayq" -C "$d/relayq.ini" -bp | sed 's/^/    /'
