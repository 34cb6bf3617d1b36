"""`python -m models summary --profile paper`: one JSON object of sizes and FLOPs per network."""

from __future__ import annotations

import argparse
import json
import sys

from models.config import PROFILES, get_profile
from models.summary import summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    summary = sub.add_parser("summary", help="parameter count and forward GFLOP per image of each network")
    summary.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    summary.add_argument("--attention", action="store_true", help="include Stage-II word attention")
    summary.add_argument("--word-dim", type=int, default=384, help="word-feature size with --attention")
    summary.add_argument("--z-dim-stage2", type=int, default=0, help="noise injected into Stage-II")
    args = parser.parse_args(argv)
    stage2 = {"z_dim": args.z_dim_stage2}
    if args.attention:
        stage2.update(attention=True, word_dim=args.word_dim)
    try:
        profile = get_profile(args.profile, stage2=stage2)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"profile": profile.name, "networks": summarize(profile)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
