#!/bin/bash
# Memory per idle connection at 10,000: shardhub before (main at 755b3d8) and after (this
# branch), uWebSockets (whose hub subscribes every socket to one topic on open: compare it with
# shardhub's "joined"), alternating, each a fresh server, without and with a warm-up of 200
# connections before the first reading. Usage: run_memory.sh ROUNDS OUT.jsonl
# Binaries: /tmp/mem2/shardhub-before, /tmp/mem2/shardhub-after; SERVERS picks them.
rounds=$1; out=$2
for r in $(seq 1 $rounds); do
  for w in 0 200; do
    for n in ${SERVERS:-before after uws}; do
      for c in one distinct joined; do
        if [ $n = uws ]; then
          [ $c = joined ] || continue
          args=(--server-cmd "taskset -c 0 /work/peers-src/out/uws_hub {port}")
        else
          args=(--server /tmp/mem2/shardhub-$n)
          [ $c = distinct ] && args+=(--distinct-users)
          [ $c = joined ] && args+=(--join lobby --distinct-users)
        fi
        line=$(python3 bench/idle_memory.py --conns 10000 --warmup $w --json "${args[@]}")
        echo "{\"name\":\"$n\",\"round\":$r,\"warmup\":$w,\"case\":\"$c\",\"result\":$line}" >> $out
      done
    done
  done
done
