#!/bin/bash
# The explorer's idle cost (docs/explorer.md): CPU and RSS of node 0 of a fresh
# testnet over 60 s without a browser, then 60 s each with the network page and a
# provider's page open in headless chromium. Needs a release build (cargo build --release) and chromium.
set -e
cd "$(dirname "$0")/.."
rm -rf /tmp/idlenet
./target/release/agora testnet up --dir /tmp/idlenet --base-port 29600 --json > /tmp/idlenet.json
PID=$(python3 -c "import json;print(json.load(open('/tmp/idlenet.json'))['nodes'][0]['pid'])")
API=http://127.0.0.1:29601
sleep 20
measure() {
  local t0=$(awk '{print $14+$15}' /proc/$PID/stat); sleep 60; local t1=$(awk '{print $14+$15}' /proc/$PID/stat)
  local rss=$(awk '/VmRSS/{print $2}' /proc/$PID/status)
  echo "$1 cpu_pct=$(python3 -c "print(round(($t1-$t0)/100/60*100,2))") rss_kib=$rss"
}
measure "without-browser"
# The network page (live header and block feed), then a provider's page
# (live header, and its figures re-rendered by the node every 5 s).
PROVIDER=$(curl -s $API/v1/providers | python3 -c "import json,sys;print(json.load(sys.stdin)[0]['address'])")
for page in /explorer/ /explorer/providers/$PROVIDER; do
  chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --remote-debugging-port=29650 $API$page >/dev/null 2>&1 &
  CH=$!
  sleep 5
  measure "open:$page"
  kill $CH 2>/dev/null || true
  sleep 2
done
# Again without: the node's RSS grows a little as it runs, whatever is open.
measure "without-browser-again"
./target/release/agora testnet down --dir /tmp/idlenet >/dev/null
