"""Generated blocks in Markdown files: text between a begin marker (an HTML comment that may say more) and
an end marker, rewritten by code from a committed result (the README's findings and image numbers)."""
from __future__ import annotations

import os
from pathlib import Path


def span(text: str, begin: str, end: str) -> tuple[int, int] | None:
    """(start, stop) of the block in `text`, markers included, or None when there is none."""
    start = text.find(begin)
    stop = text.find(end, start if start >= 0 else 0)
    if start < 0 or stop < start:
        return None
    return start, stop + len(end)


def replace(path: str | os.PathLike, block: str, begin: str, end: str, what: str) -> bool:
    """Replace the `what` block of `path` with `block` (which holds its markers); True when the file changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    where = span(text, begin, end)
    if where is None:
        raise ValueError(f"{path} has no {what} block: add the lines '{begin} -->' and '{end}' where it goes")
    start, stop = where
    if text[stop:stop + 1] == "\n":
        stop += 1  # the block ends with its own newline
    new = text[:start] + block + text[stop:]
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def current(path: str | os.PathLike, begin: str, end: str) -> str | None:
    """The block of `path` as it stands (markers included, with its newline), or None."""
    text = Path(path).read_text(encoding="utf-8")
    where = span(text, begin, end)
    return None if where is None else text[where[0]:where[1]] + "\n"


def frame(source: str | os.PathLike):
    """The rows a block is generated from: a results database (`plantseek.store.ResultStore.dataframe`) or a
    CSV written from one (old column names read as today's, `plantseek.metric_schema.upgrade_columns`)."""
    import pandas as pd

    from .. import metric_schema

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such results file: {path}")
    if path.suffix.lower() == ".csv":
        df = pd.read_csv(path)
        return df.rename(columns=metric_schema.upgrade_columns(df.columns))
    from ..store import ResultStore

    with ResultStore(path, readonly=True) as store:
        return store.dataframe()
