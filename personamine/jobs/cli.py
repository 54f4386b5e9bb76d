"""personamine: find the SAE features a chat model uses for its Assistant self, and mine a corpus for them.

Every command is one Python call (named in its --help); `personamine COMMAND --help` lists its flags with their
defaults. Libraries stay quiet unless --verbose."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from personamine.errors import PersonamineError, one_line


@dataclass(frozen=True)
class Command:
    summary: str  # the line `personamine --help` prints
    build: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, summary: str = ""):
    """Register a command: ``build`` adds its flags, the decorated function runs it. ``summary`` is its line in
    ``personamine --help`` (a test requires one)."""
    def register(build: Callable[[argparse.ArgumentParser], None]):
        def wrap(run: Callable[[argparse.Namespace], int]):
            COMMANDS[name] = Command(summary, build, run)
            return run
        return wrap
    return register


def count(text: str) -> int:
    """An argparse type: a whole number >= 0 (argparse turns the ValueError into a one-line usage error)."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


count.__name__ = "count (a whole number >= 0)"  # what argparse's "invalid ... value" message calls it


def _mine_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.config import MineConfig

    parser.description = ("Mine a corpus for the top-k contexts of SAE features, exactly, into one HDF5 file "
                          "(personamine.mine). Every field of the TOML job file is also a flag.")
    _job_flags(parser, MineConfig)


def _job_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """A sharded run's flags (mine, screen): an optional TOML job file, every config field, and --ray."""
    from personamine.jobs.cliargs import add_config_flags

    parser.add_argument("job", nargs="?", help="TOML job file (optional: flags alone also work)")
    add_config_flags(parser, cls, "run config (fields of the TOML job file; a flag overrides the file)",
                     skip=frozenset({"backend", "ray_address"}))
    parser.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                        help="run on Ray: a local Ray with no ADDRESS, else join the cluster at ADDRESS")


def _job_config(args: argparse.Namespace, cls: type):
    """The config ``_job_flags`` describe: the job file's, overridden by the flags given."""
    from personamine.jobs.cliargs import overrides_from_args

    overrides = overrides_from_args(args, cls)
    if args.ray is not None:
        overrides["backend"] = "ray"
        overrides["ray_address"] = None if args.ray == "auto" else args.ray
    return cls.from_toml(args.job, **overrides) if args.job else cls.from_dict(overrides)


def mine_config_from_args(args: argparse.Namespace):
    from personamine.config import MineConfig

    return _job_config(args, MineConfig)


@command("mine", "mine a corpus for the top contexts of SAE features (one HDF5 file)")(_mine_flags)
def _mine(args: argparse.Namespace) -> int:
    from personamine.jobs.mine import mine

    path = mine(mine_config_from_args(args))
    print(f"wrote {path}")
    return 0


def _show_flags(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Print a mining file in the terminal: per feature its histogram, logit lens, top contexts "
                          "(activating tokens marked «token»value) and one sample per activation interval "
                          "(personamine.jobs.show.format_results).")
    parser.add_argument("results", help="a mining HDF5 file (or the index of a run with several readouts)")
    parser.add_argument("--readout", default=None, metavar="NAME",
                        help="the readout to show, in a run with several (L15, directions-L15; default: the only one)")
    parser.add_argument("--features", default=None, help="comma-separated feature ids (default: all in the file)")
    parser.add_argument("--examples", type=count, default=5, metavar="N", help="contexts per feature (default: 5)")
    parser.add_argument("--width", type=count, default=0, metavar="N",
                        help="cut each context to this many characters around its peak token (default: 0, no cut)")


@command("show", "print a mining file's features and top contexts in the terminal")(_show_flags)
def _show(args: argparse.Namespace) -> int:
    from personamine.config import parse_feature_list
    from personamine.files.mine import read_results, readouts_of
    from personamine.jobs.show import format_results

    features = parse_feature_list(args.features) if args.features else None
    found = readouts_of(args.results)
    if args.readout is None and len(found) > 1:
        print(f"personamine: {args.results} holds {len(found)} readouts ({', '.join(found)}): --readout NAME shows "
              "another; this is the first", file=sys.stderr)
    # Only the asked features are read: an all-features file holds ~1.3 GB of top-k arrays.
    print(format_results(read_results(args.results, features, readout=args.readout), features, args.examples,
                         args.width))
    return 0


