"""The fault and bad-input sweep of issue 29, as a hostile but fair user runs it: each case is the ``personamine``
command line in a fresh process, on a tiny model, SAE and corpus built here in a temp dir (the tests' builders,
``tests/fixtures.py``; nothing is downloaded).

One line per case: PASS or FAIL, the case, the exit status, and the first line of stderr that is not a warning
(negative: killed by that signal); exit 1 if any case
FAILs. A case passes when the command does what docs/faults.md says: bad input is ONE ``personamine: error:`` line
(warnings aside), exit 2, no traceback, nothing partial left (no output, no temp file); an interrupted run resumes
to an output whose every dataset equals an undisturbed run's; user text and paths stay inert in HTML.

    python scripts/fault_sweep.py                  # every case (~10 min on 2 cores, most of it the 50 MB document)
    python scripts/fault_sweep.py --huge-mb 8      # a smaller huge document
    python scripts/fault_sweep.py --only sigkill_resume,xss_report
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' builders of tiny models, SAEs and corpora

XSS = '<script>alert("pm-xss")</script><img src=x onerror=alert(1)>'
HUGE_RSS_LIMIT = 1 << 30  # a huge document must mine within this peak RSS (a 62-row corpus peaks near 0.45 GiB)


@dataclass
class Ran:
    code: int
    stderr: str
    peak_rss: int  # bytes, the child's own ru_maxrss

    @property
    def first(self) -> str:
        """The first line of stderr that is not a warning (else the first line)."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return next((line for line in lines if "personamine: warning:" not in line), lines[0] if lines else "")


@dataclass
class Outcome:
    ok: bool
    ran: Ran
    why: str = ""


def env() -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out.pop("PERSONAMINE_VERBOSE", None)
    return out


def start(*args: str, preexec: Callable[[], None] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "personamine", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), preexec_fn=preexec)


def finish(proc: subprocess.Popen, timeout: float = 600) -> Ran:
    """Wait for ``proc`` (reading its pipes) and take its own peak RSS from ``wait4``."""
    deadline = time.monotonic() + timeout
    out: list[str] = []
    import threading

    readers = [threading.Thread(target=lambda s=s: out.append(s.read()), daemon=True) for s in (proc.stderr,)]
    drain = threading.Thread(target=proc.stdout.read, daemon=True)
    for t in [*readers, drain]:
        t.start()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join(5)
    return Ran(proc.returncode, "".join(out), usage.ru_maxrss * 1024)


def run(*args: str, preexec: Callable[[], None] | None = None, timeout: float = 600) -> Ran:
    return finish(start(*args, preexec=preexec), timeout)


def one_error(ran: Ran, *fragments: str, code: int = 2) -> tuple[bool, str]:
    """Exit ``code`` and exactly one ``personamine: error:`` line (warnings aside) holding ``fragments``."""
    lines = [line for line in ran.stderr.splitlines() if line.strip() and "personamine: warning:" not in line]
    if ran.code != code:
        return False, f"exit {ran.code}, wanted {code}"
    if "Traceback" in ran.stderr or "Exception ignored" in ran.stderr:
        return False, "a traceback on stderr"
    if len(lines) != 1 or not lines[0].startswith("personamine: error: "):
        return False, f"{len(lines)} lines of stderr besides warnings"
    missing = [f for f in fragments if f not in lines[0]]
    return (not missing), (f"the error does not say {missing}" if missing else "")


