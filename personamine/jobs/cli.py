"""The `personamine` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from personamine.errors import PersonamineError

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str):
    def register(build: Callable[[argparse.ArgumentParser], None]):
        def wrap(run: Callable[[argparse.Namespace], int]):
            COMMANDS[name] = (build, run)
            return run
        return wrap
    return register


def _mine_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.jobs.cliargs import add_config_flags
    from personamine.jobs.config import MineConfig

    parser.add_argument("job", nargs="?", help="TOML job file (optional: flags alone also work)")
    add_config_flags(parser, MineConfig, skip=frozenset({"backend", "ray_address"}))
    parser.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                        help="run on Ray: a local Ray with no ADDRESS, else join the cluster at ADDRESS")


def mine_config_from_args(args: argparse.Namespace):
    from personamine.jobs.cliargs import overrides_from_args
    from personamine.jobs.config import MineConfig

    overrides = overrides_from_args(args, MineConfig)
    if args.ray is not None:
        overrides["backend"] = "ray"
        overrides["ray_address"] = None if args.ray == "auto" else args.ray
    return MineConfig.from_toml(args.job, **overrides) if args.job else MineConfig.from_dict(overrides)


@command("mine")(_mine_flags)
def _mine(args: argparse.Namespace) -> int:
    from personamine.jobs.mine import mine

    path = mine(mine_config_from_args(args))
    print(f"wrote {path}")
    return 0


def _show_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="a mining HDF5 file")
    parser.add_argument("--features", default=None, help="comma-separated feature ids (default: all in the file)")
    parser.add_argument("--examples", type=int, default=5, help="contexts per feature")
    parser.add_argument("--width", type=int, default=0, help="truncate each context to this many characters")


@command("show")(_show_flags)
def _show(args: argparse.Namespace) -> int:
    from personamine.jobs.config import parse_feature_list
    from personamine.jobs.show import format_results
    from personamine.merge.hdf5 import read_results

    features = parse_feature_list(args.features) if args.features else None
    print(format_results(read_results(args.results), features, args.examples, args.width))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="personamine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (build, _) in COMMANDS.items():
        build(sub.add_parser(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except PersonamineError as exc:
        print(f"personamine: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("personamine: interrupted (finished shards are checkpointed; rerun to resume)", file=sys.stderr)
        return 130


def _submit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="TOML job file")
    parser.add_argument("--address", required=True, help="the cluster's Jobs API, e.g. http://HEAD:8265")
    parser.add_argument("--wait", action="store_true", help="follow the job's logs; exit 0 only if it SUCCEEDED")
    parser.add_argument("--working-dir", default=None, metavar="DIR",
                        help="upload DIR as the job's working dir (the job file must be inside it)")
    parser.add_argument("--pip", action="append", default=None, metavar="REQ",
                        help="pip requirement to install for the job, e.g. 'personamine[ray]' (repeatable)")
    parser.add_argument("--output", default=None, help="output path on the cluster (overrides the job file)")


@command("submit")(_submit_flags)
def _submit(args: argparse.Namespace) -> int:
    from personamine.jobs.submit import submit

    result = submit(args.job, args.address, wait=args.wait, working_dir=args.working_dir, pip=args.pip,
                    output=args.output, stream=sys.stdout)
    if not args.wait:
        print(result.job_id)  # alone on stdout, for JOB=$(personamine submit ...)
        return 0
    print(f"personamine: job {result.job_id} {result.status}", file=sys.stderr)
    return 0 if result.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())


def _report_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="a mining HDF5 file")
    parser.add_argument("-o", "--output", default=None, help="HTML file to write (default: RESULTS with .html)")
    parser.add_argument("--discovery", default=None, help="a discovery file: adds scores and per-prompt activations")
    parser.add_argument("--features", default=None, help="comma-separated feature ids (default: all in the file)")


@command("report")(_report_flags)
def _report(args: argparse.Namespace) -> int:
    from personamine.jobs.config import parse_feature_list
    from personamine.report import report

    features = parse_feature_list(args.features) if args.features else None
    print(f"wrote {report(args.results, args.output, discovery=args.discovery, features=features)}")
    return 0
