#!/bin/sh
# Unpacks a real MTA from Debian 12, Exim (package exim4-daemon-light), for
# tests/e2e/test_interop.py, which runs it as the STARTTLS+AUTH smarthost
# relayq delivers through.  It is never installed (that would pull in
# exim4-base/exim4-config and take over /usr/sbin/sendmail): the package is
# fetched with `apt-get download` and extracted with `dpkg -x` under
# $RELAYQ_MTA_DIR (default /var/cache/relayq-tests), and the test starts the
# daemon from there in a private mount namespace with its own config.
#
# What a real install would also do, done here: the Debian-exim system user
# the binary is built to run as (looked up at start-up), and the shared
# libraries the daemon links (installed with apt, refused if apt would bring
# in a mail server).  The unpacked exim4 is setuid root as packaged, but only
# root and Debian-exim may run it (4750 root:Debian-exim).
#
# (OpenSMTPD 6.8.0p2, the other candidate, cannot do server TLS with
# Debian 12's OpenSSL 3: its privilege-separated key fails every handshake,
# "EVP lib", OpenSMTPD issue #1171.)
#
# Idempotent: nothing is done when the binary is unpacked, the user exists
# and the libraries are installed.
# Called by tests/deps.sh (make deps / make check).
set -eu

DEST=${RELAYQ_MTA_DIR:-/var/cache/relayq-tests}
PKG=exim4-daemon-light
BIN=usr/sbin/exim4
USR=Debian-exim
DIR=$DEST/$PKG

missing_libs() {
	# The lib* packages the .deb depends on (first of each alternative)
	# that are not installed.
	[ -s "$DIR/.depends" ] || { echo "unknown"; return; }
	while read -r p; do
		st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
		case "$st" in
		*" installed") ;;
		*) printf ' %s' "$p" ;;
		esac
	done <"$DIR/.depends"
}

ready() {
	[ -f "$DIR/$BIN" ] && [ -s "$DIR/.version" ] &&
		getent passwd "$USR" >/dev/null && [ -z "$(missing_libs)" ]
}

ready && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "relayq: the test MTA ($PKG) is not ready in $DIR" >&2
	echo "relayq: run as root: sh tests/mta-setup.sh" >&2
	exit 1
fi

# The system user and group, as exim4-base's postinst makes them.
if ! getent group "$USR" >/dev/null; then
	groupadd --system "$USR"
fi
if ! getent passwd "$USR" >/dev/null; then
	useradd --system --gid "$USR" --home-dir /var/spool/exim4 \
		--no-create-home --shell /usr/sbin/nologin \
		--comment "Exim (relayq interop tests)" "$USR"
fi

if ! [ -f "$DIR/$BIN" ] || ! [ -s "$DIR/.version" ] || ! [ -s "$DIR/.depends" ]; then
	mkdir -p "$DEST"
	chmod 0755 "$DEST"
	work=$(mktemp -d "$DEST/.download.XXXXXX")
	trap 'rm -rf "$work"' EXIT INT TERM
	# apt-get download drops its privileges to _apt: let it write here.
	chmod 0755 "$work"
	chown _apt "$work" 2>/dev/null || true
	if ! (cd "$work" && apt-get download -q "$PKG"); then
		apt-get update -q
		(cd "$work" && apt-get download -q "$PKG")
	fi
	deb=$(ls "$work"/"${PKG}"_*.deb)
	ver=$(dpkg-deb -f "$deb" Version)
	dpkg -x "$deb" "$work/x"
	[ -x "$work/x/$BIN" ] || {
		echo "relayq: $deb has no $BIN" >&2
		exit 1
	}
	dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//' |
		awk '$1 ~ /^lib/ {print $1}' >"$work/x/.depends"
	echo "$ver" >"$work/x/.version"
	chown root:"$USR" "$work/x/$BIN"
	chmod 4750 "$work/x/$BIN"
	rm -rf "$DIR.old"
	[ -e "$DIR" ] && mv "$DIR" "$DIR.old"
	mv "$work/x" "$DIR"
	rm -rf "$DIR.old"
	echo "relayq: unpacked $PKG $ver in $DIR (not installed)"
fi

libs=$(missing_libs)
if [ -n "$libs" ]; then
	echo "relayq: installing the test MTA's libraries:$libs"
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	plan=$(apt-get -s install -y --no-install-recommends $libs) || {
		apt-get update -q
		# shellcheck disable=SC2086
		plan=$(apt-get -s install -y --no-install-recommends $libs) || {
			printf '%s\n' "$plan" >&2
			echo "relayq: apt-get cannot install:$libs" >&2
			exit 1
		}
	}
	bad=$(printf '%s\n' "$plan" | awk '$1 == "Inst" {print $2}' |
		grep -E '^(default-mta|exim4|postfix|sendmail|opensmtpd|nullmailer|msmtp-mta|dma|courier-mta|citadel-mta|ssmtp)' |
		tr '\n' ' ' || true)
	if [ -n "$bad" ]; then
		echo "relayq: refusing to install, apt would add a mail server: $bad" >&2
		exit 1
	fi
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $libs
fi

ready || {
	echo "relayq: the test MTA is still not ready in $DIR" >&2
	exit 1
}
