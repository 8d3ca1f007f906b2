"""Reading the report HTML back: tables (cells with their data-value and best mark), images, and whether the tags
nest properly. The standard library's html.parser, so the checks need nothing installed."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}


@dataclass
class Cell:
    text: str
    value: str | None
    best: bool
    std: str | None = None


@dataclass
class Page:
    title: str = ""
    tables: dict[str, list[list[Cell]]] = field(default_factory=dict)  # id -> body rows
    headers: dict[str, list[str]] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)  # src attributes
    external: list[str] = field(default_factory=list)  # any src/href that is neither data: nor #anchor
    errors: list[str] = field(default_factory=list)  # tags that did not nest


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.stack: list[str] = []
        self.table: str | None = None
        self.cell: dict | None = None
        self.row: list[Cell] | None = None
        self.in_head = False
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        for key in ("src", "href"):
            v = a.get(key)
            if v is not None and not v.startswith(("data:", "#")):
                self.page.external.append(v)
        if tag == "img":
            self.page.images.append(a.get("src") or "")
        elif tag == "title":
            self.in_title = True
        elif tag == "table":
            self.table = a.get("id") or f"table{len(self.page.tables)}"
            self.page.tables[self.table] = []
            self.page.headers[self.table] = []
        elif tag == "thead":
            self.in_head = True
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = {"text": "", "value": a.get("data-value"), "best": "best" in (a.get("class") or "").split(),
                         "std": a.get("data-std")}

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.page.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()
        if tag == "title":
            self.in_title = False
        elif tag == "thead":
            self.in_head = False
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(Cell(self.cell["text"].strip(), self.cell["value"], self.cell["best"], self.cell["std"]))
            self.cell = None
        elif tag == "tr" and self.row is not None and self.table is not None:
            if self.in_head:
                self.page.headers[self.table] = [c.text for c in self.row]
            else:
                self.page.tables[self.table].append(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell["text"] += data
        if self.in_title:
            self.page.title += data


def read_page(text: str) -> Page:
    reader = _Reader()
    reader.feed(text)
    reader.close()
    if reader.stack:
        reader.page.errors.append(f"unclosed: {reader.stack}")
    return reader.page


def png_sizes(page: Page) -> list[tuple[int, int]]:
    """Every image of the page decoded: a data URI holding a whole PNG, else an AssertionError."""
    from PIL import Image

    sizes = []
    for src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), src[:40]
        data = base64.b64decode(src[len(prefix):], validate=True)
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG"
            sizes.append(im.size)
    return sizes


def column(page: Page, table: str, name: str) -> list[Cell]:
    i = page.headers[table].index(name)
    return [row[i] for row in page.tables[table]]
