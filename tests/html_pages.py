"""Helpers for the tests of ``certify report --html``: real runs on the bundled models, and a
small reader of the pages (the standard library's HTML parser, made into a tree)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner

from certifier.cli import cli

MODELS = Path(__file__).resolve().parents[1] / "models"
SAMPLES = MODELS / "fmnist-samples.npz"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def invoke(*args, expect_ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if expect_ok:
        assert result.exit_code == 0, result.output
    return result


def certify_run(output: Path, model: str = "fmnist-rs-0.25.onnx", *extra, data: Path = SAMPLES, limit: int = 16,
                n: int = 100, n0: int = 20) -> Path:
    """A real, small certify run of a bundled model (about a second)."""
    plugin = [] if "--plugin" in extra else ["--plugin", "rs"]
    path = Path(model) if Path(model).is_absolute() else MODELS / model
    invoke(*plugin, path, "--data", data, "--limit", limit, "-n", n, "--n0", n0, "-q", "--output", output, *extra)
    return output


def summaries_of(*files: Path, radii: str | None = None) -> dict[str, dict]:
    """What ``certify report --json`` says of each file, by its path."""
    extra = ["--radii", radii] if radii else []
    return json.loads(invoke("report", *files, "--json", *extra).output)


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None] = field(default_factory=dict)
    children: list = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str | None = None, **attrs) -> list["Node"]:
        """Descendants with this tag (any: None) and these attributes (``class_`` matches one of the classes)."""
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and all(_matches(child, k, v) for k, v in attrs.items()):
                    found.append(child)
                found += child.find_all(tag, **attrs)
        return found

    def find(self, tag: str | None = None, **attrs) -> "Node":
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag}> with {attrs}"
        return found[0]

    def walk(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()


def _matches(node: Node, key: str, value) -> bool:
    name = key.rstrip("_").replace("_", "-")
    if name == "class":
        return value in (node.attrs.get("class") or "").split()
    return node.attrs.get(name) == value


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document")
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(page)
    builder.close()
    return builder.root


def staircase_value(points: list[tuple[float, float]], radius: float) -> float:
    """The share a plotted staircase gives at ``radius``: the level of the first point at or beyond it
    (at a radius where the curve drops, the level before the drop, as ``radius >= r`` counts)."""
    return next(v for r, v in points if r >= radius)


def curve_points(polyline: Node) -> list[tuple[float, float]]:
    return [tuple(float(v) for v in pair.split(",")) for pair in polyline.attrs["data-points"].split()]
