#!/usr/bin/env bash
# The traffic lab (issue #5 item 4): real servers and real attack tools in network
# namespaces that this script creates, one tcpdump capture per scenario, then real
# Suricata 7 (eve `flow` events) and the PyPI cicflowmeter 0.5.0 (CSV) on every pcap,
# and a labels file built by construction (attacker addresses per capture).
#
#   sudo bash scripts/lab/build.sh [OUT_DIR]        (default: tests/data/lab)
#
# Needs root (namespaces, raw sockets). Traffic never leaves the namespaces lab-victim,
# lab-client and lab-atk (10.77.0.0/24 exists only on their veths and bridge). Every tool
# runs with a packet/request count AND a `timeout`; the namespaces, servers, the lab user
# and temporary files are removed on exit (trap), also on error or Ctrl-C.
# Env: LAB_CFM_VENV (Python >= 3.12 venv for cicflowmeter, default /var/tmp/bnn-lab-cfm),
#      LAB_SKIP_CAPTURE=1 (only re-derive eve/CSV/labels from the pcaps already in OUT_DIR).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/tests/data/lab}")
CFM_VENV=${LAB_CFM_VENV:-/var/tmp/bnn-lab-cfm}
VICTIM=10.77.0.10
CLIENTS=(10.77.0.20 10.77.0.21)
ATTACKER=10.77.0.66
DDOS=(10.77.0.101 10.77.0.102 10.77.0.103 10.77.0.104 10.77.0.105 10.77.0.106 10.77.0.107 10.77.0.108)
LAB_USER=labuser
LAB_PASS='Lab-Pass-2026'
NS_V=lab-victim NS_C=lab-client NS_A=lab-atk
RUN=$(mktemp -d /tmp/bnn-lab.XXXXXX)
CREATED_USER=0
PIDS=()

log() { printf '[lab %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
inv() { ip netns exec "$NS_V" "$@"; }
inc() { ip netns exec "$NS_C" "$@"; }
ina() { ip netns exec "$NS_A" "$@"; }

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for ns in "$NS_V" "$NS_C" "$NS_A"; do
        # anything still running inside one of our namespaces was started by this script
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    [ "$CREATED_USER" = 1 ] && userdel "$LAB_USER" 2>/dev/null
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "build.sh: needs root" >&2; exit 1; }

