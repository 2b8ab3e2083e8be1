#!/bin/bash
# Idle CPU of two shardhub builds side by side, each with one shard and no client: time on CPU
# of all their threads (/proc/PID/task/*/schedstat, nanoseconds) over the same 60 s.
#   BEFORE=/path/to/old/shardhub [AFTER=target/release/shardhub] bash idle_cpu.sh
${BEFORE:?the build before} --listen 127.0.0.1:0 --shards 1 --log warn --pin-cores false > /dev/null 2>&1 & A=$!
${AFTER:-target/release/shardhub} --listen 127.0.0.1:0 --shards 1 --log warn --pin-cores false > /dev/null 2>&1 & B=$!
sleep 5
t() { cat /proc/$1/task/*/schedstat | awk "{s+=\$1} END {print s}"; }
a0=$(t $A); b0=$(t $B); sleep 60; a1=$(t $A); b1=$(t $B)
echo "before: $(( (a1-a0)/60000 )) us/s on CPU; after: $(( (b1-b0)/60000 )) us/s (schedstat, 60 s)"
kill $A $B
