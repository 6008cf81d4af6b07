#!/bin/sh
# Installs the Debian 12 packages that make check-package needs: those that
# build the .deb (debian/control Build-Depends, dpkg-dev, debhelper), lintian,
# and what test_package.py runs (pytest, aiosmtpd, openssl for the test
# certificates, runuser and setpriv).  As root with apt-get
# --no-install-recommends, after checking that the plan installs no mail
# transport agent; otherwise it names what is missing and fails.
set -eu

PKGS="build-essential dpkg-dev fakeroot debhelper lintian pkg-config
libesmtp-dev libiniparser-dev libssl-dev python3 python3-pytest
python3-aiosmtpd openssl ca-certificates util-linux adduser passwd"

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
apt-get install -y -q --no-install-recommends $missing
