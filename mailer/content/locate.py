"""Where a template reads a name, in the user's own files (issue 12, point 2): what
`templates check` and a render error at send time point at ("newsletter.html.j2, line
5", "the subject"), never the prepared template's internal name (`text.txt.j2`).

Found with Jinja's parser in the template's files as the user wrote them, following the
layout and partials it extends or includes. Its own module because both the rules
(lint.py) and the renderer (mailing.py) ask it, and neither imports the other for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from jinja2 import TemplateError, meta, nodes

from mailer.content.environment import make_environment

__all__ = ["SUBJECT_NAME", "locate", "locate_name"]

SUBJECT_NAME = "the subject"  # what an error in the subject is said to be in


def _dotted(node: nodes.Node) -> str | None:
    """`subscriber.first_name` for `subscriber.first_name` or `subscriber["first_name"]`;
    None for anything else."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _dotted(node.node)
        return f"{base}.{node.attr}" if base else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
            and isinstance(node.arg.value, str):
        base = _dotted(node.node)
        return f"{base}.{node.arg.value}" if base else None
    return None


def _lines(ast: nodes.Template, wanted: Callable[[str], bool]) -> list[int]:
    found = {n.lineno for n in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Name))
             if (dotted := _dotted(n)) is not None and wanted(dotted)}
    return sorted(found)


def locate(folder: Path | None, template: str, subject: str | None, dotted: str | None,
           wanted: Callable[[str], bool] | None = None) -> list[str]:
    """Where the template `template` in `folder` reads `dotted` (e.g.
    `subscriber.first_name`), or any name `wanted` accepts, in the user's own files:
    "the subject", "newsletter.html.j2, line 5", also in the layout and partials the
    template extends or includes. Only the subject when `folder` is None (a campaign's
    frozen snapshot: the files are not at hand)."""
    wanted = wanted or (lambda name: name == dotted)
    env = make_environment(folder)
    places: list[str] = []
    try:
        if subject is not None and _lines(env.parse(subject), wanted):
            places.append(SUBJECT_NAME)
    except TemplateError:
        pass
    if folder is None:
        return places
    stem = re.sub(r"(\.html)?\.j2$|\.html?$", "", template)
    todo = [n for n in (template, f"{stem}.md.j2", f"{stem}.md", f"{stem}.txt.j2")
            if (folder / n).is_file()]
    done: set[str] = set()
    while todo:
        name = todo.pop(0)
        if name in done:
            continue
        done.add(name)
        try:
            ast = env.parse(env.loader.get_source(env, name)[0], name)  # type: ignore[union-attr]
        except (TemplateError, OSError):
            continue
        places += [f"{name}, line {line}" for line in _lines(ast, wanted)]
        todo += [n for n in meta.find_referenced_templates(ast) if n]
    return places


def locate_name(folder: Path | None, template: str, name: str) -> list[str]:
    """Where the template (not the subject) reads a name whose last part is `name`: what
    a render error at send time knows ("'dict object' has no attribute 'wijk'")."""
    return locate(folder, template, None, None,
                  lambda dotted: dotted == name or dotted.endswith(f".{name}"))
