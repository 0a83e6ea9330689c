#!/usr/bin/env bash
# chatload against three chat-demo nodes of one cluster on this machine
# (etcd on free loopback ports in a temp dir), then against one node alone,
# with the same load: CPU per delivery summed over the nodes, latency, loss.
#
#   cargo build --release -p benches
#   cargo build --release -p chat-demo --features cluster
#   scripts/cluster-load.sh target/release/chat-demo fanout --clients 1000 --rate 0.2 --duration 20
#   DOORS=1 scripts/cluster-load.sh target/release/chat-demo idle --clients 10000 --rooms 100 --duration 30
#
# DOORS=1 sends every client to n1 (default: spread over the three).
# REPLICAS=1 (or 2) compares the three nodes without replication against
# the three nodes with that R (each room's writes durable on its followers
# before they are acknowledged), instead of against one node alone:
#   REPLICAS=1 scripts/cluster-load.sh target/release/chat-demo fanout --clients 1000 --rate 0.2 --duration 20
#
# The arguments after the binary are chatload's (`--scenario` is the
# first). Needs etcd (Debian's etcd-server), curl and python3. Prints one
# summary line per run; for `idle`, the nodes' RSS before and after too.
set -euo pipefail
bin="$1"
scenario="$2"
shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
chatload="$root/target/release/chatload"
dir="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
wait_line() { # file pattern
  for _ in $(seq 300); do
    if grep -qE "$2" "$1"; then grep -oE "$2" "$1" | head -1; return; fi
    sleep 0.1
  done
  echo "no '$2' in $1" >&2; cat "$1" >&2; exit 1
}
wait_ready() { # addr
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$1/readyz")" = 200 ] && return
    sleep 0.1
  done
  echo "$1 never ready" >&2; exit 1
}
flags=(--trust-client-ip-header x-forwarded-for --max-connections-per-ip 100000
       --max-tcp-connections-per-ip 100000 --joins-per-minute 100000)
summary() { # label json-file nodes' pids before-rss...
  python3 - "$@" <<'PY'
import json, sys
label, path = sys.argv[1], sys.argv[2]
j = json.loads(open(path).readline())
lat = j["latency_ms"]
line = (f'{label}: {j["connected"]} clients, {j["deliveries"]} deliveries, '
        f'{j["server_cpu_s_per_million_deliveries"]:.1f} CPU s per million deliveries (all nodes), '
        f'p50 {lat["p50"]} ms, p99 {lat["p99"]} ms, lost {j["lost"]}, duplicated {j["duplicated"]}, '
        f'out of order {j["out_of_order"]}')
print(line)
PY
}

run_chatload() { # label urls... -- pids...
  local label="$1"; shift
  local args=()
  while [ "$1" != -- ]; do args+=(--url "ws://$1"); shift; done
  shift
  for p in "$@"; do args+=(--server-pid "$p"); done
  local before=0
  for p in "$@"; do before=$((before + $(rss_kb "$p"))); done
  "$chatload" "${args[@]}" --scenario "$scenario" "${EXTRA[@]}" --progress-secs 0 \
    2>/dev/null | grep '^{' >"$dir/$label.json" &
  local cl=$!
  local peak=$before
  if [ "$scenario" = idle ]; then
    # Sample the summed RSS while the clients hold their sockets.
    while kill -0 "$cl" 2>/dev/null; do
      local now=0
      for p in "$@"; do now=$((now + $(rss_kb "$p"))); done
      [ "$now" -gt "$peak" ] && peak=$now
      sleep 1
    done
  fi
  wait "$cl"
  summary "$label" "$dir/$label.json"
  if [ "$scenario" = idle ]; then
    python3 -c "import json,sys; j=json.loads(open('$dir/$label.json').readline()); n=j['connected']; print(f'$label: RSS of the nodes {$before} kB -> peak {$peak} kB: {($peak-$before)*1024/max(n,1)/1000:.1f} KB per connected socket')"
  fi
}
EXTRA=("$@")

# One etcd.
cport="$(free_port)"; pport="$(free_port)"
etcd --name e --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$cport" \
  --advertise-client-urls "http://127.0.0.1:$cport" --listen-peer-urls "http://127.0.0.1:$pport" \
  --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
  --initial-cluster "e=http://127.0.0.1:$pport" >"$dir/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -s "http://127.0.0.1:$cport/health" | grep -q true && break; sleep 0.1; done

"$bin" cluster init "$dir/certs" --nodes n1,n2,n3 >/dev/null
# Three nodes with R = $2 (data in $1-n1 …), each ready, and with R > 0
# every shard followed; sets addrs and nodes.
start_cluster() { # label replicas
  addrs=(); nodes=()
  local admins=() extra=()
  if [ "$2" -gt 0 ]; then
    extra=(--cluster-replicas "$2" --admin-listen 127.0.0.1:0 --admin-token bench)
  fi
  for n in n1 n2 n3; do
    "$bin" --listen 127.0.0.1:0 --data-dir "$dir/$1-$n" "${flags[@]}" "${extra[@]}" \
      --cluster-node "$n" --cluster-etcd "http://127.0.0.1:$cport" --cluster-quic 127.0.0.1:0 \
      --cluster-certs "$dir/certs/$n" --cluster-members n1,n2,n3 >"$dir/$1-$n.out" 2>"$dir/$1-$n.log" &
    pids+=($!); nodes+=($!)
    addrs+=("$(wait_line "$dir/$1-$n.out" 'listening on http://127\.0\.0\.1:[0-9]+' | sed 's|.*http://||')")
    if [ "$2" -gt 0 ]; then
      admins+=("$(wait_line "$dir/$1-$n.out" 'admin on http://127\.0\.0\.1:[0-9]+' | sed 's|.*http://||')")
    fi
  done
  for a in "${addrs[@]}"; do wait_ready "$a"; done
  for a in "${admins[@]}"; do
    for _ in $(seq 600); do
      status="$(curl -s -H 'Authorization: Bearer bench' "http://$a/cluster/status")"
      if ! grep -q '^leading' <<<"$status"; then sleep 0.1; continue; fi
      if ! grep '^leading' <<<"$status" | awk -v r="$2" 'NF - 3 != r {bad=1} END {exit bad}'; then sleep 0.1; continue; fi
      break
    done
  done
}
run_cluster() { # label
  if [ "${DOORS:-3}" = 1 ]; then
    # Every client on n1: the sockets of rooms owned by n2 and n3 (about
    # two thirds) are remote sockets, held on n1 and on the owner.
    run_chatload "$1" "${addrs[0]}" -- "${nodes[@]}"
  else
    run_chatload "$1" "${addrs[@]}" -- "${nodes[@]}"
  fi
  for p in "${nodes[@]}"; do kill "$p"; done
  wait "${nodes[@]}" 2>/dev/null || true
}

start_cluster cluster 0
run_cluster cluster
if [ -n "${REPLICAS:-}" ]; then
  # A fresh cluster (its own etcd prefix is not needed: the first run's
  # nodes are gone, and R is set again by every node).
  start_cluster "replicated" "$REPLICAS"
  run_cluster "replicated-R$REPLICAS"
  exit 0
fi

# One node alone, the same load.
"$bin" --listen 127.0.0.1:0 --data-dir "$dir/single" "${flags[@]}" >"$dir/single.out" 2>"$dir/single.log" &
pids+=($!)
single=$!
addr="$(wait_line "$dir/single.out" '127\.0\.0\.1:[0-9]+')"
wait_ready "$addr"
run_chatload single "$addr" -- "$single"
