"""Labelled text tables from local files: a `save_to_disk` folder, parquet, or CSV, each read into named splits.

Nothing here runs code from the files: a `save_to_disk` folder is Arrow data plus JSON (read by `datasets`),
parquet and CSV are parsed by pyarrow. The class names of a `ClassLabel` column travel in the Hugging Face
features, which `save_to_disk` and `Dataset.to_parquet` store; a CSV has none (its labels are plain integers).

A folder of parquet or CSV files is split by file name, as the Hub lays them out (`train-00000-of-00001.parquet`,
`test.csv`, `validation/...`): a file whose name (or whose folder's name) starts with train, validation / valid /
val / dev, or test belongs to that split; other files (`unsupervised-*`) are left out. A single file, or a folder
whose files name no split, is one split: `train`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dla.errors import DataError

_SPLIT_RE = re.compile(r"^(train|training|validation|valid|val|dev|test|testing)(?=$|[-_.])", re.IGNORECASE)
_CANONICAL = {"training": "train", "valid": "validation", "val": "validation", "dev": "validation",
              "testing": "test"}
FORMATS = ("parquet", "csv")


@dataclass
class Table:
    """One split: a pyarrow table and its Hugging Face features (ClassLabel names, when the file kept them)."""

    data: Any  # pyarrow.Table
    features: Any  # datasets.Features


def require_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError("this dataset needs Hugging Face datasets: pip install -e '.[nlp]' (or pip install "
                        "datasets)") from None
    return datasets


def canonical_split(name: str) -> str:
    low = name.lower()
    return _CANONICAL.get(low, low)


def read_local(path: Path) -> dict[str, Table]:
    """{split name: Table} from a save_to_disk folder, a parquet / CSV file, or a folder of them."""
    if not path.exists():
        raise DataError(f"{path} does not exist; point data.path (or hf:<path>) at a save_to_disk folder, a "
                        "parquet file or folder, or a CSV file")
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        return _read_saved(path)
    files = [path] if path.is_file() else _data_files(path)
    return _read_files(path, files)


def _read_saved(path: Path) -> dict[str, Table]:
    datasets = require_datasets()
    try:
        saved = datasets.load_from_disk(str(path))
    except Exception as exc:  # a damaged folder: Arrow, JSON or version trouble inside datasets
        raise DataError(f"cannot read the save_to_disk folder {path}: {_first_line(exc)}") from None
    parts = saved if isinstance(saved, datasets.DatasetDict) else {"train": saved}
    return {canonical_split(name): Table(ds.with_format("arrow")[:], ds.features) for name, ds in parts.items()}


def _data_files(folder: Path) -> list[Path]:
    """The parquet (else CSV) files in the folder and its sub-folders, one level deep; never both kinds."""
    found = {ext: sorted([*folder.glob(f"*.{ext}"), *folder.glob(f"*/*.{ext}")]) for ext in FORMATS}
    if found["parquet"] and found["csv"]:
        raise DataError(f"{folder} holds both parquet and CSV files; keep one format per dataset folder")
    files = found["parquet"] or found["csv"]
    if not files:
        raise DataError(f"{folder} is not a save_to_disk folder (no dataset_dict.json or state.json) and holds no "
                        ".parquet or .csv files")
    return files


def _split_of(file: Path, root: Path) -> str | None:
    for part in (file.name, *reversed(file.relative_to(root).parts[:-1])):
        m = _SPLIT_RE.match(part)
        if m:
            return canonical_split(m.group(1))
    return None


def _read_files(root: Path, files: list[Path]) -> dict[str, Table]:
    groups: dict[str, list[Path]] = {}
    for f in files:
        split = _split_of(f, root) if root.is_dir() else None
        if split is not None:
            groups.setdefault(split, []).append(f)
    if not groups:
        groups = {"train": files}
    return {split: _read_group(paths) for split, paths in groups.items()}


def _read_group(paths: list[Path]) -> Table:
    import pyarrow as pa

    datasets = require_datasets()
    tables = [_read_file(p) for p in paths]
    try:
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    except pa.ArrowInvalid as exc:
        raise DataError(f"the files of one split do not share their columns ({paths[0].name}, ...): "
                        f"{_first_line(exc)}") from None
    return Table(table, datasets.Features.from_arrow_schema(table.schema))


def _read_file(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        if path.suffix.lower() == ".csv":
            return pcsv.read_csv(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {_first_line(exc)}") from None
    raise DataError(f"{path} is neither .parquet nor .csv; give a save_to_disk folder, a parquet file or folder, "
                    "or a CSV file")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