install_tools() {
    local need=()
    for t in nmap:nmap hydra:hydra hping3:hping3 slowhttptest:slowhttptest tcpdump:tcpdump \
             sshd:openssh-server ssh:openssh-client sshpass:sshpass vsftpd:vsftpd nginx:nginx-light \
             ab:apache2-utils curl:curl wget:wget lftp:lftp dig:dnsutils ethtool:ethtool ip:iproute2 ping:iputils-ping; do
        command -v "${t%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${t%%:*}" ] || need+=("${t#*:}")
    done
    if [ ${#need[@]} -gt 0 ]; then
        log "apt-get install ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    command -v suricata >/dev/null || bash "$ROOT/scripts/install-suricata.sh"
    if [ ! -x "$CFM_VENV/bin/python" ]; then
        local py=""
        for c in python3.13 python3.12 "$(pyenv root 2>/dev/null)/versions/3.12.1/bin/python"; do
            if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
                py=$c; break
            fi
        done
        if [ -z "$py" ] && command -v pyenv >/dev/null; then
            v=$(pyenv versions --bare | grep -E '^3\.1[2-9]' | head -n1)
            [ -n "$v" ] && py="$(pyenv root)/versions/$v/bin/python"
        fi
        [ -n "$py" ] || { echo "build.sh: need Python >= 3.12 for cicflowmeter 0.5.0" >&2; exit 1; }
        log "venv $CFM_VENV ($py) + cicflowmeter==0.5.0"
        "$py" -m venv "$CFM_VENV"
        "$CFM_VENV/bin/pip" install -q 'cicflowmeter==0.5.0'
    fi
}

setup_net() {
    log "namespaces $NS_V $NS_C $NS_A"
    for ns in "$NS_V" "$NS_C" "$NS_A"; do
        ip netns del "$ns" 2>/dev/null || true
        ip netns add "$ns"
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
    inv ip link add br0 type bridge
    inv ip addr add "$VICTIM/24" dev br0
    for pair in "$NS_C:lc" "$NS_A:la"; do
        local ns=${pair%%:*} n=${pair#*:}
        ip link add "$n" netns "$ns" type veth peer name "$n-br" netns "$NS_V"
        inv ip link set "$n-br" master br0
        inv ip link set "$n-br" up
        ip netns exec "$ns" ip link set "$n" up
        # no segmentation/GRO offload: the capture must show wire-size packets
        ip netns exec "$ns" ethtool -K "$n" tso off gso off gro off >/dev/null 2>&1 || true
        inv ethtool -K "$n-br" tso off gso off gro off >/dev/null 2>&1 || true
    done
    inv ethtool -K br0 tso off gso off gro off >/dev/null 2>&1 || true
    inv ip link set br0 up
    for a in "${CLIENTS[@]}"; do inc ip addr add "$a/24" dev lc; done
    ina ip addr add "$ATTACKER/24" dev la
    for a in "${DDOS[@]}"; do ina ip addr add "$a/24" dev la; done
    inc ping -c1 -W2 "$VICTIM" >/dev/null
    ina ping -c1 -W2 "$VICTIM" >/dev/null
}

setup_servers() {
    log "servers in $NS_V: sshd, vsftpd, nginx, dns-ish udp"
    if ! getent passwd "$LAB_USER" >/dev/null; then
        useradd -M -d "$RUN/home" -s /bin/sh "$LAB_USER"
        CREATED_USER=1
    fi
    mkdir -p "$RUN/home" "$RUN/www/docs" "$RUN/empty" /run/sshd
    chown "$LAB_USER" "$RUN/home"
    echo "$LAB_USER:$LAB_PASS" | chpasswd
    # benign content (generated): pages and files of varied size
    for i in $(seq 1 20); do
        head -c $((i * 500)) /dev/zero | tr '\0' 'a' | fold -w 80 > "$RUN/www/docs/page$i.html"
    done
    head -c 30000 /dev/urandom > "$RUN/www/blob.bin"
    printf '<html><body><a href="docs/page1.html">1</a> <a href="docs/page2.html">2</a> <a href="docs/page3.html">3</a></body></html>\n' > "$RUN/www/index.html"
    for i in 1 2 3; do head -c $((i * 10000)) /dev/urandom > "$RUN/home/file$i.dat"; done
    chown "$LAB_USER" "$RUN/home"/*
    chmod 755 "$RUN" "$RUN/www" "$RUN/www/docs"

    ssh-keygen -q -t ed25519 -N '' -f "$RUN/ssh_host_ed25519_key"
    cat > "$RUN/sshd_config" <<EOF
ListenAddress $VICTIM
Port 22
HostKey $RUN/ssh_host_ed25519_key
PidFile $RUN/sshd.pid
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM yes
PermitRootLogin no
AllowUsers $LAB_USER
MaxStartups 200:30:400
MaxAuthTries 6
LoginGraceTime 20
EOF
    ip netns exec "$NS_V" /usr/sbin/sshd -D -f "$RUN/sshd_config" -E "$RUN/sshd.log" & PIDS+=($!)

    cat > "$RUN/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=$VICTIM
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
pasv_enable=YES
pasv_min_port=40000
pasv_max_port=40100
secure_chroot_dir=$RUN/empty
pam_service_name=vsftpd
seccomp_sandbox=NO
xferlog_enable=NO
max_per_ip=50
max_clients=200
EOF
    ip netns exec "$NS_V" /usr/sbin/vsftpd "$RUN/vsftpd.conf" & PIDS+=($!)

    cat > "$RUN/nginx.conf" <<EOF
worker_processes 1;
pid $RUN/nginx.pid;
error_log $RUN/nginx-error.log;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    keepalive_timeout 15;
    client_header_timeout 30;
    server { listen $VICTIM:80; root $RUN/www; }
}
EOF
    ip netns exec "$NS_V" nginx -c "$RUN/nginx.conf" -g 'daemon off;' & PIDS+=($!)

    # DNS-ish UDP responder (answers every query with NXDOMAIN); stops by itself after 30 min
    ip netns exec "$NS_V" timeout 1800 python3 - "$VICTIM" <<'EOF' & PIDS+=($!)
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
s.settimeout(1.0)
while True:
    try:
        q, peer = s.recvfrom(2048)
    except socket.timeout:
        continue
    if len(q) >= 12:
        s.sendto(q[:2] + bytes([0x81 | (q[2] & 0x78), 0x83]) + q[4:6] + b"\0\0\0\0\0\0" + q[12:], peer)
EOF
    for _ in $(seq 1 50); do
        if inc curl -s -m 1 -o /dev/null "http://$VICTIM/" && inc timeout 2 bash -c "exec 3<>/dev/tcp/$VICTIM/21" \
            && inc timeout 2 bash -c "exec 3<>/dev/tcp/$VICTIM/22"; then
            return 0
        fi
        sleep 0.2
    done
    echo "build.sh: servers did not come up" >&2
    exit 1
}

CAP_PID="" CAP_NAME=""
cap_start() {
    CAP_NAME=$1
    log "capture $1"
    # a plain command (not the inv function) so that $! is tcpdump itself (ip netns exec execs it)
    ip netns exec "$NS_V" tcpdump -i br0 -n -U -s 0 -w "$RUN/pcap/$1.pcap" ip 2>/dev/null & CAP_PID=$!
    PIDS+=("$CAP_PID")
    sleep 1.5
}
cap_stop() {
    sleep 2
    kill -TERM "$CAP_PID" 2>/dev/null || true
    wait "$CAP_PID" 2>/dev/null || true
    gzip -9 -n -c "$RUN/pcap/$CAP_NAME.pcap" > "$OUT/pcap/$CAP_NAME.pcap.gz"
}

# ---------- scenarios (each bounded by counts and by `timeout`) ----------
benign() {
    cap_start benign
    local ua=(curl/7 Wget Mozilla/5.0)
    for i in $(seq 1 150); do
        src=${CLIENTS[$((i % 2))]}
        inc timeout 10 curl -s -o /dev/null --interface "$src" -A "${ua[$((i % 3))]}" "http://$VICTIM/docs/page$(( (i % 20) + 1 )).html" || true
        [ $((i % 30)) = 0 ] && { inc timeout 20 curl -s -o /dev/null --interface "$src" "http://$VICTIM/blob.bin" || true; }
        # every 10th: one keep-alive connection with several requests
        [ $((i % 10)) = 5 ] && { inc timeout 20 curl -s -o /dev/null -o /dev/null -o /dev/null --interface "$src" \
            "http://$VICTIM/docs/page1.html" "http://$VICTIM/docs/page7.html" "http://$VICTIM/index.html" || true; }
        [ $((i % 3)) = 0 ] && { inc timeout 3 dig +tries=1 +time=1 -b "$src" "@$VICTIM" "host$i.lab.example" A >/dev/null 2>&1 || true; }
        sleep 0.$((RANDOM % 3))
    done
    inc timeout 30 wget -q -r -l 1 -P "$RUN/mirror" --bind-address="${CLIENTS[0]}" "http://$VICTIM/" || true
    for i in 1 2 3 4 5 6 7 8; do
        inc timeout 20 sshpass -p "$LAB_PASS" ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
            -o BindAddress="${CLIENTS[$((i % 2))]}" "$LAB_USER@$VICTIM" "ls -l; head -c 3000 file1.dat | od -c | tail -n 3" >/dev/null 2>&1 || true
        sleep 1
    done
    inc timeout 30 sshpass -p "$LAB_PASS" scp -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BindAddress="${CLIENTS[1]}" "$LAB_USER@$VICTIM:file3.dat" "$RUN/got3.dat" >/dev/null 2>&1 || true
    for i in 1 2 3 1 2 3; do
        inc timeout 20 curl -s -o /dev/null --interface "${CLIENTS[$((i % 2))]}" "ftp://$LAB_USER:$LAB_PASS@$VICTIM/file$i.dat" || true
        sleep 0.5
    done
    inc timeout 20 curl -s -T "$RUN/www/docs/page5.html" --interface "${CLIENTS[0]}" "ftp://$LAB_USER:$LAB_PASS@$VICTIM/up.html" || true
    cap_stop
}

scan_syn() {
    cap_start scan-syn
    ina timeout 120 nmap -n -Pn -sS -p 1-1000 -T4 --max-retries 1 --host-timeout 100s -S "$ATTACKER" -e la "$VICTIM" >/dev/null || true
    cap_stop
}

scan_connect() {
    cap_start scan-connect
    ina timeout 120 nmap -n -Pn -sT -p 1-1000 -T4 --max-retries 1 --host-timeout 100s "$VICTIM" >/dev/null || true
    cap_stop
}

wordlist() {
    # 200 wrong guesses (40 common words x 5 suffixes), then the right one (the brute force succeeds)
    for s in "" 1 123 2024 '!'; do for w in 123456 password admin root qwerty letmein welcome monkey dragon master \
             football iloveyou 111111 abc123 sunshine princess shadow superman michael trustno1 \
             baseball access hello charlie donald batman freedom whatever qazwsx ninja \
             passw0rd zaq1zaq1 starwars 654321 jordan23 solo mustang lovely 7777777; do echo "$w$s"; done; done
    echo "$LAB_PASS"
}

bf_ssh() {
    wordlist > "$RUN/words.txt"
    cap_start bruteforce-ssh
    ina timeout 240 hydra -I -q -f -l "$LAB_USER" -P "$RUN/words.txt" -t 4 -W 1 "ssh://$VICTIM" >/dev/null 2>&1 || true
    cap_stop
}

bf_ftp() {
    wordlist > "$RUN/words.txt"
    cap_start bruteforce-ftp
    ina timeout 240 hydra -I -q -f -l "$LAB_USER" -P "$RUN/words.txt" -t 8 "ftp://$VICTIM" >/dev/null 2>&1 || true
    cap_stop
}

dos_slowloris() {
    cap_start dos-slowloris
    ina timeout 60 slowhttptest -H -c 150 -r 50 -i 8 -l 25 -x 24 -p 3 -u "http://$VICTIM/index.html" >/dev/null 2>&1 || true
    cap_stop
}

dos_synflood() {
    cap_start dos-synflood
    ina timeout 30 hping3 -q -S -p 80 -c 1500 -i u2000 -a "$ATTACKER" "$VICTIM" >/dev/null 2>&1 || true
    cap_stop
}

dos_httpflood() {
    cap_start dos-httpflood
    ina timeout 60 ab -q -n 400 -c 20 "http://$VICTIM/index.html" >/dev/null 2>&1 || true
    cap_stop
}

ddos() {
    cap_start ddos
    local pids=()
    for a in "${DDOS[@]}"; do
        ina timeout 30 hping3 -q -S -p 80 -c 150 -i u5000 -a "$a" "$VICTIM" >/dev/null 2>&1 & pids+=($!)
        ina timeout 30 bash -c "for i in \$(seq 1 25); do curl -s -m 3 -o /dev/null --interface $a http://$VICTIM/index.html; done" & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    cap_stop
}

# ---------- derivation: Suricata eve flow events, cicflowmeter CSV ----------
write_suricata_yaml() {
    cp "$HERE/suricata.yaml" "$1"
}

derive() {
    # committed files are gzip -9 -n (the sidecar readers read gzip directly)
    mkdir -p "$OUT/eve" "$OUT/csv" "$RUN/d"
    write_suricata_yaml "$RUN/suricata.yaml"
    for gz in "$OUT"/pcap/*.pcap.gz; do
        name=$(basename "$gz" .pcap.gz)
        pcap="$RUN/d/$name.pcap"
        gzip -dc "$gz" > "$pcap"
        log "suricata + cicflowmeter: $name"
        rm -rf "$RUN/sur" && mkdir -p "$RUN/sur"
        timeout 300 suricata -c "$RUN/suricata.yaml" -r "$pcap" -l "$RUN/sur" -k none --runmode single >/dev/null 2>&1
        gzip -9 -n -c "$RUN/sur/eve.json" > "$OUT/eve/$name.eve.json.gz"
        timeout 600 "$CFM_VENV/bin/python" "$HERE/cfm_pcap.py" "$pcap" "$RUN/d/$name.csv" >/dev/null 2>"$RUN/d/$name.cfm.log" \
            || { cat "$RUN/d/$name.cfm.log" >&2; exit 1; }
        gzip -9 -n -c "$RUN/d/$name.csv" > "$OUT/csv/$name.csv.gz"
    done
}

write_labels() {
    "$ROOT/.venv/bin/python" "$HERE/labels.py" --lab-dir "$OUT" \
        --victim "$VICTIM" --benign "${CLIENTS[@]}" --attacker "$ATTACKER" --ddos "${DDOS[@]}"
}

install_tools
mkdir -p "$OUT/pcap" "$RUN/pcap"
if [ "${LAB_SKIP_CAPTURE:-0}" != 1 ]; then
    rm -f "$OUT"/pcap/*.pcap.gz "$OUT"/eve/*.eve.json.gz "$OUT"/csv/*.csv.gz
    setup_net
    setup_servers
    benign
    scan_syn
    scan_connect
    bf_ssh
    bf_ftp
    dos_slowloris
    dos_synflood
    dos_httpflood
    ddos
fi
derive
write_labels
log "done: $OUT"
du -sh "$OUT"/* >&2
