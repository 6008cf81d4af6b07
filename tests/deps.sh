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

# shellcheck disable=SC2086
sh "$HERE/apt-install.sh" $PKGS

sh "$HERE/mta-setup.sh"
exec sh "$HERE/clients-setup.sh"
