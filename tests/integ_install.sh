#!/usr/bin/env bash
# integ_install — `make install` honours PREFIX and DESTDIR, rewrites the unit's paths for the
# prefix, never overwrites an existing config, and `make uninstall` removes what it put there
# (but not the config).
source "$(dirname "$0")/daemon_lib.sh"
D=$TMP/root
mk() { make -s -C "$REPO" BUILD="$BUILD" DESTDIR="$D" PREFIX=/opt/edgellm "$@" >/dev/null; }

mk install
for f in opt/edgellm/bin/edgellm opt/edgellm/bin/edgellmd opt/edgellm/lib/systemd/system/edgellmd.service \
         opt/edgellm/lib/systemd/system/edgellmd.socket opt/edgellm/lib/sysusers.d/edgellm.conf \
         opt/edgellm/lib/tmpfiles.d/edgellm.conf etc/edgellm/edgellmd.json; do
    check "install puts /$f" test -f "$D/$f"
done
check "the unit runs the binary from the prefix" grep -q "ExecStart=/opt/edgellm/bin/edgellmd" \
      "$D/opt/edgellm/lib/systemd/system/edgellmd.service"
check "installed binaries run" "$D/opt/edgellm/bin/edgellm" --help
echo '{"port": 9999}' >"$D/etc/edgellm/edgellmd.json"
mk install
check "a second install keeps the operator's config" grep -q 9999 "$D/etc/edgellm/edgellmd.json"
mk uninstall
check "uninstall removes the binaries and units" sh -c "! find '$D/opt' -type f | grep -q ."
check "uninstall keeps the config" test -f "$D/etc/edgellm/edgellmd.json"
finish
