#!/bin/sh
# Installs the Debian 12 packages that make check-package needs: those that
# build the .deb (debian/control Build-Depends, dpkg-dev, debhelper), lintian,
# and what test_package.py runs (pytest, aiosmtpd, openssl for the test
# certificates, runuser and setpriv), through tests/apt-install.sh.
set -eu

PKGS="build-essential dpkg-dev fakeroot debhelper lintian pkg-config
libesmtp-dev libiniparser-dev libssl-dev python3 python3-pytest
python3-aiosmtpd openssl ca-certificates util-linux adduser passwd"

# shellcheck disable=SC2086
exec sh "$(dirname "$0")/../apt-install.sh" $PKGS
