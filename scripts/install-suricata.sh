#!/usr/bin/env bash
# Install Suricata 7 from Debian bookworm-backports (plus the tools the Suricata and
# inline-IPS tests use: iptables for NFQUEUE, iproute2 for namespaces, tcpdump).
# Idempotent; needs root. Uses the same Debian mirror this machine already uses.
set -euo pipefail
if command -v suricata >/dev/null 2>&1 && suricata -V 2>/dev/null | grep -q 'version 7'; then
    for tool in iptables ip tcpdump; do command -v "$tool" >/dev/null || missing=1; done
    [ -z "${missing:-}" ] && { suricata -V; exit 0; }
fi
[ "$(id -u)" = 0 ] || { echo "install-suricata.sh: needs root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
# The mirror this machine already uses (deb822 or one-line sources), default deb.debian.org.
mirror=$(grep -hoE '^URIs: *[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}')
if [ -z "$mirror" ]; then
    mirror=$(grep -hoE '^deb +[^ ]+/debian/? ' /etc/apt/sources.list 2>/dev/null | head -n1 | awk '{print $2}')
fi
mirror=${mirror:-http://deb.debian.org/debian}
list=/etc/apt/sources.list.d/bookworm-backports.list
if ! grep -qs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/* ; then
    echo "deb ${mirror%/} bookworm-backports main" > "$list"
fi
apt-get update -qq
apt-get install -y -qq -t bookworm-backports suricata >/dev/null
apt-get install -y -qq iptables iproute2 tcpdump >/dev/null
suricata -V
