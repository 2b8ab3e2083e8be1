#!/bin/bash
# Memory per idle connection at 10,000: shardhub before (main) and after (mem), uWebSockets,
# alternating, each a fresh server. Usage: run_memory.sh ROUNDS OUT.jsonl
# (binaries: /tmp/mem/shardhub-main = main at ddb33a1, shardhub-v2 = commit 0605009,
# shardhub-v3 = the final commit of this branch; SERVERS="main v3 uws" picks them)
rounds=$1; out=$2
for r in $(seq 1 $rounds); do
  for n in ${SERVERS:-main v2 uws}; do
    for c in idle joined; do
      if [ $n = uws ]; then
        [ $c = joined ] && continue
        args=(--server-cmd "taskset -c 0 /work/peers-src/out/uws_hub {port}")
      else
        args=(--server /tmp/mem/shardhub-$n)
        [ $c = joined ] && args+=(--join lobby --distinct-users)
      fi
      line=$(python3 bench/idle_memory.py --conns 10000 --json "${args[@]}")
      echo "{\"name\":\"$n\",\"round\":$r,\"case\":\"$c\",\"result\":$line}" >> $out
    done
  done
done
