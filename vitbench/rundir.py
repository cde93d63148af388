"""The run directory: its file names, the checked way to read it, and the one safe weight loader.

::

    RUN_DIR/config.yaml                the resolved config, written first
    RUN_DIR/metrics.jsonl              one line per epoch
    RUN_DIR/checkpoints/best.ckpt      the best-validation checkpoint (Lightning's format)
    RUN_DIR/checkpoints/last.ckpt      the newest checkpoint: an interrupted run resumes from it
    RUN_DIR/hpc_ckpt_N.ckpt            a SLURM requeue's checkpoint: resumed before last.ckpt
    RUN_DIR/results.json               written atomically and last: its presence means "finished"

Readers here check what they read: a missing, corrupt or incomplete file is a one-line
:class:`VitbenchError` naming the file and the fix. On a shared cluster run dirs are passed
between people (``--teacher RUN_DIR``, ``vitbench analyze RUN_DIR``), so weights are read only by
:func:`load_checkpoint`, as tensors and plain values (``torch.load(weights_only=True)``): a pickle
that would run code on loading is refused, not executed. For the same reason a plugin that such
a run dir names is imported only when the user names it too (:func:`check_plugins_named`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Iterable

import yaml

from vitbench.errors import VitbenchError

RESULTS = "results.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
BEST = "best"  # ModelCheckpoint's filename: checkpoints/best.ckpt
LAST = "last"  # checkpoints/last.ckpt
BEST_CKPT = Path(CHECKPOINTS) / f"{BEST}.ckpt"
LAST_CKPT = Path(CHECKPOINTS) / f"{LAST}.ckpt"
HPC_CKPT = re.compile(r"hpc_ckpt_(\d+)\.ckpt")
MODEL_PREFIX = "model."  # ClassifierModule.model: the backbone's weights in a checkpoint's state_dict
EMA_PREFIX = "ema.module."  # ClassifierModule.ema (optim.ema_decay): the weights such a run validated and tested

# What a finished run's results.json holds, by type. A key a reader requires must be present and
# not null; any other key, when present and not null, must still have its type.
_NUMBER = (int, float)
RESULT_TYPES: dict[str, Any] = {
    "label": str, "backbone": str, "family": str, "baseline": bool, "preset": str, "dataset": str, "fraction": _NUMBER,
    "samples_per_class": int, "n_train": int, "n_val": int, "n_test": int, "seed": int, "sweep": str,
    "image_size": int, "in_chans": int, "num_classes": int, "class_names": list, "params": int,
    "gflops": _NUMBER, "teacher": str, "distillation": str, "epochs": int, "steps": int,
    "test_acc": _NUMBER, "test_acc5": _NUMBER, "best_val_acc": _NUMBER, "images_per_s": _NUMBER,
    "wall_time_s": _NUMBER, "train_time_s": _NUMBER, "world_size": int, "wandb_run_id": str,
    "converged": bool, "best_early": _NUMBER, "best_late": _NUMBER, "gain": _NUMBER, "val_history": list,
    "vitbench_version": str, "hostname": str, "software": str, "device": str,
}
UNKNOWN_DEVICE = "unknown"  # results.json "device" when it cannot be told without side effects
_POSITIVE = ("n_train", "image_size", "in_chans", "num_classes", "samples_per_class")
_FRACTIONS = ("fraction", "test_acc", "test_acc5", "best_val_acc")
# What rebuilding a run's model needs (a teacher, an analysis).
MODEL_KEYS = ("backbone", "preset", "image_size", "in_chans", "num_classes")
# What makes a run "done" for `sweep status` and usable by `vitbench report`.
DONE_KEYS = ("backbone", "test_acc", "n_train")
# results.json and config.yaml hold a few KB: a cap far above that keeps a file swapped for a link to
# /dev/zero, or a multi-GB blob, from exhausting memory before the parser could say it is wrong.
MAX_SMALL_FILE = 16 * 2**20
# metrics.jsonl grows a row per logged step and may legitimately be large: a much higher cap, which only
# a damaged file reaches (its reader then treats the file as unreadable, as it does a corrupt one).
MAX_METRICS_FILE = 512 * 2**20


def results_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RESULTS


def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG


def metrics_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / METRICS


def best_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / BEST_CKPT


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / LAST_CKPT


def hpc_checkpoints(run_dir: str | Path) -> list[Path]:
    """Lightning's SLURM requeue checkpoints, oldest first (hpc_ckpt_1, _2, ..., _10)."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).glob("hpc_ckpt_*.ckpt") if (m := HPC_CKPT.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def hpc_checkpoint(run_dir: str | Path, number: int) -> Path:
    return Path(run_dir) / f"hpc_ckpt_{number}.ckpt"


