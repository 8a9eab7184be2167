"""Stored benchmark results that ``lowbit report`` shows beside its live measurements.

The report never reads a path relative to the installed package or to the current folder. It reads one
results folder, a :class:`ResultsSource`:

* by default the small JSON copies packaged with lowbit in ``lowbit/lab/report/stored_results/`` (they ship in
  the wheel, so an installed lowbit shows the same stored figures as the checkout);
* or a folder the user names with ``lowbit report --results DIR`` (for example ``benchmarks/results`` in a
  checkout, or the ``--out`` folder of ``lowbit rl``).

The packaged copies are made from ``benchmarks/results`` by :func:`sync_packaged`
(``python benchmarks/sync_stored_results.py`` after a benchmark run); a test checks that they are in sync.
Copies keep the schema of the originals, trimmed to what the report reads (the RL runs keep their tables and the
curves of the main run only), so a section reads either kind of folder with the same code.

Every stored file records the machine it was measured on; :func:`provenance` and :func:`machine_caveat` say so in
the report, and say "not comparable" when stored timings meet live measurements of another CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGED_DIR = Path(__file__).resolve().parent / "stored_results"

# Files the report reads, copied whole; ``rl*.json`` files holding experiments are added by :func:`stored_names`.
WHOLE = ("attention.json", "msd_linear.json")
# costmodel.json: the report reads only the calibration (and the header keys every results file has).
HEADER_KEYS = ("benchmark", "machine", "written", "quick")
COSTMODEL_KEYS = (*HEADER_KEYS, "calibration")
# RL runs: the curves of the main run only (the figure's four quantities), to 4 significant digits.
RL_MAIN = "rl.json"
RL_STEP_KEYS = ("step", "reward", "alpha", "ess_ratio")
RL_EVAL_KEYS = ("step", "acc_fp32")


@dataclass(frozen=True)
class ResultsSource:
    """A folder of stored benchmark results, and whether it is the copy packaged with lowbit."""

    path: Path
    packaged: bool

    def file(self, name: str) -> Path:
        """The path of ``name`` in this folder (it may not exist)."""
        return self.path / name

    def load(self, name: str) -> dict[str, Any] | None:
        """The JSON object stored as ``name``, or None when the folder has no such file."""
        path = self.file(name)
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return data

    def describe(self) -> str:
        """Where the figures come from, for captions: the packaged copy or the named folder."""
        if self.packaged:
            return "the results packaged with lowbit (copied from benchmarks/results)"
        return f"the results folder {self.path}"

    def rerun_hint(self, script: str, command: str = "") -> str:
        """How to get a missing stored result: run the benchmark, then point the report at its folder."""
        how = f"`{command}`" if command else f"benchmarks/{script} in a lowbit checkout"
        return f"run {how}, then `lowbit report --results DIR` with the folder it wrote"


def packaged_results() -> ResultsSource:
    """The results packaged with lowbit (the report's default)."""
    return ResultsSource(PACKAGED_DIR, packaged=True)


def results_source(path: str | Path | None) -> ResultsSource:
    """``--results DIR`` as a :class:`ResultsSource`; None means the packaged results.

    Raises ``ValueError`` when ``path`` is not an existing folder.
    """
    if path is None:
        return packaged_results()
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"--results: {str(folder)!r} is not a folder of benchmark results (*.json)")
    folder = folder.resolve()
    return ResultsSource(folder, packaged=folder == PACKAGED_DIR)


def stored_cpu(data: Mapping[str, Any] | None) -> str | None:
    """The CPU model a stored result records, or None when it records none."""
    machine = (data or {}).get("machine")
    if isinstance(machine, Mapping) and machine.get("cpu"):
        return str(machine["cpu"])
    return None


def provenance(data: Mapping[str, Any], name: str, source: ResultsSource) -> str:
    """One sentence: which file, when, on which machine, from which folder."""
    machine = data.get("machine") if isinstance(data.get("machine"), Mapping) else {}
    assert isinstance(machine, Mapping)
    cpu = stored_cpu(data) or "an unrecorded CPU"
    cores = machine.get("usable_cores")
    flags = machine.get("cpu_flags")
    detail = ", ".join(
        part
        for part in (
            f"{cores} usable cores" if cores else "",
            f"flags {' '.join(flags)}" if isinstance(flags, Sequence) and not isinstance(flags, str) and flags else "",
        )
        if part
    )
    return (
        f"Stored result {name} (written {data.get('written', 'at an unrecorded time')}, measured on {cpu}"
        f"{f' ({detail})' if detail else ''}), read from {source.describe()}, not re-measured."
    )


