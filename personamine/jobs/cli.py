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
    from personamine.config import MineConfig
    from personamine.jobs.cliargs import add_config_flags

    parser.add_argument("job", nargs="?", help="TOML job file (optional: flags alone also work)")
    add_config_flags(parser, MineConfig, skip=frozenset({"backend", "ray_address"}))
    parser.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                        help="run on Ray: a local Ray with no ADDRESS, else join the cluster at ADDRESS")


def mine_config_from_args(args: argparse.Namespace):
    from personamine.config import MineConfig
    from personamine.jobs.cliargs import overrides_from_args

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
    from personamine.config import parse_feature_list
    from personamine.jobs.show import format_results
    from personamine.merge.hdf5 import read_results

    features = parse_feature_list(args.features) if args.features else None
    # Only the asked features are read: an all-features file holds ~1.3 GB of top-k arrays.
    print(format_results(read_results(args.results, features), features, args.examples, args.width))
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
    parser.add_argument("--entrypoint-resources", default=None, metavar="JSON",
                        help='custom resources for the driver, e.g. \'{"personamine_driver": 1}\' (pins it to the '
                             "head of the shipped cluster configs)")


@command("submit")(_submit_flags)
def _submit(args: argparse.Namespace) -> int:
    import json

    from personamine.jobs.submit import submit

    try:
        resources = json.loads(args.entrypoint_resources) if args.entrypoint_resources else None
    except json.JSONDecodeError:
        resources = []
    if resources is not None and not (isinstance(resources, dict)
                                      and all(isinstance(v, (int, float)) for v in resources.values())):
        raise PersonamineError("--entrypoint-resources must be a JSON object of numbers, "
                               'e.g. \'{"personamine_driver": 1}\'')
    result = submit(args.job, args.address, wait=args.wait, working_dir=args.working_dir, pip=args.pip,
                    output=args.output, entrypoint_resources=resources, stream=sys.stdout)
    if not args.wait:
        print(result.job_id)  # alone on stdout, for JOB=$(personamine submit ...)
        return 0
    print(f"personamine: job {result.job_id} {result.status}", file=sys.stderr)
    return 0 if result.succeeded else 1


def _discover_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.jobs.cliargs import add_config_flags
    from personamine.jobs.discover import DiscoverConfig

    parser.description = ("Rank SAE features by mean activation on self-referential prompts minus matched controls, "
                          "rendered with the chat template (personamine.discover).")
    add_config_flags(parser, DiscoverConfig)
    parser.add_argument("--table", type=int, default=20, metavar="N", help="print the top N features (default 20)")


@command("discover")(_discover_flags)
def _discover(args: argparse.Namespace) -> int:
    from personamine.jobs.cliargs import overrides_from_args
    from personamine.jobs.discover import DiscoverConfig, discover, read_discovery

    path = discover(DiscoverConfig(**overrides_from_args(args, DiscoverConfig)))
    print(read_discovery(path).table(args.table))
    print(f"wrote {path}")
    return 0


def _train_sae_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.jobs.cliargs import add_config_flags
    from personamine.jobs.train_sae import TrainSaeConfig

    parser.description = ("Train a BatchTopK SAE on one layer's residual stream over a corpus and save it in "
                          "dictionary_learning's release layout (personamine.jobs.train_sae.train_sae).")
    add_config_flags(parser, TrainSaeConfig)


@command("train-sae")(_train_sae_flags)
def _train_sae(args: argparse.Namespace) -> int:
    from personamine.jobs.cliargs import overrides_from_args
    from personamine.jobs.train_sae import TrainSaeConfig, train_sae

    config = TrainSaeConfig(**overrides_from_args(args, TrainSaeConfig))
    result = train_sae(config)
    print(result.summary())
    print(f"wrote {result.path} (use it as --sae {result.path} --layer {config.layer})")
    return 0


def _demo_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.jobs.cliargs import add_config_flags
    from personamine.jobs.demo import DemoConfig

    parser.description = ("Offline end to end on a CPU: SmolLM2-135M-Instruct, an SAE trained on first use, discover, "
                          "mine the top features over the built-in corpus, print them (personamine.jobs.demo.demo).")
    add_config_flags(parser, DemoConfig)


@command("demo")(_demo_flags)
def _demo(args: argparse.Namespace) -> int:
    from personamine.jobs.cliargs import overrides_from_args
    from personamine.jobs.demo import DemoConfig, demo

    demo(DemoConfig(**overrides_from_args(args, DemoConfig)))
    return 0



def _explain_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.jobs.cliargs import add_config_flags
    from personamine.jobs.explain import ExplainConfig

    parser.description = ("Explain each mined feature with an LLM (in process, or any OpenAI-compatible server) and "
                          "score the explanations by detection and fuzzing (personamine.explain).")
    parser.add_argument("results", help="a mining HDF5 file")
    add_config_flags(parser, ExplainConfig, skip=frozenset({"results"}))
    parser.add_argument("--table", type=int, default=20, metavar="N", help="print the first N features (default 20)")


@command("explain")(_explain_flags)
def _explain(args: argparse.Namespace) -> int:
    from personamine.autointerp.store import read_explanations
    from personamine.jobs.cliargs import overrides_from_args
    from personamine.jobs.explain import ExplainConfig, explain

    path = explain(ExplainConfig(**overrides_from_args(args, ExplainConfig)))  # RESULTS fills the results field
    print(read_explanations(path).table(args.table))
    print(f"wrote {path}")
    return 0


def _report_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="a mining HDF5 file")
    parser.add_argument("-o", "--output", default=None, help="HTML file to write (default: RESULTS with .html)")
    parser.add_argument("--discovery", default=None, help="a discovery file: adds scores and per-prompt activations")
    parser.add_argument("--features", default=None, help="comma-separated feature ids (default: all in the file)")
    parser.add_argument("--explanations", default=None, help="an explanations file (personamine explain): adds "
                                                             "each feature's explanation and scores")


@command("report")(_report_flags)
def _report(args: argparse.Namespace) -> int:
    from personamine.config import parse_feature_list
    from personamine.report import report

    features = parse_feature_list(args.features) if args.features else None
    path = report(args.results, args.output, discovery=args.discovery, features=features,
                  explanations=args.explanations)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
