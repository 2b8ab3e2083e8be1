#!/bin/bash
# strace -c of a server (one shard, core 0) under 100 echo clients at 2,000/s for 5 s: strace_echo.sh BINARY
loadgen=$(dirname "$0")/../../../target/release/shardhub-loadgen
out=${OUT:-/tmp}
bin=$1; port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
taskset -c 0 $bin --listen 127.0.0.1:$port --shards 1 --pin-cores false --log warn --rate-messages-per-sec 0 --rate-bytes-per-sec 0 >/dev/null 2>&1 & pid=$!
sleep 0.5
strace -c -f -q -o $out/strace-echo-$(basename $bin).txt -p $pid & sp=$!
sleep 0.5
taskset -c 1 $loadgen echo --url ws://127.0.0.1:$port/ws --conns 100 --rate 2000 --duration 5 --quiet --json > $out/echo-$(basename $bin).json
sleep 0.3; kill $sp; wait $sp; kill $pid; wait $pid 2>/dev/null
python3 -c "import json;print('round trips', json.load(open('$out/echo-$(basename $bin).json'))['traffic']['received'])"
head -12 $out/strace-echo-$(basename $bin).txt
