#!/bin/bash
# Memory per idle connection after a burst of connects and after paced connects, and the
# connect rate: shardhub before (main at 8cd2dd0) and after (the on_quiet collect, the
# coalesced 101 + welcome, the 224-byte slab slot), uWebSockets' hub, alternating, each run a
# fresh server. Usage: run.sh ROUNDS OUTDIR (from the repository root).
# Binaries: /tmp/mem3/shardhub-before, /tmp/mem3/shardhub-after; target/peers/uws/uws_hub.
set -u
rounds=$1; out=$2
uws="taskset -c 0 target/peers/uws/uws_hub {port}"
# 1. compare.py's connect row: 10,000 clients at once (loadgen --rate 0), held 5 s.
python3 bench/compare.py --servers shardhub@/tmp/mem3/shardhub-before,shardhub@/tmp/mem3/shardhub-after,uws \
    --measures connect --rounds "$rounds" --no-build --out "$out/compare-connect" > "$out/compare-connect.log" 2>&1
# 2. Paced (bench/idle_memory.py: one client opening them in turn), joined, cold and after a
#    warm-up of 200.
for r in $(seq 1 "$rounds"); do
  for w in 0 200; do
    for n in before after uws; do
      if [ $n = uws ]; then args=(--server-cmd "$uws"); else args=(--server /tmp/mem3/shardhub-$n --join lobby --distinct-users); fi
      line=$(python3 bench/idle_memory.py --conns 10000 --warmup $w --json "${args[@]}")
      echo "{\"name\":\"$n\",\"round\":$r,\"warmup\":$w,\"result\":$line}" >> "$out/memory-10k.jsonl"
    done
  done
done
# 3. 100,000 over 6 processes, one round each.
for n in before after uws; do
  if [ $n = uws ]; then args=(--server-cmd "target/peers/uws/uws_hub {port}"); else args=(--server /tmp/mem3/shardhub-$n); fi
  line=$(python3 bench/idle_memory_many.py --conns 100000 --servers 6 --rate 8000 --loadgen target/release/shardhub-loadgen --json "${args[@]}")
  echo "{\"name\":\"$n\",\"result\":$line}" >> "$out/memory-100k.jsonl"
done
