#!/usr/bin/env bash
# Checks that `baton trace --html` opens in headless Chromium and shows the chart.
#
# Starts `baton dev`, runs examples/eventful.json (a retry, a timeout, an escalation), has a
# human resolve the escalation, writes the job's trace page, then asks Chromium for the page's
# DOM and a screenshot: the DOM must hold one bar per attempt and the human's wait, and the
# screenshot must show the bars in their colours (succeeded, failed, timed out). Installs
# Debian's chromium when it is missing. Leaves the page and screenshot in $OUT (default: a
# temp dir) and prints their paths. Exit 0 when everything checked out.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PATH="$("$root/scripts/ensure-deps.sh"):$PATH"
export PATH

if ! command -v chromium >/dev/null 2>&1; then
  echo "check-trace-html: installing Debian's chromium" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
fi
cargo build --quiet --bins
baton="$root/target/debug/baton"

out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
"$baton" dev >"$out/dev.log" 2>&1 &
dev=$!
trap 'kill -INT $dev 2>/dev/null || true; wait $dev 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  grep -q "Baton is running" "$out/dev.log" && break
  sleep 0.5
done
url="$(grep -o 'nats://[0-9.:]*' "$out/dev.log" | head -1)"
[ -n "$url" ] || { cat "$out/dev.log" >&2; echo "baton dev did not start" >&2; exit 1; }

# Escalates: exit code 2.
code=0
"$baton" --nats-url "$url" submit examples/eventful.json --follow >"$out/follow.txt" || code=$?
[ "$code" -eq 2 ] || { cat "$out/follow.txt" >&2; echo "expected the job to escalate (exit 2), got $code" >&2; exit 1; }
job="$(head -1 "$out/follow.txt")"
"$baton" --nats-url "$url" escalations resolve "$job.write" --output '{"text": "written by hand"}' --by check-script >/dev/null
for _ in $(seq 1 50); do
  "$baton" --nats-url "$url" trace "$job" --html "$out/trace.html" >"$out/trace.txt"
  grep -q "job succeeded" "$out/trace.txt" && break
  sleep 0.1
done

chrome=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars
  --user-data-dir="$out/chrome-profile")
"${chrome[@]}" --dump-dom "file://$out/trace.html" >"$out/dom.html" 2>/dev/null
"${chrome[@]}" --window-size=1100,700 --screenshot="$out/trace.png" "file://$out/trace.html" >/dev/null 2>&1

python3 - "$out/dom.html" "$out/trace.png" <<'PY'
import struct, sys, zlib

dom = open(sys.argv[1], encoding="utf-8").read()
bars = dom.count('class="bar"')
waits = dom.count('class="escalation"')
assert bars == 7, f"expected 7 attempt bars in the DOM Chromium loaded, found {bars}"
assert waits == 1, f"expected the human's wait drawn once, found {waits}"

def pixels(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and color in (2, 6), f"unsupported PNG (depth {depth}, colour {color})"
    bpp = 3 if color == 2 else 4
    raw, stride, prev, rows = zlib.decompress(idat), width * bpp, bytearray(width * bpp), []
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    for line in rows:
        for i in range(0, stride, bpp):
            yield tuple(line[i:i + 3])

counts = {}
for rgb in pixels(sys.argv[2]):
    counts[rgb] = counts.get(rgb, 0) + 1
legend = 12 * 12  # each colour also fills one legend square
for name, rgb in [("succeeded", (0x2E, 0x7D, 0x32)), ("failed", (0xC6, 0x28, 0x28)),
                  ("timed out", (0xEF, 0x6C, 0x00))]:
    seen = counts.get(rgb, 0)
    assert seen > legend + 200, f"the chart shows no {name} bar: {seen} pixels of {rgb}"
    print(f"check-trace-html: {name} bars: {seen - legend} pixels")
print("check-trace-html: the DOM has 7 attempt bars and 1 human wait")
PY
echo "check-trace-html: OK — page $out/trace.html, screenshot $out/trace.png"