# The order a newcomer meets them.
_ORDER = ("demo", "discover", "mine", "show", "report", "serve", "export", "screen", "train-sae", "submit")
_VERBOSE_HELP = "show the libraries' own logs, warnings and progress bars (also: PERSONAMINE_VERBOSE=1)"


class _OneLineParser(argparse.ArgumentParser):
    """A bad flag is one ``personamine: error:`` line like every other bad input (argparse's own error prints the
    usage before it); its command's subparsers are made of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"personamine: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="personamine", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in sorted(COMMANDS, key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER)):
        cmd = COMMANDS[name]
        child = sub.add_parser(name, help=cmd.summary, description=cmd.summary)
        cmd.build(child)
        # Also after the command (`personamine mine --verbose`); SUPPRESS keeps a leading --verbose in force.
        child.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP)
    return parser


# What an interrupted command leaves behind, where that is worth knowing.
_INTERRUPTED = {"mine": "finished shards are checkpointed; rerun the same command to resume",
                "demo": "finished mining shards are checkpointed; rerun to resume",
                "screen": "finished shards are checkpointed; rerun the same command to resume",
                "export": "the partial export was removed"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _verbosity(args.verbose), _one_line_warnings():
        try:
            return COMMANDS[args.command].run(args)
        except PersonamineError as exc:
            print(f"personamine: error: {one_line(str(exc))}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            # The reader went away (`personamine show ... | head`): stop quietly, as other Unix tools do. Later
            # writes, including the interpreter's final flush, go to /dev/null instead of raising again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except KeyboardInterrupt:
            detail = _INTERRUPTED.get(args.command)
            print(f"personamine: interrupted{f' ({detail})' if detail else ''}", file=sys.stderr)
            return 130


_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


@contextlib.contextmanager
def _verbosity(on: bool) -> Iterator[None]:
    """--verbose for this command (an environment variable, so Ray workers started from here see it too)."""
    from personamine.verbosity import ENV, set_verbose

    before = os.environ.get(ENV)
    if on:
        set_verbose(True)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """personamine's own warnings print as one ``personamine: warning: ...`` line, not Python's two-line form with
    a source line; other libraries' warnings keep Python's form."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(Path(filename).resolve()).startswith(_PACKAGE_DIR):
            print(f"personamine: warning: {message}", file=file or sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def _submit_flags(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Submit `personamine mine JOB --ray` as a Ray job; the driver runs on the cluster on one CPU "
                          "(personamine.jobs.submit.submit).")
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


@command("submit", "submit a mining job to a Ray cluster through its Jobs API")(_submit_flags)
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
    from personamine.config import DiscoverConfig
    from personamine.jobs.cliargs import add_config_flags

    parser.description = ("Compare two sides (persona vs control prompts, the default Assistant vs roles, or two "
                          "models) feature by feature with statistics at every SAE and pooling, and compute the "
                          "persona direction at each layer with its SAE decomposition (personamine.discover).")
    add_config_flags(parser, DiscoverConfig, "discover options (the fields of DiscoverConfig)")
    parser.add_argument("--table", type=count, default=20, metavar="N",
                        help="print the top N features (default: 20)")


@command("discover", "rank SAE features by how much more they fire on self-referential prompts than on controls")(
    _discover_flags)
def _discover(args: argparse.Namespace) -> int:
    from personamine.config import DiscoverConfig
    from personamine.files.discover import read_discovery
    from personamine.jobs.cliargs import overrides_from_args
    from personamine.jobs.discover import discover

    path = discover(DiscoverConfig(**overrides_from_args(args, DiscoverConfig)))
    found = read_discovery(path)
    print(found.table(args.table))
    if found.directions:
        print(found.directions_table())
    takes = ("those scoring above zero by default; with --max-q 0.05 --min-ci-low 0, only the discoveries"
             if found.ranking is not None and found.ranking.has_statistics else "only those by default")
    print(f"wrote {path}: {found.summary()} (mine --features-from takes {takes})")
    return 0


def _train_sae_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.config import TrainSaeConfig
    from personamine.jobs.cliargs import add_config_flags

    parser.description = ("Train a BatchTopK SAE on one layer's residual stream over a corpus and save it in "
                          "dictionary_learning's release layout (personamine.jobs.train_sae.train_sae).")
    add_config_flags(parser, TrainSaeConfig, "training options (the fields of TrainSaeConfig)")


@command("train-sae", "train a BatchTopK SAE on one layer's residual stream (needs dictionary-learning)")(
    _train_sae_flags)
def _train_sae(args: argparse.Namespace) -> int:
    from personamine.config import TrainSaeConfig
    from personamine.jobs.cliargs import overrides_from_args
    from personamine.jobs.train_sae import train_sae

    config = TrainSaeConfig(**overrides_from_args(args, TrainSaeConfig))
    result = train_sae(config)
    print(result.summary())
    print(f"wrote {result.path} (use it as --sae {result.path} --layer {config.layer})")
    return 0


def _demo_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.config import DemoConfig
    from personamine.jobs.cliargs import add_config_flags

    parser.description = ("Offline end to end on a CPU: SmolLM2-135M-Instruct, an SAE trained on first use, discover, "
                          "mine the top features over the built-in corpus, print them (personamine.jobs.demo.demo).")
    add_config_flags(parser, DemoConfig, "demo options (the fields of DemoConfig)")


@command("demo", "the whole idea offline on a CPU: SmolLM2, an SAE trained on first use, discover, mine, report")(
    _demo_flags)
def _demo(args: argparse.Namespace) -> int:
    from personamine.config import DemoConfig
    from personamine.jobs.cliargs import overrides_from_args
    from personamine.jobs.demo import demo

    demo(DemoConfig(**overrides_from_args(args, DemoConfig)))
    return 0


def _steer_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.config import SteerConfig
    from personamine.jobs.cliargs import add_config_flags

    parser.description = ("Ablate, clamp or add SAE features at the SAE's layer of the full model; measure identity "
                          "log-probabilities, KL, perplexity and generations against the unsteered model, on persona "
                          "prompts and controls (personamine.steer).")
    add_config_flags(parser, SteerConfig)


@command("steer", "ablate, clamp or add SAE features and measure what it does to the Assistant's self-description")(
    _steer_flags)
def _steer(args: argparse.Namespace) -> int:
    from personamine.config import SteerConfig
    from personamine.files.steer import read_steering
    from personamine.jobs.cliargs import overrides_from_args
    from personamine.jobs.steer import steer

    path = steer(SteerConfig(**overrides_from_args(args, SteerConfig)))
    print(read_steering(path).table())
    print(f"wrote {path}")
    return 0


def _screen_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.config import ScreenConfig

    parser.description = ("Rank a conversation corpus's samples by projection difference on residual-stream "
                          "directions: the projection of each row's last (assistant) turn minus that of the model's "
                          "own greedy response to the same prompt, mean over the response's tokens at one layer; "
                          "one HDF5 file, resumable, local or on Ray (personamine.screen). Every field of the TOML "
                          "job file is also a flag.")
    _job_flags(parser, ScreenConfig)
    parser.add_argument("--top", type=count, default=5, metavar="N",
                        help="samples printed from each end of the ranking (default: 5)")


@command("screen", "rank a conversation corpus by projection difference on persona directions (one HDF5 file)")(
    _screen_flags)
def _screen(args: argparse.Namespace) -> int:
    from personamine.config import ScreenConfig
    from personamine.files.screen import read_screening
    from personamine.jobs.screen import screen

    path = screen(_job_config(args, ScreenConfig))
    print(read_screening(path).table(args.top))
    print(f"wrote {path}")
    return 0


def _demo_steer_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.config import DemoSteerConfig
    from personamine.jobs.cliargs import add_config_flags

    parser.description = ("After `personamine demo`: steer its top discovered features, print the metrics and "
                          "generations, add a steering section to its report (personamine.jobs.demo_steer).")
    add_config_flags(parser, DemoSteerConfig)


@command("demo-steer", "after the demo: steer its top discovered features and add the result to its report")(
    _demo_steer_flags)
def _demo_steer(args: argparse.Namespace) -> int:
    from personamine.config import DemoSteerConfig
    from personamine.jobs.cliargs import overrides_from_args
    from personamine.jobs.demo_steer import demo_steer

    demo_steer(DemoSteerConfig(**overrides_from_args(args, DemoSteerConfig)))
    return 0


def _explain_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.config import ExplainConfig
    from personamine.jobs.cliargs import add_config_flags

    parser.description = ("Explain each mined feature with an LLM (in process, or any OpenAI-compatible server) and "
                          "score the explanations by detection and fuzzing (personamine.explain).")
    parser.add_argument("results", help="a mining HDF5 file, or the index of a run with several readouts (one part "
                                        "per readout; directions shown as directions)")
    add_config_flags(parser, ExplainConfig, skip=frozenset({"results"}))
    parser.add_argument("--table", type=int, default=20, metavar="N", help="print the first N features (default 20)")


@command("explain", "explain mined features with an LLM and score the explanations by detection and fuzzing")(
    _explain_flags)
def _explain(args: argparse.Namespace) -> int:
    from personamine.config import ExplainConfig
    from personamine.files.explain import read_explanations
    from personamine.jobs.cliargs import overrides_from_args
    from personamine.jobs.explain import explain

    path = explain(ExplainConfig(**overrides_from_args(args, ExplainConfig)))  # RESULTS fills the results field
    print(read_explanations(path).table(args.table))
    print(f"wrote {path}")
    return 0


def _report_flags(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Write one self-contained offline HTML page of a mining file: index, histograms, logit "
                          "lens, contexts, interval samples, and with a discovery file the per-prompt activations "
                          "(personamine.report).")
    parser.add_argument("results", help="a mining HDF5 file, or the index of a run with several readouts (one part "
                                        "per readout; directions shown as directions)")
    parser.add_argument("-o", "--output", default=None, help="HTML file to write (default: RESULTS with .html)")
    parser.add_argument("--discovery", default=None, help="a discovery file: adds scores and per-prompt activations")
    parser.add_argument("--features", default=None, help="comma-separated feature ids (default: all in the file)")
    parser.add_argument("--steering", default=None, help="a steering file (personamine steer): adds its section")
    parser.add_argument("--explanations", default=None, help="an explanations file (personamine explain): adds "
                                                             "each feature's explanation and scores")
    parser.add_argument("--screening", default=None, help="a screening file (personamine screen): adds its ranked "
                                                          "samples, top and bottom, both responses side by side")


@command("report", "write one self-contained offline HTML report of a mining file")(_report_flags)
def _report(args: argparse.Namespace) -> int:
    from personamine.config import parse_feature_list
    from personamine.report import report

    features = parse_feature_list(args.features) if args.features else None
    path = report(args.results, args.output, discovery=args.discovery, features=features, steering=args.steering,
                  explanations=args.explanations, screening=args.screening)
    print(f"wrote {path}")
    return 0


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


positive.__name__ = "positive (a whole number >= 1)"


def _export_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.saes.neuronpedia import CREATOR_ID, CREATOR_NAME
    from personamine.saes.neuronpedia import EXPORT_BATCH as BATCH_FEATURES
    from personamine.saes.neuronpedia import OWN_SOURCE_SET as DEFAULT_SOURCE_SET

    parser.description = "Write a mining file in another tool's import format."
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT",
                                    help="the format to write: neuronpedia")
    summary = "Neuronpedia's import bundle (personamine.export_neuronpedia)"
    neuronpedia = formats.add_parser("neuronpedia", help=summary, description=(
        "Write a mining file as the bundle Neuronpedia imports, in the layout of its public exports: "
        "DIR/MODEL/LAYER-SOURCESET/ with features/, activations/ (top windows and interval samples) and, with an "
        "explanations file, explanations/ and their scores (personamine.export_neuronpedia; docs/export.md)."))
    neuronpedia.add_argument("results", help="a mining HDF5 file")
    neuronpedia.add_argument("-o", "--output", required=True, metavar="DIR",
                             help="directory to write into (the bundle goes to DIR/MODEL/LAYER-SOURCESET)")
    neuronpedia.add_argument("--explanations", default=None, metavar="FILE",
                             help="an explanations file of RESULTS (personamine explain): adds its explanations "
                                  "and their scores")
    neuronpedia.add_argument("--discovery", default=None, metavar="FILE",
                             help="a discovery file of the same model, layer and SAE: adds a Neuronpedia list of "
                                  "the discovered features")
    neuronpedia.add_argument("--source-set", default=None, metavar="NAME",
                             help="Neuronpedia source-set name (default: the hosted SAE's, e.g. resid-post-aa, "
                                  f"else {DEFAULT_SOURCE_SET})")
    neuronpedia.add_argument("--model-id", default=None, metavar="ID",
                             help="Neuronpedia model id (default: the hosted SAE's, e.g. llama3.1-8b-it, else the "
                                  "model's name, lowercased)")
    neuronpedia.add_argument("--creator-id", default=CREATOR_ID, metavar="ID",
                             help=f"the Neuronpedia user the rows name as creator and author (default: {CREATOR_ID}, "
                                  "the one Neuronpedia's bulk imports use)")
    neuronpedia.add_argument("--creator-name", default=CREATOR_NAME, metavar="NAME",
                             help=f"creator name of the release and source set (default: {CREATOR_NAME})")
    neuronpedia.add_argument("--batch-size", type=positive, default=BATCH_FEATURES, metavar="N",
                             help=f"features per batch file and per read of RESULTS (default: {BATCH_FEATURES})")
    neuronpedia.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP)


