"""One self-contained template source from a template that extends a layout.

CSS is inlined once per template, and premailer needs the whole document: the layout with
its <style>, the newsletter's blocks, the signature and disclaimer partials. Jinja builds
that document only while rendering, for one recipient. So the structure is resolved
first, as text: `{% extends "x" %}` puts the child's blocks into the parent's, and
`{% include "y" %}` with a literal name is replaced by the file. Everything per recipient
(`{{ … }}`, `{% if %}`, loops) is left for Jinja. `{{ super() }}` and dynamic includes are
not supported here and say so.
"""

from __future__ import annotations

import re
from pathlib import Path

from mailer.content.environment import TemplateProblem

__all__ = ["flatten", "flatten_source"]

_EXTENDS = re.compile(r"""\{%-?\s*extends\s+["']([^"']+)["']\s*-?%\}""")
_INCLUDE = re.compile(r"""\{%-?\s*include\s+["']([^"']+)["']\s*-?%\}""")
_BLOCK = re.compile(r"\{%-?\s*block\s+(\w+)\s*-?%\}(.*?)\{%-?\s*endblock(?:\s+\1)?\s*-?%\}",
                    re.DOTALL)
_DYNAMIC = re.compile(r"\{%-?\s*(extends|include|import|from)\s+[^\"'\s]")


def _read(folder: Path, name: str) -> str:
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents or not path.is_file():
        raise TemplateProblem(f"Template not found: {name}")
    return path.read_text(encoding="utf-8")


def flatten(folder: Path, name: str, *, _depth: int = 0) -> str:
    """The source of template `name` with extends and includes resolved."""
    if _depth > 10:
        raise TemplateProblem(f"{name}: templates extend or include each other in a loop")
    return flatten_source(folder, _read(folder, name), name, _depth=_depth)


def flatten_source(folder: Path, source: str, name: str, *, _depth: int = 0) -> str:
    """`source` (the text of template `name`) with extends and includes resolved from
    `folder`."""
    if _DYNAMIC.search(source):
        raise TemplateProblem(f"{name}: extends/include/import need a quoted file name")
    if "super()" in source:
        raise TemplateProblem(f"{name}: {{{{ super() }}}} is not supported in mail templates")
    parent = _EXTENDS.search(source)
    if parent:
        blocks = {m.group(1): m.group(2) for m in _BLOCK.finditer(source)}
        base = flatten(folder, parent.group(1), _depth=_depth + 1)

        def fill(match: re.Match[str]) -> str:
            return blocks.get(match.group(1), match.group(2))

        source = _BLOCK.sub(fill, base)
    source = _INCLUDE.sub(lambda m: flatten(folder, m.group(1), _depth=_depth + 1), source)
    # Block tags stay until the outermost template is done: a child may still fill them.
    return _BLOCK.sub(lambda m: m.group(2), source) if _depth == 0 else source
