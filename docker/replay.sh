#!/bin/sh
# bnn-replay: helper of docker-compose.yml (runs in the `sensor` network namespace).
#   bnn-replay sensor   create the veth pair bnn-tx <-> bnn-rx and keep the namespace alive
#   bnn-replay replay   replay every capture in /pcap onto bnn-tx (Zeek and Suricata sniff bnn-rx)
# Knobs (environment): BNN_REPLAY_MBPS (default 10), BNN_REPLAY_LOOPS (default 1),
#                      BNN_REPLAY_DELAY_S (default 10: let Zeek and Suricata open the interface).
set -eu
case "${1:-}" in
sensor)
    if ! ip link show bnn-rx >/dev/null 2>&1; then
        ip link add bnn-tx type veth peer name bnn-rx
    fi
    ip link set bnn-tx up
    ip link set bnn-rx up
    ip link set bnn-rx promisc on
    echo "bnn-replay: bnn-tx -> bnn-rx ready"
    trap 'exit 0' TERM INT
    while :; do sleep 3600 & wait $!; done
    ;;
replay)
    sleep "${BNN_REPLAY_DELAY_S:-10}"
    found=0
    for f in /pcap/*.pcap /pcap/*.pcapng; do
        [ -f "$f" ] || continue
        found=1
        echo "bnn-replay: $f"
        tcpreplay --intf1=bnn-tx --mbps="${BNN_REPLAY_MBPS:-10}" --loop="${BNN_REPLAY_LOOPS:-1}" "$f"
    done
    if [ "$found" = 0 ]; then
        echo "bnn-replay: no *.pcap or *.pcapng in /pcap (set BNN_PCAP_DIR)" >&2
        exit 2
    fi
    ;;
*)
    echo "usage: bnn-replay sensor|replay" >&2
    exit 2
    ;;
esac
