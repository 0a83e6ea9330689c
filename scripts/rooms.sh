#!/usr/bin/env bash
# The small-rooms load (1,000 rooms of 5, 0.2 messages/s per client, 20 s)
# against one chat-demo build on a fresh data dir; prints the server's CPU
# per million deliveries (and its user and kernel parts) and the latency
# from chatload's JSON report.
#
#   cargo build --release -p benches -p chat-demo
#   scripts/rooms.sh target/release/chat-demo [label [server flags...]]
#   scripts/rooms.sh target/release/chat-demo delay-1ms --commit-delay-us 1000
#   LOAD="--scenario fanout --clients 1000" scripts/rooms.sh target/release/chat-demo
#   scripts/rooms.sh target/release/relay relay   (the bare relay, same load)
#
# Uses target/release/chatload; python3 for the summary.
set -euo pipefail
bin="$1"
label="${2:-run}"
shift $(( $# < 2 ? $# : 2 ))
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
load="${LOAD:---scenario rooms --rooms 1000 --per-room 5}"
if [ "$(basename "$bin")" = relay ]; then
  "$bin" --listen 127.0.0.1:0 "$@" >"$dir/log" 2>&1 &
else
  "$bin" --listen 127.0.0.1:0 --data-dir "$dir/data" --trust-client-ip-header x-forwarded-for \
    --max-connections-per-ip 100000 --max-tcp-connections-per-ip 100000 \
    --joins-per-minute 100000 "$@" >"$dir/log" 2>&1 &
fi
pid=$!
# The server logs its address once it listens.
addr=""
for _ in $(seq 100); do
  addr="$(grep -oE '127\.0\.0\.1:[0-9]+' "$dir/log" | head -1 || true)"
  [ -n "$addr" ] && break
  sleep 0.1
done
"$root/target/release/chatload" --url "ws://$addr" --server-pid "$pid" $load \
  --rate 0.2 --duration 20 2>/dev/null | grep '^{' >"$dir/out"
kill "$pid"
wait "$pid" 2>/dev/null || true
python3 - "$dir/out" "$label" <<'PY'
import json, sys
j = json.loads(open(sys.argv[1]).readline())
lat = j["latency_ms"]
per_m = 1e6 / max(j["deliveries"], 1)
print(f'{sys.argv[2]}: {j["server_cpu_s_per_million_deliveries"]:.2f} CPU s per million deliveries '
      f'(user {j["server_user_s"] * per_m:.2f}, sys {j["server_sys_s"] * per_m:.2f}), '
      f'p50 {lat["p50"]} ms, p99 {lat["p99"]} ms, lost {j["lost"]}, duplicated {j["duplicated"]}')
if j["lost"]:
    print(f'  sent {j["sent"]} ({j["sent_at_drain"]} when the drain ended), accepted {j["accepted"]}, '
          f'drained {j["drained"]} in {j["drain_s"]:.4f} s, disconnected {j["disconnected"]}')
PY
