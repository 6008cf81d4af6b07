#!/bin/sh
# Installs the Debian 12 packages that building and testing relayq need.
# As root it runs apt-get; otherwise it names what is missing and fails.
# --no-install-recommends keeps apt from pulling in an MTA (exim4), and the
# planned install is checked first: it must install no mail transport agent.
# Then tests/clients-setup.sh unpacks the clients that depend on an MTA
# (bsd-mailx) without installing them.
set -eu

HERE=$(dirname "$0")

# Build and unit/e2e tests; then the real clients of tests/e2e/test_realclients.py
# (php mail(), Symfony Mailer, cron; bsd-mailx's libraries: the package itself
# is only unpacked, see clients-setup.sh).
PKGS="gcc make pkg-config libesmtp-dev libiniparser-dev libssl-dev
libcmocka-dev python3 python3-aiosmtpd python3-pytest openssl
ca-certificates mandoc valgrind faketime python3-dkim dnsmasq-base
python3-cryptography python3-dnspython strace time clang libclang-rt-14-dev
php8.2-cli php-symfony-mailer cron util-linux libbsd0 liblockfile1"

missing=""
for p in $PKGS; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$st" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done

if [ -n "$missing" ]; then
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
	apt-get install -y -q --no-install-recommends $missing
fi

sh "$HERE/mta-setup.sh"
exec sh "$HERE/clients-setup.sh"
