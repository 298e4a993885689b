"""Rows of an official data file: JSON (a list, or {"data": [...]}), JSON lines, or parquet."""
import json
from pathlib import Path

from tasks.base import TaskError


def read_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            import pandas

            return pandas.read_parquet(path).to_dict("records")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json" and text.lstrip()[:1] in "[{":
            try:
                data = json.loads(text)
                return data["data"] if isinstance(data, dict) and "data" in data else list(data)
            except json.JSONDecodeError:
                pass  # a .json file holding JSON lines, as some official dumps do
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError, ImportError) as err:
        raise TaskError(f"cannot read {path}: {str(err).splitlines()[0][:160]}") from None
