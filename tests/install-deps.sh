#!/bin/sh
# Install what patrol needs to build and test on Debian 12, skipping what
# is already there.  Run as root (or with sudo).
set -eu
pkgs="build-essential autoconf automake libtool pkg-config
libcurl4-openssl-dev libjson-c-dev libconfig-dev libsystemd-dev libssl-dev libcmocka-dev
python3 python3-pytest python3-requests python3-cryptography
python3-hvac python3-botocore python3-boto3 python3-azure
mandoc spin systemd curl ca-certificates clang libclang-rt-14-dev valgrind"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi
