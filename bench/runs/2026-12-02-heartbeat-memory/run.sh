#!/bin/bash
# RSS growth per connection while 10,000 idle clients are pinged every 2 s: before (the timer
# wheel's slots keep their largest capacity) and after (a drained slot gives it back).
# shardhub-loadgen `connect` opens them at 5,000/s and answers every ping; the server's RSS is
# read every 2 s of a 60 s hold. Usage: run.sh BIN TAG (from the repository root); prints
# "TAG t=<s> <bytes per connection>" lines.
set -u
bin=$1; tag=$2
port=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
taskset -c 0 "$bin" --listen 127.0.0.1:$port --shards 1 --presence false --log warn --pin-cores false \
    --rate-messages-per-sec 0 --rate-bytes-per-sec 0 --ping-interval 2s &
pid=$!
sleep 1
base=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
taskset -c 1 target/release/shardhub-loadgen connect --url ws://127.0.0.1:$port/ws --adapter hub \
    --quiet --json --conns 10000 --rate 5000 --hold 60 --out /tmp/heartbeat-$tag.json > /dev/null 2>&1 &
lg=$!
t=0
while kill -0 $lg 2>/dev/null; do
  sleep 2; t=$((t + 2))
  rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  echo "$tag t=$t $(( (rss - base) * 1024 / 10000 ))"
done
wait $lg
python3 -c "import json;c=json.load(open('/tmp/heartbeat-$tag.json'))['connections'];print('$tag established', c['established'])"
kill -TERM $pid; wait $pid 2>/dev/null
