#!/bin/bash
# usage: cr.sh NAME TAG [server args...] -> one JSON line: connect rate of 10,000 at once
name=$1; tag=$2; shift 2
P=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
case $name in
  uws) taskset -c 0 /work/peers-src/out/uws_hub $P > /dev/null & S=$!; AD=raw;;
  *) taskset -c 0 /tmp/mem/$name --listen 127.0.0.1:$P --shards 1 --pin-cores false --log warn "$@" & S=$!; AD=hub;;
esac
sleep 1
out=${OUTDIR:-/tmp/mem/runs}/connect-$name-$tag.json
taskset -c 1 /tmp/mem/loadgen connect --url ws://127.0.0.1:$P/ws --adapter $AD --conns 10000 --rate 0 --hold 2 --json --quiet --out $out > /dev/null
T=$(awk '{print $14+$15}' /proc/$S/stat)
kill $S; wait $S 2>/dev/null
python3 -c "
import json; d=json.load(open('$out'))['connections']
print('$name $tag', '$*', 'established', d['established'], 'rate', round(d['connect_rate_per_s']), 'cpu_ticks', $T)"
