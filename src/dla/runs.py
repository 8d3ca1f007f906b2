"""The run directory: `<out>/<experiment>/<run-name>/`, created only when a run can really start.

A run is complete when `results.json` exists; it is written last and atomically, so an interrupted or
failed run never looks complete. Run names are plain folder names (checked in config.validate), so no
config value can place files outside the chosen output directory.

Runs and sweeps share `<out>/<experiment>/`, so a run name and a sweep name could name one folder. They never
do: a run refuses a sweep's folder and a sweep refuses a run's, in one line, before either writes anything.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dla import __version__
from dla.config import ExperimentConfig, dump_yaml
from dla.errors import RunDirError
from dla.io import atomic_write, write_json  # write_json re-exported for older imports


@dataclass
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def env(self) -> Path:
        return self.path / "env.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.md"

    @property
    def gradflow(self) -> Path:
        return self.path / "gradflow.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def tb(self) -> Path:
        return self.path / "tb"

    @property
    def complete(self) -> bool:
        return self.results.is_file()

    def read_results(self) -> dict[str, Any]:
        if not self.results.exists():
            raise RunDirError(f"run {self.path} is incomplete (no results.json): it was interrupted or failed; "
                              "resume it with `dla run EXPERIMENT resume=true run_name=NAME`")
        return read_json_mapping(self.results)


def read_json_mapping(path: Path) -> dict[str, Any]:
    """A JSON object from a run folder, which anyone may have edited: invalid UTF-8, a number too long to
    convert, nesting deeper than the parser recurses, or a top level that is not an object is a one-line
    `RunDirError`, never a traceback."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise RunDirError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer past Python's digit limit
        raise RunDirError(f"cannot read {path}: {' '.join(str(exc).split())[:200]}") from None
    except RecursionError:
        raise RunDirError(f"cannot read {path}: nested too deeply to be a dla results file") from None
    if not isinstance(data, dict):
        raise RunDirError(f"cannot read {path}: it holds a JSON {type(data).__name__}, not the object dla writes")
    return data


def read_fingerprinted(path: Path, fingerprint: dict[str, Any], max_bytes: int) -> dict[str, Any] | None:
    """The JSON object at path when it was written for this fingerprint (its "fingerprint" key), else None:
    absent, larger than max_bytes, unreadable or for another request / other weights. What `dla attack` and
    `dla ood` reuse of a sweep's runs rests on."""
    try:
        if path.stat().st_size > max_bytes:
            return None
        saved = read_json_mapping(path)
    except (OSError, RunDirError):
        return None
    return saved if saved.get("fingerprint") == fingerprint else None


def is_run_folder(path: Path) -> bool:
    """A folder `dla run` wrote into: its config (written first), checkpoints or results."""
    return any((path / name).exists() for name in ("config.yaml", "env.json", "checkpoints", "results.json"))


def is_sweep_folder(path: Path) -> bool:
    """A folder `dla sweep` wrote into: its table, or (still running, interrupted) run folders for its points."""
    if (path / "sweep.csv").is_file():
        return True
    try:
        return any(child.is_dir() and is_run_folder(child) for child in path.iterdir())
    except OSError:  # not a folder, or none at all
        return False


def refuse_sweep_folder(path: Path, run_name: str) -> None:
    """A run must not write into (or resume from) a sweep's folder."""
    if path.is_dir() and is_sweep_folder(path):
        raise RunDirError(f"run_name={run_name} names {path}, the folder of the sweep {path.name!r}; a run and a "
                          "sweep never share a folder: choose another run_name=...")


def refuse_run_folder(path: Path) -> None:
    """A sweep must not write its points, sweep.csv and summary.md into a run's folder."""
    if path.is_dir() and is_run_folder(path):
        raise RunDirError(f"sweep --name {path.name} names {path}, the folder of the run {path.name!r}; a sweep and "
                          "a run never share a folder: choose another --name")


