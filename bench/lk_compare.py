"""Benchmark: our callers' CPU next to the LiveKit CLI's load-test participants, same server.

Not a test. On one native livekit-server (rig.native, no agent), in one run:
  1. N of our callers (bench/loadgen_capacity.py: real voice drivers, the stand-in responder as
     the far end): driver CPU per caller, a caller being one full conversation;
  2. N audio publishers of `lk perf load-test --audio-publishers N`: publish-only, a
     pre-encoded Opus clip in a loop, no subscription;
  3. N echo rooms of `lk perf agent-load-test --rooms N`: one echo participant per room, which
     subscribes to the agent's audio and sends every payload back 5 s later, undecoded. The
     agent is bench/responder.py, talking (bench/lkecho.py).
lk comes from bench/install-lk.sh (or a binary placed in its cache: LK_CLI_VERSION). Where lk
cannot be had, the script says why and runs bench/lkpub instead, the same kinds of participant
written for this rig on the same Go SDK; the table names which one ran.

    .venv/bin/python bench/lk_compare.py --callers 10,40 --publishers 10,40 \
        --echo-rooms 10,40
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
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import agentload as al  # noqa: E402
from bench import lkecho  # noqa: E402
from bench import loadgen_capacity as lc  # noqa: E402
from bench.lkmeter import incoming_packets, proc_cpu_s  # noqa: E402
from rig import native, paths  # noqa: E402

CLIP_TEXT = ("What programs do you have for kids? She is seven years old, and a girl. "
             "Do you have anything on Saturday morning?")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "lk_compare.jsonl"
LKPUB_SRC = REPO / "bench" / "lkpub"
# why a built lk's publishers may send nothing (docs/benchmarks.md, section 1)
LFS_HINT = ("an lk built from a source checkout without its Git LFS objects embeds pointer files "
            "as its clips (pkg/provider/resources/*.ogg) and sends nothing")


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
    # lk writes its statistics table to stdout at the end: a pipe nobody reads could fill
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL if lk else subprocess.PIPE, text=True)
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
        print(f"lk_compare: no lk: {why}\nlk_compare: running bench/lkpub (lk-style participants) instead",
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
        for n in [int(x) for x in args.echo_rooms.split(",") if x]:
            r = await lkecho.run_echo(binary, n, args.duration, env, lk is not None, info.livekit_metrics_url)
            rows.append({"what": "lk echo rooms" if lk else "lkpub echo rooms (lk stand-in)", "n": n,
                         "cpu_pct_per_participant": r["cpu_pct_per_room"], "rc": r["rc"],
                         "rooms_echoing": r["rooms_echoing"], "ramp_s": r["ramp_s"],
                         "server_packets_per_s_per_room": r["server_packets_per_s_per_room"],
                         "loadavg_1m": r["loadavg_1m"]})
    finally:
        stack.stop()
    version = None
    if lk is not None:  # "lk version 2.18.3"
        version = subprocess.run([str(lk), "--version"], capture_output=True, text=True).stdout.split()[-1]
    return report(rows, Path(args.out), why, version)


def report(rows: list[dict[str, Any]], out: Path, why: str, lk_version: str | None) -> int:
    """Prints the table, appends the result lines; 1 when a level's participants did not do their
    part (then their CPU is not a result)."""
    callers = {r["n"]: r["cpu_pct_per_participant"] for r in rows if r["what"] == "rig callers"}

    def caller_over(r: dict[str, Any]) -> str:
        """A caller's CPU over this participant's, at the same count (else the largest count)."""
        c = callers.get(r["n"]) or (callers[max(callers)] if callers else None)
        mine = r["cpu_pct_per_participant"]
        return f"{c / mine:12.1f}" if c and mine and r["what"] != "rig callers" else f"{'-':>12}"

    print(f"{'participants':<34}{'n':>4}{'CPU/participant':>17}{'per core':>10}{'caller/this':>12}"
          f"{'load 1m':>11}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # the proxy's address stays out of the results (they are committed)
    why_kept = re.sub(r"https?://[^/\s,)]+", "<GOPROXY>", why) if why else None
    with out.open("a") as f:
        for r in rows:
            c = r["cpu_pct_per_participant"]
            pps = r.get("server_packets_per_s_per_publisher", r.get("server_packets_per_s_per_room"))
            print(f"{r['what']:<34}{r['n']:>4}{c:>16.2f}%{100 / c if c else 0:>10.0f}{caller_over(r)}"
                  f"{r['loadavg_1m'][0]:>6.1f}-{r['loadavg_1m'][1]:<4.1f}"
                  + (f"  server received {pps:.1f} packets/s each" if pps is not None else "")
                  + (f", {r['rooms_echoing']} of {r['n']} rooms echoed" if "rooms_echoing" in r else ""))
            kept = {"lk_unavailable": why_kept, "lk_version": lk_version}
            f.write(al.summary_line(**al.machine(), **kept, **r) + "\n")
    failed = 0
    silent = [r["n"] for r in rows if r.get("server_packets_per_s_per_publisher") == 0]
    if silent:
        print(f"lk_compare: livekit-server received no packets at publisher level(s) {silent}: they did "
              f"not send (if lk ran: {LFS_HINT})", file=sys.stderr)
        failed = 1
    mute = [r["n"] for r in rows if r.get("rooms_echoing", r["n"]) < r["n"]]
    if mute:
        print(f"lk_compare: at echo level(s) {mute} not every room had an agent to echo "
              "(its table or log is above)", file=sys.stderr)
        failed = 1
    return failed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callers", default="10", help="comma-separated caller counts")
    p.add_argument("--publishers", default="10,40", help="comma-separated publisher counts")
    p.add_argument("--echo-rooms", default="10", help="comma-separated echo room counts")
    p.add_argument("--duration", type=float, default=45.0, help="seconds per level")
    p.add_argument("--port-offset", type=int, default=12900)
    p.add_argument("--run-dir", default=str(Path(tempfile.gettempdir()) / "lkrig-bench-lk"))
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines are appended here")
    args = p.parse_args()
    if args.duration < 12:
        # the publishers' window is duration - 5 s, and the server counts packets every 5 s
        p.error("--duration: at least 12 s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
