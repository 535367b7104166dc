"""Benchmark: our callers' CPU next to `lk perf load-test` audio publishers' CPU, same server.

Not a test. On one native livekit-server (rig.native, no agent), in one run:
  1. N of our callers (bench/loadgen_capacity.py: real voice drivers, the stand-in responder as
     the far end): driver CPU per caller;
  2. N audio publishers of the LiveKit CLI (`lk perf load-test --audio-publishers N`, built by
     bench/install-lk.sh); if lk cannot be built, the script says why and runs bench/lkpub
     instead: the same kind of publisher (Go server SDK, a pre-encoded Opus clip in a loop, no
     subscription), written for this rig. The table names which one ran.
A caller does more than a publisher (Opus encode of its microphone, subscription and Opus
decode of the agent, onset detection, the conversation), so the ratio is what a full caller
costs over the cheapest possible audio participant.

    flock /tmp/lkrig-live.lock .venv/bin/python bench/lk_compare.py --callers 10 --publishers 10,40
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import agentload as al  # noqa: E402
from bench import loadgen_capacity as lc  # noqa: E402
from rig import native, paths, procs  # noqa: E402

CLIP_TEXT = ("What programs do you have for kids? She is seven years old, and a girl. "
             "Do you have anything on Saturday morning?")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "lk_compare.jsonl"
LKPUB_SRC = REPO / "bench" / "lkpub"


def lk_binary() -> tuple[Path | None, str]:
    """(lk, '') or (None, why not)."""
    r = subprocess.run(["bash", str(REPO / "bench" / "install-lk.sh")], capture_output=True, text=True)
    if r.returncode == 0:
        return Path(r.stdout.strip().splitlines()[-1]), ""
    return None, r.stderr.strip()


def lkpub_binary() -> Path:
    """bench/lkpub, built with `go build` the first time this checkout's sources are used (about
    a minute cold, so scripts/setup.d/40-bench-tools.sh builds it ahead). Cached by the hash of
    its sources, as the media engine is: a changed source builds a new one."""
    h = hashlib.sha256()
    for f in sorted(LKPUB_SRC.glob("*")):
        if f.name not in ("go.mod", "go.sum") and f.suffix != ".go":
            continue  # e.g. a binary a plain `go build` left there
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    out = paths.cache_dir() / "lkpub" / h.hexdigest()[:16] / "lkpub"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".lkpub.{os.getpid()}")
        subprocess.run(["go", "build", "-trimpath", "-o", str(tmp), "."], cwd=LKPUB_SRC, check=True,
                       env=dict(os.environ, CGO_ENABLED="0"))
        os.replace(tmp, out)  # concurrent builders: each file is whole, the last rename wins
    return out


def packets_per_page(ogg: Path) -> list[int]:
    """The packets that end on each page of an Ogg file (a lacing value under 255 ends one)."""
    data, counts, i = ogg.read_bytes(), [], 0
    while data[i:i + 4] == b"OggS" and i + 27 <= len(data):
        lacing = data[i + 27:i + 27 + data[i + 26]]
        counts.append(sum(1 for v in lacing if v < 255))
        i += 27 + len(lacing) + sum(lacing)
    return counts if i == len(data) else []


def opus_clip() -> Path:
    """espeak-ng speech, Opus at 32 kb/s in 20 ms packets, one per Ogg page (cached).

    lkpub sends each page as one packet, and the Go SDK refuses a sample over 1,200 bytes: on
    the first one the publisher stops sending, silently but for a log line. opusenc's
    --max-delay 0 means no limit in opus-tools 0.2 (Debian's), which packed the clip into two
    pages of ~200 packets; --max-delay 20 flushes every 20 ms packet onto a page of its own."""
    out = paths.cache_dir() / "lkpub" / "clip.ogg"
    if out.exists() and set(packets_per_page(out)) == {1}:
        return out
    for tool, package in (("espeak-ng", "espeak-ng"), ("opusenc", "opus-tools")):
        if shutil.which(tool) is None:
            raise SystemExit(f"lk_compare: no {tool} on PATH: run `bash scripts/setup` "
                             f"(apt-get install {package})")
    out.parent.mkdir(parents=True, exist_ok=True)
    wav, tmp = out.with_suffix(f".{os.getpid()}.wav"), out.with_suffix(f".{os.getpid()}.ogg")
    subprocess.run(["espeak-ng", "-w", str(wav), CLIP_TEXT], check=True)
    subprocess.run(["opusenc", "--quiet", "--bitrate", "32", "--framesize", "20", "--max-delay", "20",
                    str(wav), str(tmp)], check=True)
    wav.unlink()
    if set(packets_per_page(tmp)) != {1}:
        raise SystemExit(f"lk_compare: opusenc did not write one packet per Ogg page in {tmp} "
                         f"(packets per page: {packets_per_page(tmp)[:10]}...)")
    os.replace(tmp, out)  # never a half-written clip in the cache
    return out


def proc_cpu_s(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    f = raw[raw.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / al.CLK_TCK


def incoming_packets(metrics_url: str) -> float:
    """livekit-server's count of packets received: livekit_packet_total{direction="incoming"}
    (v1.13.5: labels country, direction, transmission, node_id, node_type). The server adds a
    track's RTP packets to it from the track's stats every 5 s (connectionquality's
    UpdateInterval), not per packet, so a window needs 5 s or more to see each track counted;
    the WebSocket's signal messages are counted too (a few per participant)."""
    got = procs.http_get(metrics_url, timeout=5)
    if got is None:
        raise RuntimeError(f"livekit-server metrics at {metrics_url} did not answer")
    total = 0.0
    for line in got[1].decode().splitlines():
        if line.startswith("livekit_packet_total{") and 'direction="incoming"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_publishers(binary: Path, n: int, duration: float, env: dict[str, str], lk: bool,
                   metrics_url: str) -> dict[str, float]:
    """CPU of `n` publishers over `duration` s after all are up (5 s settle), and the packets
    per second per publisher that livekit-server received meanwhile (a check that they send)."""
    if lk:
        argv = [str(binary), "perf", "load-test", "--url", env["LIVEKIT_URL"], "--api-key",
                env["LIVEKIT_API_KEY"], "--api-secret", env["LIVEKIT_API_SECRET"], "--room",
                f"lkbench-{os.getpid()}", "--audio-publishers", str(n), "--duration", f"{duration + 15:.0f}s"]
    else:
        argv = [str(binary), "-n", str(n), "-opus", str(opus_clip()), "-duration", f"{duration + 6:.0f}s"]
    load0 = os.getloadavg()[0]
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        if lk:
            time.sleep(8.0)  # lk prints no readiness line we rely on: give it its ramp
        else:
            assert p.stdout is not None
            ready = json.loads(p.stdout.readline() or "{}")
            if ready.get("ready") != n:
                raise RuntimeError(f"lkpub: only {ready} publishers came up")
        time.sleep(5.0)
        t0, c0, k0 = time.monotonic(), proc_cpu_s(p.pid), incoming_packets(metrics_url)
        time.sleep(duration - 5.0)
        t1, c1, k1 = time.monotonic(), proc_cpu_s(p.pid), incoming_packets(metrics_url)
    except BaseException:
        p.kill()
        raise
    finally:
        rc = p.wait(60)
    pct = 100.0 * (c1 - c0) / (t1 - t0)
    return {"publishers": n, "cpu_pct": pct, "cpu_pct_per_publisher": pct / n, "rc": rc,
            "server_packets_per_s_per_publisher": (k1 - k0) / (t1 - t0) / n,
            "loadavg_1m": [load0, os.getloadavg()[0]]}


