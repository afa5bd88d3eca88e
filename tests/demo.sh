#!/bin/bash
# The README's first command: on a fresh Debian machine, install what is
# missing, build patrol, start local Onplana/Vault/AWS/Azure servers over TLS
# and rotate the example configuration's integrations into them.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
./tests/install-deps.sh
./autogen.sh >/dev/null
mkdir -p build/demo
cd build/demo
[ -f Makefile ] || "$top/configure" -q
make -j"$(nproc)" src/patrol >/dev/null
cd "$top"
exec /usr/bin/python3 tests/demo.py --builddir build/demo "$@"
