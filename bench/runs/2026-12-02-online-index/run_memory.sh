#!/bin/bash
# Memory per idle connection at 10,000: shardhub before (main at 755b3d8) and after (the online
# index), uWebSockets, alternating, each a fresh server. Usage: run_memory.sh ROUNDS OUT.jsonl
# Binaries: /tmp/mem2/shardhub-before, /tmp/mem2/shardhub-after; SERVERS picks them.
rounds=$1; out=$2
for r in $(seq 1 $rounds); do
  for n in ${SERVERS:-before after uws}; do
    for c in one distinct joined; do
      if [ $n = uws ]; then
        [ $c = one ] || continue
        args=(--server-cmd "taskset -c 0 /work/peers-src/out/uws_hub {port}")
      else
        args=(--server /tmp/mem2/shardhub-$n)
        [ $c = distinct ] && args+=(--distinct-users)
        [ $c = joined ] && args+=(--join lobby --distinct-users)
      fi
      line=$(python3 bench/idle_memory.py --conns 10000 --json "${args[@]}")
      echo "{\"name\":\"$n\",\"round\":$r,\"case\":\"$c\",\"result\":$line}" >> $out
    done
  done
done