async def run(args: argparse.Namespace) -> int:
    lk, why = lk_binary()
    if lk is None:
        print(f"lk_compare: no lk: {why}\nlk_compare: running bench/lkpub (an lk-style publisher) instead",
              file=sys.stderr)
    binary = lk or lkpub_binary()
    opus_clip()
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = native.NativeStack(native.NativeOptions(
        agents=0, loadgen_workers=0, run_dir=run_dir, port_offset=args.port_offset,
        env_file=run_dir / ".env", say=lambda _m: None))
    info = stack.start()
    env = dict(os.environ, LIVEKIT_URL=info.livekit_url, LIVEKIT_API_KEY=info.api_key,
               LIVEKIT_API_SECRET=info.api_secret, PYTHONPATH=os.pathsep.join(filter(None, [
                   str(REPO), str(REPO / "instrument"), os.environ.get("PYTHONPATH")])))
    from bench.responder import REPLY
    from loadgen.audio import render

    for text in (*lc.TEXTS, REPLY):
        render(text)
    rows = []
    try:
        # loadgen_capacity's own defaults for everything but the duration: a hand-made
        # Namespace missed the options it gained later (driver_cpus, far_cpus)
        cap_args = lc.parser().parse_args(["--duration", str(args.duration)])
        for n in [int(x) for x in args.callers.split(",") if x]:
            res = lc.summarize(await lc.run_level(n, cap_args, env), None)
            rows.append({"what": "rig callers", "n": n, "cpu_pct_per_participant": res["cpu_pct_per_caller"],
                         "turns": res["turns"], "send_jitter_ms_p99": res["send_jitter_ms_p99"],
                         "loadavg_1m": res["loadavg_1m"]})
        for n in [int(x) for x in args.publishers.split(",") if x]:
            r = await asyncio.to_thread(run_publishers, binary, n, args.duration, env, lk is not None,
                                        info.livekit_metrics_url)
            rows.append({"what": "lk publishers" if lk else "lkpub publishers (lk stand-in)", "n": n,
                         "cpu_pct_per_participant": r["cpu_pct_per_publisher"], "rc": r["rc"],
                         "server_packets_per_s_per_publisher": r["server_packets_per_s_per_publisher"],
                         "loadavg_1m": r["loadavg_1m"]})
    finally:
        stack.stop()
    pubs = [r["cpu_pct_per_participant"] for r in rows if "publishers" in str(r["what"])]
    ref = min(pubs) if pubs else None
    print(f"{'participants':<34}{'n':>4}{'CPU/participant':>17}{'per core':>10}{'ratio':>7}{'load 1m':>11}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for r in rows:
            c = r["cpu_pct_per_participant"]
            ratio = f"{c / ref:7.1f}" if ref and c else "      -"
            pps = r.get("server_packets_per_s_per_publisher")
            print(f"{r['what']:<34}{r['n']:>4}{c:>16.2f}%{100 / c if c else 0:>10.0f}{ratio}"
                  f"{r['loadavg_1m'][0]:>6.1f}-{r['loadavg_1m'][1]:<4.1f}"
                  + (f"  server received {pps:.1f} packets/s per publisher" if pps is not None else ""))
            # the proxy's address stays out of the results (they are committed)
            why_kept = re.sub(r"https?://[^/\s,)]+", "<GOPROXY>", why) if why else None
            f.write(al.summary_line(**al.machine(), lk_unavailable=why_kept, **r) + "\n")
    silent = [r["n"] for r in rows if r.get("server_packets_per_s_per_publisher") == 0]
    if silent:  # then their CPU is that of publishers that do not publish: not a result
        print(f"lk_compare: livekit-server received no packets at publisher level(s) {silent}: "
              "they did not send (their own log is above)", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callers", default="10", help="comma-separated caller counts")
    p.add_argument("--publishers", default="10,40", help="comma-separated publisher counts")
    p.add_argument("--duration", type=float, default=45.0, help="seconds per level")
    p.add_argument("--port-offset", type=int, default=12900)
    p.add_argument("--run-dir", default="/tmp/lkrig-bench-lk")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines are appended here")
    args = p.parse_args()
    if args.duration < 12:
        # the publishers' window is duration - 5 s, and the server counts packets every 5 s
        p.error("--duration: at least 12 s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