def machine_caveat(data: Mapping[str, Any] | None, here_cpu: str) -> tuple[bool, str]:
    """Whether stored timings and live measurements on ``here_cpu`` may be compared, and a sentence saying so.

    A different (or unrecorded) CPU model is "not comparable"; the same model name is a weaker match (the
    same model in another machine, under other load), so the sentence says that too.
    """
    cpu = stored_cpu(data)
    if cpu is None:
        return False, (
            f"The stored timings do not record their machine: not comparable with measurements on this machine "
            f"({here_cpu})."
        )
    if cpu != here_cpu:
        return False, (
            f"Measured on another machine (CPU {cpu}), not comparable with measurements on this machine "
            f"(CPU {here_cpu})."
        )
    return True, (
        f"Measured on a machine with the same CPU model as this one ({cpu}), but in another run and possibly "
        "another machine: compare with care."
    )


# ---------------------------------------------------------------------------------------------------------------
# The packaged copies
# ---------------------------------------------------------------------------------------------------------------


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    return value


def _trim_rl(name: str, data: dict[str, Any]) -> dict[str, Any]:
    experiments = []
    for exp in data["experiments"]:
        exp = dict(exp)
        if name == RL_MAIN:
            exp["runs"] = [
                {
                    "arm": run["arm"],
                    "seed": run["seed"],
                    "steps": _round({k: run["steps"][k] for k in RL_STEP_KEYS if k in run["steps"]}),
                    "evals": _round({k: run["evals"][k] for k in RL_EVAL_KEYS if k in run["evals"]}),
                }
                for run in exp.get("runs", [])
            ]
        else:
            exp.pop("runs", None)  # tables only: the report draws the curves of the main run in quick mode
        experiments.append(exp)
    keep = {k: data[k] for k in (*HEADER_KEYS, "seconds", "note") if k in data}
    return {**keep, "experiments": experiments, "packaged_copy": "curves trimmed; full file in benchmarks/results"}


def packaged_copy(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """What the packaged copy of ``benchmarks/results/<name>`` holds (same schema, trimmed to what is read)."""
    if name in WHOLE:
        return data
    if name == "costmodel.json":
        return {k: data[k] for k in COSTMODEL_KEYS if k in data}
    if name.startswith("rl") and "experiments" in data:
        return _trim_rl(name, data)
    raise ValueError(f"{name}: not a stored result the report reads")


def stored_names(src: Path) -> list[str]:
    """The files of ``src`` that the report reads (and so are packaged)."""
    names = [n for n in (*WHOLE, "costmodel.json") if (src / n).is_file()]
    for path in sorted(src.glob("rl*.json")):
        if "experiments" in json.loads(path.read_text(encoding="utf-8")):
            names.append(path.name)
    return names


def packaged_texts(src: Path) -> dict[str, str]:
    """File name -> the exact text of its packaged copy, made from the results folder ``src``."""
    out = {}
    for name in stored_names(src):
        data = json.loads((src / name).read_text(encoding="utf-8"))
        out[name] = json.dumps(packaged_copy(name, data), separators=(",", ":")) + "\n"
    return out


def sync_packaged(src: Path, dst: Path = PACKAGED_DIR) -> list[Path]:
    """Write the packaged copies of ``src`` into ``dst`` and remove stale ones; return the files written."""
    texts = packaged_texts(src)
    dst.mkdir(parents=True, exist_ok=True)
    for stale in dst.glob("*.json"):
        if stale.name not in texts:
            stale.unlink()
    written = []
    for name, text in texts.items():
        path = dst / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Refresh the packaged copies from a results folder (default ``benchmarks/results``)."""
    parser = argparse.ArgumentParser(prog="sync_stored_results.py", description=main.__doc__)
    parser.add_argument("src", nargs="?", type=Path, default=Path("benchmarks/results"), help="results folder")
    args = parser.parse_args(argv)
    if not args.src.is_dir():
        print(f"error: {args.src} is not a folder", file=sys.stderr)
        return 2
    for path in sync_packaged(args.src):
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0
