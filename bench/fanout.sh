#!/usr/bin/env bash
# Fan-out to one room of N members at several publish rates: deliveries/s and end-to-end
# latency (p50/p99, from the intended send time), with the server and the load generator each
# pinned to its own core. Prints a markdown table; raw loadgen JSON goes to bench/runs/.
#
#   bench/fanout.sh [MEMBERS] [RATES...]       default: 5000 members, rates 20 50 100 200
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
members=${1:-5000}; shift || true
rates=("${@:-20 50 100 200}"); rates=(${rates[@]})
cargo build --release -q -p shardhub -p shardhub-loadgen
out="bench/runs/$(date +%Y-%m-%d)-fanout-$members"
mkdir -p "$out"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cores=$(nproc)
server_core=0; client_core=$(( cores > 1 ? 1 : 0 ))
echo "| members | publish rate | deliveries/s | p50 ms | p99 ms | lost | server CPU |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for rate in "${rates[@]}"; do
    taskset -c $server_core ./target/release/shardhub --shards 1 --listen 127.0.0.1:$port \
        --presence false --log warn \
        --rate-messages-per-sec 0 --rate-bytes-per-sec 0 &  # one publisher sends at $rate/s
    server=$!
    sleep 0.5
    t0=$(awk '{print $14+$15}' /proc/$server/stat)
    taskset -c $client_core ./target/release/shardhub-loadgen fanout --url ws://127.0.0.1:$port/ws \
        --conns "$members" --rooms 1 --publishers 1 --rate "$rate" --duration 10 \
        --connect-rate 5000 --quiet --json --label "shardhub-$rate" > "$out/rate-$rate.json"
    t1=$(awk '{print $14+$15}' /proc/$server/stat)
    kill $server; wait $server 2>/dev/null || true
    python3 - "$out/rate-$rate.json" "$members" "$rate" "$t0" "$t1" <<'PY'
import json, sys, os
run = json.load(open(sys.argv[1]))
members, rate, t0, t1 = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
lat, t = run["latency"], run["traffic"]
secs = run["measured_s"] + 3  # publishing plus setup and grace, for the CPU share
cpu = (t1 - t0) / os.sysconf("SC_CLK_TCK") / secs * 100
p50, p99, dps, lost = lat["p50_ms"], lat["p99_ms"], t["received_per_s"], t["lost"]
print(f"| {members} | {rate}/s | {dps:,.0f} | {p50:.1f} | {p99:.1f} | {lost} | {cpu:.0f}% |")
PY
done
