"""Paths: nothing a config or a command-line name can say makes dla write outside the chosen --out.

Names joined under --out (run_name, the experiment name, `dla sweep --name`) must be plain folder names;
paths a config may hold (data.path, train.outlier_exposure.path, distill.teacher) are only ever read.
Each case runs the real command in a sandbox and compares every file under it before and after.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import needs_mnist, one_line_error
from .conftest import RUN

pytestmark = needs_mnist


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


ESCAPES = ["../escape", "../../escape", "/tmp/dla-escape-abs", "a/b", "..", ".", ".hidden", "~/escape",
           "x/../../escape", "\\..\\escape"]


def _cases(sandbox: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, words the refusal must hold). --out is sandbox/jail/out; the working dir is sandbox/cwd."""
    out = ["--out", str(sandbox / "jail" / "out")]
    cases: dict[str, tuple[list[str], str]] = {}
    for name in ESCAPES:
        cases[f"run_name={name}"] = (["run", "mnist_mlp", *RUN, f"run_name={name}", *out], "plain folder name")
        cases[f"sweep --name {name}"] = (["sweep", "mnist_mlp", "seed=0,1", "--name", name, *out],
                                         "plain folder name")
    for name in ("../escape", "a/b", "/tmp/dla-escape-abs", ".."):
        yaml_file = sandbox / f"exp{len(cases)}.yaml"
        yaml_file.write_text(f"experiment: {name!r}\n")
        cases[f"experiment: {name}"] = (["run", str(yaml_file), *RUN, *out], "plain folder name")
    dotdot = sandbox / "..yaml"  # a file whose stem, the default experiment name, is "."
    dotdot.write_text("seed: 1\n")
    cases["file ..yaml"] = (["run", str(dotdot), *RUN, *out], "plain folder name")
    cases["sweep axis run_name"] = (["sweep", "mnist_mlp", "run_name=../a,../b", *out], "plain folder name")
    # Read paths: refused as missing input, and nothing is created where they point.
    cases["data.path"] = (["run", "mnist_mlp", *RUN, "data.name=imagefolder", "data.path=../../outside", *out],
                          "outside")
    cases["outlier_exposure.path"] = (["run", "mnist_mlp", *RUN, "train.outlier_exposure.dataset=imagefolder",
                                       "train.outlier_exposure.path=../../outside", *out], "outside")
    cases["distill.teacher"] = (["run", "mnist_mlp", *RUN, "distill.teacher=../../outside", *out], "outside")
    return cases


def test_no_config_value_or_name_writes_outside_out(tmp_path: Path, proof, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = tmp_path / "box"
    (sandbox / "cwd").mkdir(parents=True)
    (sandbox / "jail").mkdir()
    monkeypatch.chdir(sandbox / "cwd")
    cases = _cases(sandbox)
    before = _tree(tmp_path)
    abs_escape = Path("/tmp/dla-escape-abs")
    assert not abs_escape.exists()
    for what, (argv, needle) in cases.items():
        with proof.check("paths"):
            one_line_error(capsys, argv, needle)
            after = _tree(tmp_path)
            assert after == before, (what, sorted(after - before))  # not even an empty folder, in or out of --out
            assert not abs_escape.exists() and not (Path.home() / "escape").exists(), what