@command("export", "write a mining file as another tool's import bundle (neuronpedia)")(_export_flags)
def _export(args: argparse.Namespace) -> int:
    from personamine.export import describe_export, export_neuronpedia

    path = export_neuronpedia(args.results, args.output, explanations=args.explanations, discovery=args.discovery,
                              source_set=args.source_set, model_id=args.model_id, creator_id=args.creator_id,
                              creator_name=args.creator_name, batch_size=args.batch_size)
    print(f"wrote {describe_export(path)}")
    return 0


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0: any free port)."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


_port.__name__ = "port (0 to 65535)"


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    from personamine.serve import DEFAULT_PORT

    parser.description = ("Browse mining files of any size in a local web app: an index of every feature sorted, "
                          "filtered and paged on the server, a page per feature with the report's sections and its "
                          "neighbours by decoder direction, and live inspection of a text of your own with the "
                          "file's model and SAE (personamine.serve). Read-only; binds 127.0.0.1 unless --host says "
                          "otherwise; stops on Ctrl-C.")
    parser.add_argument("results", nargs="+", help="one or more mining HDF5 files")
    parser.add_argument("--discovery", default=None, help="a discovery file: adds its rank, score and firing columns "
                                                          "and the per-prompt activations")
    parser.add_argument("--explanations", default=None, help="an explanations file (personamine explain): adds the "
                                                             "explanation and its scores, searchable and sortable")
    parser.add_argument("--steering", default=None, help="a steering file (personamine steer): adds its section to "
                                                         "the pages of the features it steered")
    parser.add_argument("--model", default=None, help="the model for live inspection (default: the one each file "
                                                      "records)")
    parser.add_argument("--sae", default=None, help="the SAE for live inspection and neighbours (default: the one "
                                                    "each file records)")
    parser.add_argument("--device", default=None, help="torch device for live inspection: auto, cpu, cuda, ... "
                                                       "(default: each file's)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                                                            "only; any other is served to whoever reaches it, with "
                                                            "a warning)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port to listen on (default: "
                                                                           f"{DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--no-inspect", action="store_true", help="no live inspection: the model is never loaded")


@command("serve", "browse mining files in a local web app: sortable index, feature pages, live inspection")(
    _serve_flags)
def _serve(args: argparse.Namespace) -> int:
    from personamine.serve import serve

    serve(args.results, discovery=args.discovery, explanations=args.explanations, steering=args.steering,
          model=args.model, sae=args.sae, device=args.device, host=args.host, port=args.port,
          inspect=not args.no_inspect).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
