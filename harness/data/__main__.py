"""Dataset commands.

  python -m harness.data build shapes --out URI [--n 20000] [--seed 0] [--resolutions 64,256]
  python -m harness.data inspect --kind shapes|cub|flowers --root URI
  python -m harness.data judge --root URI [--resolution 64]      (train or load the shapes judge)
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from harness import cli


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def _strs(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(",") if x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the built-in dataset into Parquet shards")
    b.add_argument("kind", choices=["shapes"])
    b.add_argument("--out", required=True, help="local path or s3://bucket/prefix")
    b.add_argument("--n", type=int, default=20000, help="number of scenes (train + test)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--resolutions", type=_ints, default=(64, 256), help="comma-separated sides in px")
    b.add_argument("--encoders", type=_strs, default=("hash", "minilm"), help="comma-separated: hash,minilm")
    b.add_argument("--second-object-prob", type=float, default=0.0)
    b.add_argument("--shards", type=int, default=8, help="Parquet files per split (>= data-parallel workers)")
    b.add_argument("--workers", type=int, default=2, help="rendering processes")
    i = sub.add_parser("inspect", help="print one JSON object describing a dataset")
    i.add_argument("--kind", required=True, choices=["shapes", "cub", "flowers"])
    i.add_argument("--root", required=True, help="dataset URI (shapes) or release root directory (cub/flowers)")
    j = sub.add_parser("judge", help="train the shapes judge on a dataset, save it there (or --save-to), print held-out accuracy")
    j.add_argument("--root", required=True)
    j.add_argument("--resolution", type=int, default=64)
    j.add_argument("--save-to", help="also copy the judge and its report into this directory")
    args = parser.parse_args(argv)
    return cli.run(lambda: _data_command(args))


def _data_command(args) -> int:
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731  JSON goes to stdout
    if args.command == "build":
        from harness.data.shapes_store import BuildSpec, build

        spec = BuildSpec(args.n, args.seed, args.resolutions, args.encoders, args.second_object_prob, args.shards)
        t0 = time.perf_counter()
        meta = build(spec, args.out, workers=args.workers, log=log)
        log(f"built {args.n} scenes at {list(args.resolutions)} px into {args.out} in {time.perf_counter() - t0:.0f} s")
        print(json.dumps({k: meta[k] for k in ("kind", "n", "splits", "encoders", "resolutions", "build_seconds")}))
    elif args.command == "inspect":
        from harness.data.inspect import inspect

        print(json.dumps(inspect(args.kind, args.root), indent=2))
    elif args.command == "judge":
        from harness.data.judge import save_judge, train_judge

        judge, report = train_judge(args.root, args.resolution, log=log)
        save_judge(judge, report, args.save_to or args.root)
        print(json.dumps(report, indent=2))
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
