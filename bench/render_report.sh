#!/usr/bin/env bash
# Renders shardhub-loadgen's HTML reports in headless Chromium (Debian's `chromium`) and writes
# PNG screenshots, to check that a report is something a person can read: plots drawn, tables
# filled, nothing fetched from the network.
#
#   bench/render_report.sh RUN.json [OTHER_RUN.json ...]      -> target/report.png (+ compare.png)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -ge 1 ] || { echo "usage: $0 RUN.json [MORE.json ...]" >&2; exit 2; }
command -v chromium >/dev/null || { echo "render: needs Debian's chromium (apt-get install chromium)" >&2; exit 2; }
cargo build --release -q -p shardhub-loadgen
lg=target/release/shardhub-loadgen
out=target/report-render
mkdir -p "$out"
"$lg" report "$1" -o "$out/report.html"
pages=(report)
if [ $# -ge 2 ]; then
    "$lg" compare "$@" -o "$out/compare.html" > "$out/compare.md"
    pages+=(compare)
fi
for page in "${pages[@]}"; do
    html="$out/$page.html"
    grep -q "<svg" "$html" || { echo "render: $html has no inline SVG plot" >&2; exit 1; }
    if grep -Eq '<(script|link|img)[^>]+(src|href)="https?:' "$html"; then
        echo "render: $html loads something from the network" >&2; exit 1
    fi
    # The flags keep Chromium off the (closed) network and out of any profile.
    timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$(mktemp -d)" --hide-scrollbars --window-size=1280,2000 \
        --screenshot="$PWD/$out/$page.png" "file://$PWD/$html" > /dev/null 2>&1
    size=$(stat -c %s "$out/$page.png")
    [ "$size" -gt 20000 ] || { echo "render: $out/$page.png is suspiciously small ($size bytes)" >&2; exit 1; }
    echo "render: $out/$page.png ($size bytes)"
done