class Sweep:
    def __init__(self, tmp: Path, huge_mb: float) -> None:
        import fixtures

        self.tmp, self.huge_mb, self.fx = tmp, huge_mb, fixtures
        self.model = fixtures.make_tiny_model(tmp / "model")
        self.sae = fixtures.make_calibrated_sae_release(tmp / "sae", self.model)
        self.layer = str(fixtures.SAE_LAYER)
        self.corpus = tmp / "corpus.jsonl"
        rows = fixtures.corpus_rows() + [{"text": t} for t in fixtures.long_texts(6)]
        self.corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self.reference = tmp / "reference.h5"
        ran = run(*self.mine_args(self.corpus, self.reference))
        if ran.code:
            raise SystemExit(f"the undisturbed reference run failed: {ran.stderr}")

    def case_dir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir()
        return path

    def mine_args(self, corpus: Path, output: Path, *extra: str, sae: Path | None = None) -> list[str]:
        return ["mine", "--no-progress", "--model", str(self.model), "--layer", self.layer,
                "--sae", str(sae or self.sae), "--corpus", str(corpus), "--features", "0-255", "--ctx-len", "16",
                "--unit-bytes", "1500", "--n-shards", "12", "--output", str(output), *extra]

    def nothing_partial(self, output: Path, work: Path | None = None) -> str:
        left = [p.name for p in output.parent.glob(output.name + "*") if work is None or p != work]
        return f"left behind: {left}" if left else ""

    def identical(self, output: Path) -> str:
        from ray_helpers import assert_identical_datasets

        try:
            assert_identical_datasets(self.reference, output)
        except AssertionError as exc:
            return f"the output differs from an undisturbed run's: {str(exc)[:200]}"
        return ""

    def bad_input(self, ran: Ran, output: Path | None, *fragments: str) -> Outcome:
        ok, why = one_error(ran, *fragments)
        if ok and output is not None:
            why = self.nothing_partial(output)
            ok = not why
        return Outcome(ok, ran, why)

    # ------------------------------------------------------------ interruptions

    def _interrupted(self, name: str, sig: int) -> Outcome:
        d = self.case_dir(name)
        out, work = d / "out.h5", d / "out.h5.work"
        proc = start(*self.mine_args(self.corpus, out))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(list(work.glob("units-*.npz"))) < 2 and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None:
            return Outcome(False, finish(proc), "the run ended before it could be interrupted")
        proc.send_signal(sig)
        stopped = finish(proc, 120)
        wanted = 128 + sig if sig == signal.SIGINT else -sig
        if stopped.code not in (wanted, 2 if sig == signal.SIGINT else wanted):
            return Outcome(False, stopped, f"exit {stopped.code} on the signal")
        if sig == signal.SIGINT and ("Traceback" in stopped.stderr or len(stopped.stderr.strip().splitlines()) > 1):
            return Outcome(False, stopped, "Ctrl-C printed more than one line")
        if out.exists():
            return Outcome(False, stopped, "an output was written by the interrupted run")
        again = run(*self.mine_args(self.corpus, out))
        if again.code:
            return Outcome(False, again, "the resumed run failed")
        return Outcome(not self.identical(out), stopped, self.identical(out) or f"resumed: exit {again.code}")

    def sigint_resume(self) -> Outcome:
        return self._interrupted("sigint", signal.SIGINT)

    def sigkill_resume(self) -> Outcome:
        return self._interrupted("sigkill", signal.SIGKILL)

    def damaged_checkpoint_resume(self) -> Outcome:
        d = self.case_dir("damaged_checkpoint")
        out, work = d / "out.h5", d / "out.h5.work"
        proc = start(*self.mine_args(self.corpus, out))
        while len(list(work.glob("units-*.npz"))) < 3 and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        finish(proc)
        self.fx.flip(sorted(work.glob("units-*.npz"))[0])
        again = run(*self.mine_args(self.corpus, out))
        if again.code or "is damaged (checksum mismatch)" not in again.first:
            return Outcome(False, again, "no warning naming the damaged checkpoint")
        why = self.identical(out)
        return Outcome(not why, again, why)

    # ------------------------------------------------------------ corpora

    def truncated_parquet(self) -> Outcome:
        d = self.case_dir("truncated_parquet")
        corpus = self.fx.write_corpus_parquet(d / "c.parquet")
        data = corpus.read_bytes()
        corpus.write_bytes(data[: len(data) // 2])
        return self.bad_input(run(*self.mine_args(corpus, d / "out.h5")), d / "out.h5", "cannot read corpus file")

    def random_bytes(self) -> Outcome:
        d = self.case_dir("random_bytes")
        corpus = d / "c.jsonl"
        corpus.write_bytes(random.Random(0).randbytes(20_000))
        return self.bad_input(run(*self.mine_args(corpus, d / "out.h5")), d / "out.h5", "c.jsonl")

    def empty_corpus_dir(self) -> Outcome:
        d = self.case_dir("empty_dir")
        (d / "corpus").mkdir()
        return self.bad_input(run(*self.mine_args(d / "corpus", d / "out.h5")), d / "out.h5", "corpus")

    def mixed_corpus_dir(self) -> Outcome:
        d = self.case_dir("mixed_dir")
        (d / "corpus").mkdir()
        shutil.copy(self.corpus, d / "corpus" / "a.jsonl")
        self.fx.write_corpus_parquet(d / "corpus" / "b.parquet")
        return self.bad_input(run(*self.mine_args(d / "corpus", d / "out.h5")), d / "out.h5", "parquet", "jsonl")

    def malformed_conversation(self) -> Outcome:
        d = self.case_dir("malformed_conversation")
        corpus = d / "c.jsonl"
        good = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A model."}]
        rows = [{"messages": good}] * 5 + [{"messages": [{"role": "narrator", "content": "hi"}]}, {"messages": "x"}]
        corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
        ran = run(*self.mine_args(corpus, d / "out.h5", "--messages-column", "messages"))
        return self.bad_input(ran, d / "out.h5", "row 5", "unknown role 'narrator'")

    def non_utf8_corpus(self) -> Outcome:
        d = self.case_dir("non_utf8")
        corpus = d / "c.txt"
        corpus.write_bytes(b"fine line\nbad \xc3( line\n")
        return self.bad_input(run(*self.mine_args(corpus, d / "out.h5")), d / "out.h5", "is not UTF-8", "line 2")

    def missing_corpus(self) -> Outcome:
        d = self.case_dir("missing_corpus")
        ran = run(*self.mine_args(d / "nope.jsonl", d / "out.h5"))
        return self.bad_input(ran, d / "out.h5", "does not exist")

    def failed_start_then_fixed_rerun(self) -> Outcome:
        """A bad row found while mining (past the pre-flight) and a text column of numbers: each fails in one line,
        and the same command after the fix runs."""
        d = self.case_dir("failed_start")
        corpus = d / "c.jsonl"
        good = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am a model."}]
        rows = [{"messages": good}] * 70 + [{"messages": [{"role": "narrator", "content": "hi"}]}]
        corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
        args = self.mine_args(corpus, d / "out.h5", "--messages-column", "messages", "--preflight-tokens", "0",
                              "--ctx-len", "32", "--n-shards", "1", "--unit-bytes", str(1 << 20))
        failed = run(*args)
        ok, why = one_error(failed, "row 70")
        if not ok:
            return Outcome(False, failed, why)
        corpus.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1] + [{"messages": good}]))
        again = run(*args)
        return Outcome(again.code == 0, failed, "" if again.code == 0 else f"the fixed rerun: {again.first}")

    def huge_document(self) -> Outcome:
        """One jsonl line of ``huge_mb`` MB: mined whole, counted in documents_chunked, in bounded memory."""
        d = self.case_dir("huge_document")
        corpus = d / "c.jsonl"
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from huge_document import write_document

        write_document(corpus, "jsonl", self.huge_mb)
        out = d / "out.h5"
        t0 = time.monotonic()
        ran = run(*self.mine_args(corpus, out, "--ctx-len", "64", "--features", "1,2,3", "--preflight-tokens", "0",
                                  "--n-shards", "1"), timeout=1800)
        seconds = time.monotonic() - t0
        if ran.code:
            return Outcome(False, ran, "the run failed")
        import personamine

        chunked = personamine.read_results(out).attrs["documents_chunked"]
        why = f"peak RSS {ran.peak_rss / 2**20:,.0f} MiB, {seconds:.0f} s, documents_chunked {chunked}"
        return Outcome(ran.peak_rss < HUGE_RSS_LIMIT and chunked == 1, ran, why)

    # ------------------------------------------------------------ SAEs

    def _sae_copy(self, name: str) -> tuple[Path, Path]:
        """A copy of the SAE release: (the case's dir, the copy's ae.pt)."""
        d = self.case_dir(name)
        shutil.copytree(self.tmp / "sae", d / "sae")
        return d, self.fx.sae_file(d / "sae")

    def truncated_sae(self) -> Outcome:
        d, ae = self._sae_copy("truncated_sae")
        ae.write_bytes(ae.read_bytes()[:1000])
        return self.bad_input(run(*self.mine_args(self.corpus, d / "out.h5", sae=ae.parent)), d / "out.h5", "ae.pt")

    def wrong_width_sae(self) -> Outcome:
        d = self.case_dir("wrong_width_sae")
        self.fx.make_sae_release(d / "sae", self.fx.SAE_LAYER, 32, 64, 8, 0.5, 0)
        ran = run(*self.mine_args(self.corpus, d / "out.h5", sae=d / "sae"))
        return self.bad_input(ran, d / "out.h5", "32", "64")

    def nan_sae_encoder(self) -> Outcome:
        import torch

        d, ae = self._sae_copy("nan_sae")
        state = torch.load(ae, weights_only=True)
        state["encoder.weight"][2, 5] = float("nan")
        torch.save(state, ae)
        ran = run(*self.mine_args(self.corpus, d / "out.h5", sae=ae.parent))
        return self.bad_input(ran, d / "out.h5", "feature 2 holds nan")

    def conflicting_sae_metadata(self) -> Outcome:
        d, ae = self._sae_copy("conflicting_sae")
        config = ae.parent / "config.json"
        data = json.loads(config.read_text())
        data["trainer"]["layer"] = 99
        config.write_text(json.dumps(data))
        ran = run(*self.mine_args(self.corpus, d / "out.h5", sae=ae.parent))
        return self.bad_input(ran, d / "out.h5", "99", f"resid_post_layer_{self.layer}")

    # ------------------------------------------------------------ output, flags, files

    def disk_full_final_write(self) -> Outcome:
        """The shards are checkpointed (--keep-work-dir), then the final write is limited to 300 KB a file
        (RLIMIT_FSIZE, EFBIG: a tmpfs needs root); the rerun after it only merges and writes."""
        import resource

        d = self.case_dir("disk_full")
        work = d / "work"
        run(*self.mine_args(self.corpus, d / "first.h5", "--work-dir", str(work), "--keep-work-dir"))

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

        out = d / "out.h5"
        ran = run(*self.mine_args(self.corpus, out, "--work-dir", str(work)), preexec=limit)
        ok, why = one_error(ran, "File too large", "the partial file was removed")
        if not ok:
            return Outcome(False, ran, why)
        if sorted(p.name for p in d.iterdir()) != ["first.h5", "work"]:
            return Outcome(False, ran, f"left behind: {sorted(p.name for p in d.iterdir())}")
        again = run(*self.mine_args(self.corpus, out, "--work-dir", str(work)))
        why = f"rerun exit {again.code}" if again.code else self.identical(out)
        return Outcome(not why, ran, why)

    def two_runs_one_output(self) -> Outcome:
        d = self.case_dir("two_runs")
        out = d / "out.h5"
        first = start(*self.mine_args(self.corpus, out))
        lock = d / "out.h5.work" / "lock"
        while not lock.exists() and first.poll() is None:
            time.sleep(0.05)
        second = run(*self.mine_args(self.corpus, out))
        done = finish(first)
        ok, why = one_error(second, "another run is using the work dir")
        if ok and done.code:
            ok, why = False, f"the first run failed: {done.first}"
        return Outcome(ok and not self.identical(out), second, why or self.identical(out))

    def output_is_directory(self) -> Outcome:
        d = self.case_dir("output_dir")
        (d / "out.h5").mkdir()
        return self.bad_input(run(*self.mine_args(self.corpus, d / "out.h5")), None, "out.h5")

    def bad_flag_value(self) -> Outcome:
        d = self.case_dir("bad_flag_value")
        ran = run(*self.mine_args(self.corpus, d / "out.h5", "--top-k", "0"))
        return self.bad_input(ran, d / "out.h5", "top_k must be at least 1, got 0")

    def unknown_flag(self) -> Outcome:
        d = self.case_dir("unknown_flag")
        ran = run(*self.mine_args(self.corpus, d / "out.h5", "--topk", "3"))
        return self.bad_input(ran, d / "out.h5", "unrecognized arguments: --topk")

    def flipped_bytes_finished_file(self) -> Outcome:
        d = self.case_dir("flipped_file")
        damaged = d / "out.h5"
        shutil.copy(self.reference, damaged)
        import h5py

        with h5py.File(damaged, "r") as f:  # a third of the way into the first stored chunk, as a rotten write
            info = f["samples/document"].id.get_chunk_info(0)
        data = bytearray(damaged.read_bytes())
        start = info.byte_offset + info.size // 3
        for i in range(start, start + min(64, info.size // 2)):
            data[i] ^= 0x5A
        damaged.write_bytes(bytes(data))
        ran = run("report", str(damaged), "-o", str(d / "r.html"))
        return self.bad_input(ran, d / "r.html", "is damaged: dataset 'samples/document' failed its checksum")

    def not_a_mining_file(self) -> Outcome:
        d = self.case_dir("not_a_mining_file")
        bogus = d / "x.h5"
        bogus.write_bytes(random.Random(1).randbytes(4096))
        return self.bad_input(run("report", str(bogus), "-o", str(d / "r.html")), d / "r.html", "x.h5")

    def unknown_feature(self) -> Outcome:
        return self.bad_input(run("show", str(self.reference), "--features", "100000"), None, "100000")

    # ------------------------------------------------------------ user text and paths in HTML

    def _xss_file(self) -> Path:
        d = self.tmp / f"xss {XSS.replace('/', '_')}"
        if not (d / "out.h5").exists():
            d.mkdir(exist_ok=True)
            corpus = d / "c.jsonl"
            rows = [{"text": f"The cat said {XSS} and the bat said {XSS} again."}] * 3 + \
                self.fx.corpus_rows()[:20]
            corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
            ran = run(*self.mine_args(corpus, d / "out.h5", "--preflight-tokens", "0"))
            if ran.code:
                raise RuntimeError(ran.stderr)
        return d / "out.h5"

    @staticmethod
    def _inert(page: str) -> str:
        found = [p for p in ("<script>alert(", "<img src=x onerror", "pm-xss\")</script>") if p in page]
        return f"raw payload in the page: {found}" if found else ""

    def xss_report(self) -> Outcome:
        results = self._xss_file()
        page = results.parent / "report.html"
        ran = run("report", str(results), "-o", str(page))
        if ran.code:
            return Outcome(False, ran, "report failed")
        text = page.read_text()
        why = self._inert(text) or ("" if "pm-xss" in text else "the payload is not shown at all")
        return Outcome(not why, ran, why)

    def xss_serve(self) -> Outcome:
        results = self._xss_file()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = start("serve", str(results), "--port", str(port), "--no-inspect")
        pages = []
        try:
            for path in ("/", "/feature/0/0", "/feature/0/1", "/api/feature/0/0"):
                for _ in range(600):
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                            pages.append((path, r.headers.get("content-type", ""), r.read().decode()))
                        break
                    except OSError:
                        if proc.poll() is not None:
                            break
                        time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGINT)
            ran = finish(proc, 60)
        if len(pages) < 4:
            return Outcome(False, ran, f"served {len(pages)} of 4 pages")
        found = [f"{path}: {self._inert(body)}" for path, kind, body in pages
                 if "html" in kind and self._inert(body)]
        json_ok = all("html" not in kind for path, kind, _ in pages if path.startswith("/api"))
        return Outcome(not found and json_ok, ran, "; ".join(found) or ("" if json_ok else "API served as HTML"))


CASES = ["sigint_resume", "sigkill_resume", "damaged_checkpoint_resume", "truncated_parquet", "random_bytes",
         "empty_corpus_dir", "mixed_corpus_dir", "malformed_conversation", "non_utf8_corpus", "missing_corpus",
         "failed_start_then_fixed_rerun", "huge_document", "truncated_sae", "wrong_width_sae", "nan_sae_encoder",
         "conflicting_sae_metadata", "disk_full_final_write", "two_runs_one_output", "output_is_directory",
         "bad_flag_value", "unknown_flag", "flipped_bytes_finished_file", "not_a_mining_file", "unknown_feature",
         "xss_report", "xss_serve"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None, help=f"comma list of cases (default all: {', '.join(CASES)})")
    p.add_argument("--huge-mb", type=float, default=50.0, help="size of the huge document in MB (default 50)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (printed at the end)")
    args = p.parse_args(argv)
    cases = CASES if args.only is None else args.only.split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        p.error(f"unknown case(s): {', '.join(unknown)}")
    tmp = Path(tempfile.mkdtemp(prefix="pm-sweep-"))
    failed = 0
    try:
        sweep = Sweep(tmp, args.huge_mb)
        for name in cases:
            t0 = time.monotonic()
            try:
                outcome = getattr(sweep, name)()
            except Exception as exc:  # a case that cannot even run is a FAIL, with its reason
                outcome = Outcome(False, Ran(-1, f"{type(exc).__name__}: {exc}", 0), "the case itself crashed")
            failed += not outcome.ok
            note = f"  [{outcome.why}]" if outcome.why else ""
            print(f"{'PASS' if outcome.ok else 'FAIL'}  {name:<30} exit {outcome.ran.code:>4}  "
                  f"{outcome.ran.first[:150]}{note}  ({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(cases) - failed} of {len(cases)} cases PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
