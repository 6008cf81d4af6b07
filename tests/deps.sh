#!/bin/sh
# Installs the Debian 12 packages that building and testing relayq need.
# As root it runs apt-get; otherwise it names what is missing and fails.
# --no-install-recommends keeps apt from pulling in an MTA (exim4).
set -eu

PKGS="gcc make pkg-config libesmtp-dev libiniparser-dev libssl-dev
libcmocka-dev python3 python3-aiosmtpd python3-pytest openssl
ca-certificates mandoc valgrind faketime"

missing=""
for p in $PKGS; do
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
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