def next_hpc_checkpoint(run_dir: str | Path) -> Path:
    """Where a requeue or an interrupt saves next: numbered past the newest, which a resume picks first."""
    found = hpc_checkpoints(run_dir)
    return hpc_checkpoint(run_dir, int(HPC_CKPT.fullmatch(found[-1].name).group(1)) + 1 if found else 1)


def stable_run_id(out_dir: str | Path) -> str:
    """A W&B run id that is the same every time this run dir is (re)started."""
    return hashlib.sha1(str(Path(out_dir).resolve()).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------- reading

class FileTooLarge(OSError):
    """A run file larger than its reader's cap: nothing of it was parsed."""


def read_capped(path: Path, cap: int) -> bytes:
    """``path``'s bytes, refusing (:class:`FileTooLarge`) a file of more than ``cap`` bytes.

    stat() answers first for a regular file; the bounded read catches what stat cannot size
    (/dev/zero and other devices report 0 bytes).
    """
    if path.stat().st_size > cap:
        raise FileTooLarge(f"{path} is larger than {cap // 2**20} MiB")
    with path.open("rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise FileTooLarge(f"{path} is larger than {cap // 2**20} MiB")
    return data


def _too_large(path: Path, cap: int, what: str, fix: str) -> VitbenchError:
    return VitbenchError(f"{path} is larger than {cap // 2**20} MiB, far more than {what} holds "
                         f"(a few KB): it is not one, or it is damaged; {fix}")


def _type_name(tp) -> str:
    if tp == _NUMBER:
        return "a number"
    return {str: "a string", int: "an integer", list: "a list", bool: "true or false"}[tp]


def check_results(results: Any, path: Path, required: Iterable[str] = (), fix: str = "") -> dict:
    """``results`` as a dict whose known keys have their types; raises naming the first bad key."""
    fix = fix or f"re-run `vitbench train --out {path.parent}` (delete {path} first)"
    if not isinstance(results, dict):
        raise VitbenchError(
            f"{path} is not a vitbench results file (a JSON {type(results).__name__}, not an object): {fix}"
        )
    missing = [k for k in required if results.get(k) is None]
    if missing:
        raise VitbenchError(f"{path} lacks {', '.join(missing)}: it was not written by `vitbench train`; {fix}")
    for key, tp in RESULT_TYPES.items():
        value = results.get(key)
        if value is None:
            continue
        ok = isinstance(value, tp) and (tp is bool or not isinstance(value, bool))
        if ok and tp == _NUMBER:
            ok = math.isfinite(value)
        if ok and key == "class_names":
            ok = all(isinstance(c, str) for c in value)
        if ok and key in _POSITIVE:
            ok = value >= 1
        if ok and key in _FRACTIONS:
            ok = 0 <= value <= 1
        if not ok:
            want = "a list of strings" if key == "class_names" else _type_name(tp)
            want += " >= 1" if key in _POSITIVE else " in [0, 1]" if key in _FRACTIONS else ""
            raise VitbenchError(
                f"{path}: '{key}' is {json.dumps(value)[:40]}, not {want}: the file was edited or damaged; {fix}"
            )
    return results


def load_results(run_dir: str | Path, fix: str = "") -> Any:
    """A run's results.json as parsed JSON, unchecked: for a reader that first asks whether a file is
    vitbench's at all (``vitbench report`` on a folder); every other reader wants :func:`read_results`.
    A missing, unreadable, non-UTF-8 or non-JSON file is a one-line VitbenchError naming it."""
    path = results_path(run_dir)
    fix = fix or f"re-run `vitbench train --out {path.parent}` (delete {path} first)"
    try:
        text = read_capped(path, MAX_SMALL_FILE).decode("utf-8")
    except FileNotFoundError:
        raise VitbenchError(f"{path.parent} is not a finished vitbench run (no {RESULTS}): {fix}") from None
    except FileTooLarge:
        raise _too_large(path, MAX_SMALL_FILE, "a results file", fix) from None
    except UnicodeDecodeError as e:
        raise VitbenchError(f"{path} is corrupt (not UTF-8 text: byte {e.start}): {fix}") from None
    except OSError as e:
        raise VitbenchError(f"cannot read {path} ({e.strerror or type(e).__name__}): {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise VitbenchError(f"{path} is corrupt (line {e.lineno}: {e.msg}): {fix}") from None


def read_results(run_dir: str | Path, required: Iterable[str] = (), fix: str = "") -> dict:
    """A run's results.json, checked (see :func:`check_results`): the one reader of that file."""
    return check_results(load_results(run_dir, fix), results_path(run_dir), required, fix)


def results_ok(run_dir: str | Path) -> bool | None:
    """None: no results.json (not finished); True: a finished run's (see DONE_KEYS); False: corrupt."""
    path = results_path(run_dir)
    if not path.is_file():
        return None
    try:
        read_results(run_dir, DONE_KEYS)
    except VitbenchError:
        return False
    return True


def validation_rows(run_dir: str | Path) -> list[dict] | None:
    """The rows of a run's metrics.jsonl that carry a validation; None if the file cannot be read.

    A line that is not JSON, or not an object, makes the file unreadable; a row with a
    non-integer step or a non-finite val_acc (a hand edit) is left out rather than crashing a reader.
    """
    try:
        text = read_capped(metrics_path(run_dir), MAX_METRICS_FILE).decode("utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not all(isinstance(r, dict) for r in rows):
        return None
    return [r for r in rows if isinstance(r.get("step"), int) and not isinstance(r.get("step"), bool)
            and isinstance(r.get("val_acc"), (int, float)) and not isinstance(r.get("val_acc"), bool)
            and math.isfinite(r["val_acc"])]


def read_config(run_dir: str | Path, fix: str = "") -> dict:
    """A run's config.yaml as the resolved config dict, checked like ``--config`` (unknown keys are errors)."""
    from vitbench.config import build_config

    path = config_path(run_dir)
    fix = fix or f"restore {path} (it is the resolved config `vitbench train` wrote) or re-run the training"
    try:
        raw = yaml.safe_load(read_capped(path, MAX_SMALL_FILE).decode("utf-8"))
    except FileNotFoundError:
        raise VitbenchError(f"{path.parent} has no {CONFIG}: {fix}") from None
    except FileTooLarge:
        raise _too_large(path, MAX_SMALL_FILE, "a run's resolved config", fix) from None
    except (OSError, UnicodeDecodeError) as e:
        raise VitbenchError(f"cannot read {path} ({getattr(e, 'strerror', None) or type(e).__name__}): {fix}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise VitbenchError(f"{path} is not valid YAML{where}: {fix}") from None
    if not isinstance(raw, dict):
        raise VitbenchError(f"{path} is not a vitbench config (a {type(raw).__name__}, not a mapping): {fix}")
    try:
        return build_config(raw, check_paths=False).to_dict()  # run elsewhere: its data path may not exist here
    except VitbenchError as e:
        raise VitbenchError(f"{path}: {e}") from None


def read_finished_run(run_dir: str | Path, required: Iterable[str] = MODEL_KEYS,
                      fix: str = "") -> tuple[Path, dict, dict]:
    """(run dir, config, results) of a finished run, each file checked; raises saying what is wrong."""
    run = Path(run_dir)
    fix = fix or "pass a run directory written by `vitbench train`"
    if not run.is_dir():
        raise VitbenchError(f"{run} is not a finished vitbench run (not a directory): {fix}")
    if not results_path(run).is_file():
        hint = f" (it has {CONFIG}: the run has not finished)" if config_path(run).is_file() else ""
        raise VitbenchError(f"{run} is not a finished vitbench run: no {RESULTS}{hint}; {fix}")
    if not config_path(run).is_file():
        raise VitbenchError(f"{run} has {RESULTS} but no {CONFIG}: {fix}")
    results = read_results(run, required, fix)
    config = read_config(run, fix)
    return run, config, results


# ------------------------------------------------------------------------------- weights

def _refusal(e: BaseException) -> str:
    """The line of torch's weights-only message that says what was refused."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith("Unsupported"):
            return line.rstrip(".")
    for line in lines:
        if line.partition("WeightsUnpickler error:")[2].strip():
            return line.partition("WeightsUnpickler error:")[2].strip().rstrip(".")
    return lines[0][:120] if lines else "refused"


def load_checkpoint(path: str | Path, *, map_location: Any = "cpu", fix: str = "") -> dict:
    """A checkpoint's contents, loaded as tensors and plain values only; never runs code.

    A checkpoint that does not load that way (pickled objects or code, a truncated file,
    not a torch file at all) is a one-line VitbenchError.
    """
    import pickle

    import torch

    path = Path(path)
    fix = fix or "pass a checkpoint written by `vitbench train` (RUN_DIR/checkpoints/best.ckpt)"
    if not path.is_file():
        raise VitbenchError(f"checkpoint {path} not found: {fix}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says what matters
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, random bytes, an empty file: torch raises many types
        reason = _refusal(e) if isinstance(e, pickle.UnpicklingError) else None
        if reason and "GLOBAL" in reason:  # a class or function to call: what a pickle that runs code holds
            raise VitbenchError(
                f"{path} is not a weights-only checkpoint ({reason}): it holds Python objects, which could run code "
                f"when loaded, and vitbench loads tensors and plain values only; {fix}"
            ) from None
        detail = reason or (str(e).strip().splitlines()[0][:120] if str(e).strip() else "empty or truncated")
        raise VitbenchError(f"{path} is not a readable checkpoint ({type(e).__name__}: {detail}): the file is "
                            f"truncated, or not a torch checkpoint of tensors and plain values; {fix}") from None
    if not isinstance(ckpt, dict):
        raise VitbenchError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict: {fix}")
    return ckpt


def model_weights(ckpt: dict, path: str | Path, *, plain_ok: bool = False, fix: str = "") -> dict:
    """The backbone's weights: a Lightning ``state_dict``'s ``model.*`` entries (a teacher's and the
    metrics' dropped; the ``ema.module.*`` ones instead when the run kept a model EMA, since its
    validation and test accuracy are the EMA's), or, with ``plain_ok``, a plain ``{name: tensor}`` state dict."""
    import torch

    fix = fix or "pass a run whose checkpoints/best.ckpt was written by `vitbench train`"
    state = ckpt.get("state_dict")
    if state is None and plain_ok:
        state = ckpt
    if not isinstance(state, dict) or not state:
        raise VitbenchError(f"{path} has no state_dict: {fix}")
    if any(isinstance(k, str) and k.startswith(MODEL_PREFIX) for k in state):
        prefix = EMA_PREFIX if any(isinstance(k, str) and k.startswith(EMA_PREFIX) for k in state) else MODEL_PREFIX
        state = {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
    elif not plain_ok:
        raise VitbenchError(f"{path} holds no '{MODEL_PREFIX}*' weights: it is not a vitbench checkpoint; {fix}")
    bad = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise VitbenchError(f"{path}: state_dict entry {str(bad)[:60]!r} is not a tensor: {fix}")
    return state


# ------------------------------------------------------------------------------- plugins

def _plugin_key(spec: str) -> str:
    return str(Path(spec).resolve()) if spec.endswith(".py") else spec


def check_plugins_named(run_plugins: Iterable[str], named: Iterable[str], run: str | Path,
                        flag: str = "--plugin") -> None:
    """Refuse to import a plugin only another person's run dir names: importing it runs its code.

    The user names the plugins they trust (``--plugin``); those of the run must be among them.
    """
    trusted = {_plugin_key(str(p)) for p in named or ()}
    unnamed = [str(p) for p in run_plugins or () if _plugin_key(str(p)) not in trusted]
    if unnamed:
        raise VitbenchError(
            f"run {run} was trained with plugin {unnamed[0]}, and vitbench imports a plugin (runs its code) only "
            f"when you name it: if you trust it, add {' '.join(f'{flag} {p}' for p in unnamed)}"
        )
