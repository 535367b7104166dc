"""`python -m loadgen.cli`: one call against a running stack, JSON result on stdout.

Exit status: 0 when the conversation completed, 1 when it ended with another outcome
(no_agent, dead_air, ...; the JSON says which), 2 on bad input or a missing tool.
Keys come from LIVEKIT_API_KEY / LIVEKIT_API_SECRET and are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from loadgen import netprofile
from loadgen.audio import RenderError, UtteranceCache
from loadgen.caller import Caller, CallerConfig


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty utterance")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadgen.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("LIVEKIT_URL"),
                   help="LiveKit server ws:// URL (default: $LIVEKIT_URL)")
    p.add_argument("--agent-name", default=os.environ.get("AGENT_NAME", "lkrig-agent"))
    p.add_argument("--scenario", default="seed")
    p.add_argument("--profile", default="fast")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--network", default="perfect",
                   help="network profile (loadgen/networks/*.yaml) impairing the caller's media")
    p.add_argument("--say", action="append", type=_nonempty, default=[], metavar="TEXT",
                   help="an utterance; repeat for several turns (turn ids t1, t2, ...)")
    p.add_argument("--listen-first", action="store_true",
                   help="collect the agent's greeting (turn id 'greeting') before speaking")
    p.add_argument("--barge-in-say", type=_nonempty, metavar="TEXT",
                   help="after the last --say, speak TEXT into the agent's reply")
    p.add_argument("--barge-in-ms", type=float, default=500.0,
                   help="how far into the reply the barge-in starts (default 500)")
    p.add_argument("--barge-in-for-ms", type=_positive(float),
                   help="stop the barge-in utterance after this much speech")
    p.add_argument("--join-timeout", type=_positive(float), default=15.0)
    p.add_argument("--connect-timeout", type=_positive(float), default=10.0)
    p.add_argument("--dead-air-timeout", type=_positive(float), default=8.0)
    p.add_argument("--settle", type=_positive(float), default=1.5,
                   help="agent quiet this long after replying ends a turn (default 1.5 s)")
    p.add_argument("--turn-timeout", type=_positive(float), default=30.0)
    p.add_argument("--room-prefix", default="lkrig")
    return p


def _conversation_outcome(join_outcome: str, turn_outcomes: list[str]) -> str:
    if join_outcome != "ok":
        return join_outcome
    return next((o for o in turn_outcomes if o != "ok"), "completed")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = CallerConfig.from_env(
        args.url, agent_name=args.agent_name, scenario=args.scenario, profile=args.profile,
        seed=args.seed, network=args.network, room_prefix=args.room_prefix, join_timeout_s=args.join_timeout,
        connect_timeout_s=args.connect_timeout, dead_air_timeout_s=args.dead_air_timeout,
        settle_s=args.settle, turn_timeout_s=args.turn_timeout,
    )
    netprofile.get(cfg.network)  # NetworkError (a ValueError) names the file and field
    utterances = UtteranceCache(cfg.lead_ms, cfg.trail_ms)
    texts = [*args.say, *([args.barge_in_say] if args.barge_in_say else [])]
    for text in texts:  # fail on a missing espeak-ng/sox before touching the server
        await utterances.aget(text)

    caller = Caller(cfg, utterances=utterances)
    turns: list[dict[str, Any]] = []
    try:
        join = await caller.start()
        if join.outcome == "ok":
            if args.listen_first:
                # Greeting latency counts from the dispatch request.
                since = caller.dispatched_at or 0.0
                turns.append((await caller.listen_turn("greeting", since)).to_dict())
            for i, text in enumerate(args.say, 1):
                turn_id = f"t{i}"
                eou = await caller.speak(turn_id, text)
                is_last = i == len(args.say)
                if is_last and args.barge_in_say:
                    stop = asyncio.Event()
                    listen = asyncio.ensure_future(caller.listen_turn(turn_id, eou, stop=stop))
                    barge = await caller.barge_in(
                        "barge-in", args.barge_in_say, after_ms=args.barge_in_ms, since=eou,
                        max_speech_ms=args.barge_in_for_ms)
                    stop.set()
                    turns.append((await listen).to_dict())
                    if barge.eou is not None:
                        after = await caller.listen_turn("barge-in", barge.eou)
                        turns.append({**after.to_dict(), "barge_in": barge.to_dict()})
                    continue
                turns.append((await caller.listen_turn(turn_id, eou)).to_dict())
                if turns[-1]["outcome"] in ("agent_lost", "no_agent"):
                    break
    finally:
        teardown = await caller.close()
    return {
        "room": caller.room_name,
        "agent_name": cfg.agent_name,
        "scenario": cfg.scenario,
        "profile": cfg.profile,
        "seed": cfg.seed,
        "network": cfg.network,
        "outcome": _conversation_outcome(join.outcome, [t["outcome"] for t in turns]),
        "join": join.to_dict(),
        "turns": turns,
        "agent_speech_segments": len(caller.monitor.segments),
        "teardown": teardown.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except (ValueError, RenderError) as e:
        print(f"loadgen.cli: error: {e}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if result["outcome"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
