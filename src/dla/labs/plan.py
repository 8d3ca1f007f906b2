"""A lab as data: src/dla/labs/labN.yaml lists, per budget profile, the dla commands that redo the lab in order.

    title: "Lab 3: ..."
    profiles:
      smoke:
        about: "what this budget buys"
        set: [data.limit_train=2000, train.epochs=1]   # overrides for every sweep step
        steps:
          - [sweep, cnn_cifar10, seed=0]                # dla sweep cnn_cifar10 seed=0 <set> --name lab3-smoke
          - [attack, cnn_cifar10, --method, fgsm]       # dla attack <out>/cnn_cifar10/lab3-smoke --method fgsm

A step is a command word (sweep, attack, ood, explain), the experiment, and the rest of its command line. In an
attack / ood / explain step the experiment stands for this lab run's sweep folder of it, which an earlier sweep
step must have made. Every profile's sweeps are named `lab<N>-<profile>`, so profiles never share run folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dla.errors import ConfigError

LABS_DIR = Path(__file__).resolve().parent
COMMANDS = ("sweep", "attack", "ood", "explain")


@dataclass(frozen=True)
class Step:
    command: str  # one of COMMANDS
    experiment: str
    args: tuple[str, ...]

    def argv(self, out: Path, sweep_name: str, common: tuple[str, ...]) -> list[str]:
        """The `dla` command line of this step (without the program name)."""
        if self.command == "sweep":
            return ["sweep", self.experiment, *self.args, *common, "--name", sweep_name, "--out", str(out)]
        return [self.command, str(out / self.experiment / sweep_name), *self.args]


@dataclass(frozen=True)
class LabPlan:
    lab: int
    title: str
    profile: str
    about: str
    common: tuple[str, ...]  # the profile's `set`
    steps: tuple[Step, ...]

    @property
    def sweep_name(self) -> str:
        return f"lab{self.lab}-{self.profile}"


def lab_numbers() -> list[int]:
    return sorted(int(p.stem[3:]) for p in LABS_DIR.glob("lab*.yaml") if p.stem[3:].isdigit())


def load_plan(lab: int, profile: str) -> LabPlan:
    """The steps of `lab` on budget `profile`, checked: one line naming what is wrong."""
    from dla.config import safe_load_yaml

    path = LABS_DIR / f"lab{lab}.yaml"
    if not path.is_file():
        raise ConfigError(f"no lab {lab}; the labs are {', '.join(map(str, lab_numbers()))}")
    data = safe_load_yaml(path.read_text(encoding="utf-8"), str(path))
    profiles = data.get("profiles") or {}
    if profile not in profiles:
        raise ConfigError(f"lab {lab} has no budget {profile!r}; its budgets: {', '.join(profiles)}")
    p = profiles[profile]
    steps = tuple(_step(raw, lab, profile) for raw in p.get("steps") or [])
    made: set[str] = set()
    for s in steps:
        if s.command != "sweep" and s.experiment not in made:
            raise ConfigError(f"lab {lab} ({profile}): the {s.command} step on {s.experiment} comes before any "
                              f"sweep of it")
        made.add(s.experiment)
    return LabPlan(lab, str(data.get("title", f"Lab {lab}")), profile, str(p.get("about", "")),
                   tuple(str(a) for a in p.get("set") or []), steps)


def _step(raw: object, lab: int, profile: str) -> Step:
    if not isinstance(raw, list) or len(raw) < 2 or raw[0] not in COMMANDS:
        raise ConfigError(f"lab {lab} ({profile}): a step must be [command, experiment, args...] with command one "
                          f"of {', '.join(COMMANDS)}; got {raw!r:.80}")
    return Step(str(raw[0]), str(raw[1]), tuple(str(a) for a in raw[2:]))
