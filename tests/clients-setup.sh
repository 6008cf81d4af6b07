#!/bin/sh
# Unpacks the real mail clients that Depend on an MTA (default-mta |
# mail-transport-agent), so that installing them would bring in exim4:
# they are downloaded with `apt-get download` and extracted with `dpkg -x`
# under $RELAYQ_CLIENTS_DIR (default /opt/relayq-tests), never installed.
# tests/e2e/test_realclients.py runs them from there.  Idempotent: a client
# already unpacked at the candidate version is left alone.  Called by
# tests/deps.sh (make deps / make check).
set -eu

DEST=${RELAYQ_CLIENTS_DIR:-/opt/relayq-tests}
# package -> the file that must be there once it is unpacked
CLIENTS="bsd-mailx:usr/bin/bsd-mailx"

need=""
for c in $CLIENTS; do
	pkg=${c%%:*} file=${c#*:}
	[ -x "$DEST/$pkg/$file" ] && [ -s "$DEST/$pkg/.version" ] || need="$need $c"
done
[ -z "$need" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "relayq: test clients not unpacked in $DEST:$need" >&2
	echo "relayq: run as root: sh tests/clients-setup.sh" >&2
	exit 1
fi

mkdir -p "$DEST"
work=$(mktemp -d "$DEST/.download.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
# apt-get download drops its privileges to _apt: let it write here.
chmod 0755 "$work"
chown _apt "$work" 2>/dev/null || true

for c in $need; do
	pkg=${c%%:*} file=${c#*:}
	if ! (cd "$work" && apt-get download -q "$pkg"); then
		apt-get update -q
		(cd "$work" && apt-get download -q "$pkg")
	fi
	deb=$(ls "$work"/"${pkg}"_*.deb)
	ver=$(dpkg-deb -f "$deb" Version)
	rm -rf "$work/x"
	dpkg -x "$deb" "$work/x"
	[ -x "$work/x/$file" ] || {
		echo "relayq: $deb has no $file" >&2
		exit 1
	}
	echo "$ver" >"$work/x/.version"
	rm -rf "$DEST/$pkg.old"
	[ -e "$DEST/$pkg" ] && mv "$DEST/$pkg" "$DEST/$pkg.old"
	mv "$work/x" "$DEST/$pkg"
	rm -rf "$DEST/$pkg.old" "$deb"
	echo "relayq: unpacked $pkg $ver in $DEST/$pkg (not installed)"
done
