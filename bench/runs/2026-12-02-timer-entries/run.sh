#!/bin/bash
# 8-byte timer-wheel entries against 16-byte ones: memory per idle connection, paced (joined,
# cold and after a warm-up of 200) and at 100,000, alternating, each run a fresh server.
# Usage: run.sh ROUNDS OUTDIR (from the repository root).
# Binaries: /tmp/mem3/shardhub-wheel (16-byte entries), /tmp/mem3/shardhub-head (8-byte).
set -u
rounds=$1; out=$2
for r in $(seq 1 "$rounds"); do
  for w in 0 200; do
    for n in wheel head; do
      line=$(python3 bench/idle_memory.py --conns 10000 --warmup $w --join lobby --distinct-users --json --server /tmp/mem3/shardhub-$n)
      echo "{\"name\":\"$n\",\"round\":$r,\"warmup\":$w,\"result\":$line}" >> "$out/memory-10k.jsonl"
    done
  done
done
for n in wheel head; do
  line=$(python3 bench/idle_memory_many.py --conns 100000 --servers 6 --rate 8000 --loadgen target/release/shardhub-loadgen --json --server /tmp/mem3/shardhub-$n)
  echo "{\"name\":\"$n\",\"result\":$line}" >> "$out/memory-100k.jsonl"
done
