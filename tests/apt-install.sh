#!/bin/sh
# Installs the Debian packages named as arguments that are missing, with
# apt-get --no-install-recommends, after checking that the plan installs
# no mail transport agent (exim4 comes in as default-mta): relayq is the
# mail system under test.  As root; otherwise it names what is missing
# and fails.  Used by tests/deps.sh and tests/package/deps.sh.
set -eu

missing=""
for p in "$@"; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$st" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "relayq: missing Debian packages:$missing" >&2
	echo "relayq: run as root, or: apt-get install --no-install-recommends$missing" >&2
	exit 1
fi
echo "relayq: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Never let apt bring in a mail server: look at the plan first.
# shellcheck disable=SC2086
plan=$(apt-get -s install -y --no-install-recommends $missing) || {
	printf '%s\n' "$plan" >&2
	echo "relayq: apt-get cannot install:$missing" >&2
	exit 1
}
mtas=$(apt-cache showpkg mail-transport-agent |
	sed -n '/^Reverse Provides:/,$p' | sed 1d | awk '{print $1}')
bad=""
for p in $(printf '%s\n' "$plan" | awk '$1 == "Inst" {print $2}'); do
	case "$p" in
	default-mta|exim4*|postfix*|sendmail*) bad="$bad $p"; continue ;;
	esac
	for m in $mtas; do
		[ "$p" = "$m" ] && bad="$bad $p"
	done
done
if [ -n "$bad" ]; then
	echo "relayq: refusing to install, apt would add a mail server:$bad" >&2
	exit 1
fi
# shellcheck disable=SC2086
exec apt-get install -y -q --no-install-recommends $missing