def ensure_writable(folder: Path) -> None:
    """Fail early, with one line, if runs cannot be written under `folder`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".dla-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"cannot write to output directory {folder}: {exc.strerror or exc}; "
                          "pass --out to a writable folder") from None


LOCK_NAME = ".dla-lock"
_locks: dict[Path, int] = {}  # run folder -> the open lock file this process holds it by


def lock_run_dir(path: Path) -> None:
    """Hold `path` exclusively for as long as this process lives (or until `release_run_locks`).

    An advisory `flock` on PATH/.dla-lock: a second `dla` process that wants the folder (resume=true while the
    first still trains, two sweeps with one --name) is refused in one line instead of interleaving its writes.
    The kernel drops the lock when the process ends however it ends, so kill -9 never leaves a stale one; the
    file itself stays and means nothing on its own. Re-entrant within one process (a sweep's points in turn).
    """
    import fcntl

    key = path.resolve()
    if key in _locks:
        return
    try:
        fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise RunDirError(f"cannot lock run folder {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another"
        os.close(fd)
        raise RunDirError(f"run folder {path} is in use by another dla process (pid {holder}); wait for it to "
                          "finish or stop it, then run this again") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # only to name the holder in the message above
    _locks[key] = fd


def release_run_locks(keep: frozenset[Path] = frozenset()) -> None:
    """Let go of the run folders this process locked (all but `keep`): its run is over."""
    for key in [k for k in _locks if k not in keep]:
        os.close(_locks.pop(key))  # closing the last descriptor releases the flock


def held_run_locks() -> frozenset[Path]:
    return frozenset(_locks)


def prepare_run_dir(base: Path, cfg: ExperimentConfig) -> RunDir:
    """The run's folder under `base` (`<out>/<experiment>` or a sweep's folder): a new one, or
    (resume=true) the unfinished one to continue. Either way this process holds its lock from now on."""
    if cfg.run_name:
        refuse_sweep_folder(base / cfg.run_name, cfg.run_name)
    if cfg.resume:
        path = _find_resumable(base, cfg.run_name)
        lock_run_dir(path)
        _find_resumable(base, path.name)  # checked again under the lock: it may have finished meanwhile
        return RunDir(path)
    name = cfg.run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-s{cfg.seed}"
    path = base / name
    _refuse_existing(path)
    ensure_writable(path)
    lock_run_dir(path)
    _refuse_existing(path)  # again under the lock: two processes may have created it at once
    return RunDir(path)


def _refuse_existing(path: Path) -> None:
    if path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir()):
        raise RunDirError(f"run folder {path} already exists; choose another run_name=..., "
                          "or resume=true to continue it")


def clear_unstarted(path: Path) -> bool:
    """Empty a sweep point's folder that holds nothing to resume (interrupted before its first checkpoint), so
    rerunning the sweep starts that point again; True when it did. Done under the folder's lock, so a point
    that another process is running is refused, never emptied under it."""
    run = RunDir(path)
    if not path.is_dir() or run.last.is_file() or run.complete:
        return False
    lock_run_dir(path)
    if run.last.is_file() or run.complete:  # written before the lock was ours
        return False
    for child in path.iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    return True


def _find_resumable(base: Path, run_name: str) -> Path:
    if run_name:
        path = base / run_name
        if not (path / "checkpoints" / "last.pt").is_file():
            raise RunDirError(f"cannot resume {path}: it has no checkpoints/last.pt")
        if (path / "results.json").exists():
            raise RunDirError(f"cannot resume {path}: it already finished (results.json exists); "
                              "start a new run with another run_name")
        return path
    candidates = [p for p in base.glob("*/checkpoints/last.pt") if not (p.parents[1] / "results.json").exists()]
    if not candidates:
        raise RunDirError(f"resume=true but no unfinished run with checkpoints/last.pt under {base}; "
                          "name one with run_name=...")
    return max(candidates, key=lambda p: p.stat().st_mtime).parents[1]


def write_config(run: RunDir, cfg: ExperimentConfig) -> None:
    with atomic_write(run.config, "w") as f:
        f.write(dump_yaml(cfg))


def env_info(device: torch.device, seed: int) -> dict[str, Any]:
    """Versions, hardware, commit and seed: what someone needs to reproduce or compare a number."""
    info: dict[str, Any] = {
        "dla": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "seed": seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cpu_model() -> str:
    """The CPU's marketing name ("Intel(R) Xeon(R) Platinum 8480+"), where the OS says it; else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


MACHINE_KEYS = ("cpu_model", "cpu_count", "torch_threads", "device", "gpu", "world_size", "torch", "dla", "git_commit")


def machine_here(device: str | torch.device = "cpu") -> dict[str, Any]:
    """The machine this process measures on, with MACHINE_KEYS: what an evaluation (an attack, an OOD score, an
    explanation) writes to its results.json, since it may run elsewhere than the training did."""
    info = env_info(torch.device(device), seed=0)
    return {k: info[k] for k in MACHINE_KEYS if k in info}


# Every task's results.json opens with these keys, in this order (built by `results_record`, checked by
# `write_results`), so tables, sweeps, verdicts and the HTML report read an image, text or language-model run
# alike; each task's own keys follow them, and "machine" closes the file.
RESULTS_SCHEMA = ("experiment", "run", "model", "dataset", "data", "seed", "parameters", "best_epoch",
                  "epochs_run", "epochs_configured", "train_seconds", "device", "train", "val", "test")


def results_record(cfg: Any, run: RunDir, *, model: str, data: dict[str, Any], parameters: int, best_epoch: int,
                   epochs_run: int, epochs_configured: int, train_seconds: float, device: str,
                   train: dict[str, Any], val: dict[str, Any], test: dict[str, Any], **task: Any) -> dict[str, Any]:
    """The shared part of results.json (RESULTS_SCHEMA; epochs count optimizer steps for a language model), then
    the task's own keys."""
    shared = {"experiment": cfg.experiment, "run": run.path.name, "model": model, "dataset": cfg.data.name,
              "data": data, "seed": cfg.seed, "parameters": parameters, "best_epoch": best_epoch,
              "epochs_run": epochs_run, "epochs_configured": epochs_configured,
              "train_seconds": round(train_seconds, 2), "device": device, "train": train, "val": val, "test": test}
    return {**shared, **task}


def write_results(run: RunDir, results: dict[str, Any]) -> None:
    """results.json, with the machine that produced it (from the run's env.json): written last, as it marks the
    run complete. One place for every task, so every result says where it was measured."""
    missing = [k for k in RESULTS_SCHEMA if k not in results]
    if missing:  # a task that built its record by hand: a bug in dla, never the user's input
        raise ValueError(f"results.json for {run.path} lacks {', '.join(missing)}; build it with results_record")
    env: dict[str, Any] = {}
    if run.env.is_file():
        try:
            env = json.loads(run.env.read_text())
        except (OSError, ValueError):
            env = {}
    machine = {k: env[k] for k in MACHINE_KEYS if k in env} if isinstance(env, dict) else {}
    if "cpu_model" not in machine and isinstance(env, dict) and "processor" in env:  # env.json of an older dla
        machine["cpu_model"] = env["processor"]
    write_json(run.results, {**results, "machine": machine})


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
