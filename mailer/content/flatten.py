"""One self-contained template source from a template that extends layouts and includes
partials, resolved with Jinja's own parser and lexer.

Why a flat source at all: CSS is inlined once per campaign, on the template source, and
premailer needs the whole document (the layout's <style>, the newsletter's blocks, the
partials); each recipient then only costs a Jinja render (docs/performance.md). Jinja
builds that document only while rendering, so the inheritance is resolved beforehand.

How, provably the same as Jinja's inheritance:

- *Structure from the parse tree.* `env.parse()` gives the `Extends`, `Block`, `Include`
  and `super()` nodes. The blocks of a template and its layouts are resolved as Jinja's
  runtime does (`context.blocks[name]`: the most derived definition first, `super()` one
  step towards the base), at any depth, nested blocks included; an include is the included
  template flattened on its own (its blocks are not overridden by the includer, as in
  Jinja).
- *Text from the token stream.* `env.lex()` yields every token with its exact text. Data
  tokens hold the text as the lexer left it, after `trim_blocks`, `lstrip_blocks` and
  `{%- -%}` did their work; a tag's closing token holds what it swallowed (`%}` plus the
  trimmed newline). So the flat source is the data and the kept tags of every template,
  in render order, without the `extends`/`block`/`endblock`/`include` tags and without
  comments. At each kept tag the whitespace markers are chosen so that lexing the flat
  source strips nothing more: a tag keeps its own markers unless its new neighbour would
  be stripped, then it gets `+` (`{%+ … +%}`: strip nothing) or loses its `-`.
- *Checked.* The flat source is lexed again and must give exactly the data and tags that
  were put together, or flatten() fails; tests/test_flatten.py renders every case both
  ways (Jinja's inheritance, and the flat source) and compares, for tables of cases and
  for generated families of templates.
- *Scopes kept.* Jinja renders a block (and `super()`) as a function of the template
  context: it does not see the names set around its tag (a loop variable, a `{% set %}`
  in an enclosing block), and its own `{% set %}` stays inside. The flat source keeps the
  second by wrapping a block or an include that sets names in `{% with %}…{% endwith %}`;
  for the first it checks that no block reads a name that is local where it lands
  (Jinja's own analysis, `meta.find_undeclared_variables`), or refuses. A partial whose
  escaping differs from where it is included is wrapped in `{% autoescape … %}`.

Why tokens and not a rendering trick: Jinja has no "unparse", and the lexer's tokens are
the user's own text, so the flat source is the templates' text, tag for tag (what
premailer then inlines, and what a preview shows), and the check above can prove it lexes
back to the same thing.

What cannot be flattened is refused with a TemplateProblem naming the file and line: a
dynamic `{% extends var %}` or `{% include var %}` (also with `ignore missing`), an
include `without context`, `{% import %}`/`{% from %}`, `self.name()`, `super()` anywhere
but alone in its `{{ }}`, or in a block no layout above defines, a required block nobody
filled, a block or `super()` inside `{% autoescape %}` (Jinja compiles a block's escaping
from its file but changes the context's at run time: no single source equals both), a
block that reads a name local where it lands, a block that contains itself, output
outside blocks in a template that extends another (Jinja never shows it), templates that
extend or include each other in a loop.

Measured (CPU time, best of 40, on this project's shared 2-core machine; the shipped
newsletter with its layout and three partials): 10-13 ms per template version, of which
Jinja's parser takes 4 ms and its lexer 2 ms over the five files, and the lexing check of
the result 2 ms; premailer took 8 ms in the same run, the regex version this replaces
1 ms. That version dropped a block overridden in a middle layout, left a stray
`{% endblock %}` when an outer block was overridden, and its output already rendered
other blank lines than Jinja. All of it happens once per template version (campaign
start, preview, `templates check`), never per message.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateNotFound, TemplateSyntaxError, meta, nodes
from jinja2.loaders import split_template_path
from jinja2.visitor import NodeTransformer

from mailer.content.environment import MailEnvironment, TemplateProblem, make_environment

__all__ = ["flatten", "flatten_source"]

_MAX_DEPTH = 20  # templates inside templates (extends and includes together)
_MAX_ITEMS = 200_000  # pieces of the flat source: an include that doubles itself stops here
# Nodes whose body is a scope of its own in Jinja: names bound inside stay inside.
_SCOPES = (nodes.For, nodes.With, nodes.Macro, nodes.CallBlock, nodes.FilterBlock,
           nodes.Block, nodes.AssignBlock, nodes.Scope, nodes.OverlayScope)
_BINDS = (nodes.Assign, nodes.AssignBlock, nodes.Macro)
_END = re.compile(r"[-+]?%\}\s*\Z")


@dataclass(frozen=True)
class _Tag:
    """One Jinja tag as the lexer read it: `begin` + `inner` + `end` is its text."""

    kind: str  # "block" ({% %}), "variable" ({{ }}) or "raw" ({% raw %}…{% endraw %})
    begin: str  # "{%", "{%-", "{%+", "{{", "{{-"
    inner: str
    end: str  # "%}", "%}\n" (a newline trimmed), "-%}" + white space, "+%}", "}}", "-}}…"
    words: tuple[str, ...]  # the tokens without white space (raw: its text)
    line: int

    @property
    def keyword(self) -> str:
        return self.words[0] if self.kind == "block" and self.words else ""


_Item = str | _Tag  # data (text as the lexer left it) or a tag


def _synthetic(words: str) -> _Tag:
    return _Tag("block", "{%", f" {words} ", "%}", tuple(words.split()), 0)


def _lex(env: MailEnvironment, source: str, name: str) -> list[_Item]:
    """The source as data and tags, comments left out (they render nothing)."""
    items: list[_Item] = []
    tokens = iter(env.lex(source, name))
    for line, kind, value in tokens:
        if kind == "data":
            items.append(value)
        elif kind in ("block_begin", "variable_begin"):
            closing = kind.replace("begin", "end")
            inner: list[str] = []
            words: list[str] = []
            for _, part, text in tokens:
                if part == closing:
                    break
                inner.append(text)
                if part != "whitespace":
                    words.append(text)
            items.append(_Tag(kind[:-6], value, "".join(inner), text, tuple(words), line))
        elif kind == "comment_begin":
            for _, part, _ in tokens:
                if part == "comment_end":
                    break
        elif kind == "raw_begin":
            content = ""
            _, part, text = next(tokens)
            if part == "data":
                content = text
                _, part, text = next(tokens)
            begin = value[:3] if value[2:3] in ("-", "+") else value[:2]
            end = _END.search(text)
            assert end is not None
            items.append(_Tag("raw", begin, value[len(begin):] + content + text[:end.start()],
                              text[end.start():], (content,), line))
        else:  # line statements are not configured in the mail environment
            raise TemplateProblem(f"{name}, line {line}: unexpected {kind}")
    return items


def _merged(items: list[_Item]) -> list[_Item]:
    out: list[_Item] = []
    for item in items:
        if isinstance(item, str):
            if not item:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += item
                continue
        out.append(item)
    return out


def _opening(tag: _Tag, before: str, line_start: bool, lstrip: bool) -> str:
    """The tag's opening marker, so that the lexer strips nothing from `before`."""
    sign = tag.begin[2:]
    if sign == "+" or (sign == "-" and not before[-1:].isspace()):
        return tag.begin
    if tag.kind == "variable":  # lstrip_blocks does not apply to {{ }}
        return "{{"
    start = before.rfind("\n") + 1
    tail = before[start:]
    stripped = lstrip and tail.isspace() and (start > 0 or line_start)
    return "{%+" if stripped else "{%"


def _closing(tag: _Tag, after: str, trim: bool) -> str:
    """The tag's closing marker, so that the lexer strips nothing from `after`."""
    if tag.end.startswith("-") and after[:1].isspace():
        return "}}" if tag.kind == "variable" else "+%}"
    if trim and tag.end == "%}" and after[:1] == "\n":
        return "+%}"
    return tag.end


def _write(env: MailEnvironment, items: list[_Item]) -> str:
    parts: list[str] = []
    line_start = True  # what the lexer calls line_starting: the last match ended a line
    for index, item in enumerate(items):
        if isinstance(item, str):
            parts.append(item)
            continue
        before = items[index - 1] if index and isinstance(items[index - 1], str) else ""
        after = items[index + 1] if index + 1 < len(items) else ""
        after = after if isinstance(after, str) else ""
        closing = _closing(item, after, env.trim_blocks)
        parts.append(_opening(item, before, line_start, env.lstrip_blocks) + item.inner
                     + closing)
        line_start = closing.endswith("\n")
    source = "".join(parts)
    if not env.keep_trailing_newline and source.endswith("\n"):
        source += "\n"  # the lexer drops one final newline
    return source


def _canonical(items: list[_Item]) -> list[tuple[str, object]]:
    return [("data", i) if isinstance(i, str) else (i.kind, i.words) for i in items]


def _walk(node: nodes.Node, above: tuple[nodes.Node, ...] = ()
          ) -> Iterator[tuple[nodes.Node, tuple[nodes.Node, ...]]]:
    """Every node below `node` in source order, with its ancestors."""
    for child in node.iter_child_nodes():
        yield child, (*above, node)
        yield from _walk(child, (*above, node))


class _NoBlocks(NodeTransformer):
    def visit_Block(self, node: nodes.Block) -> None:  # noqa: N802 - Jinja's visitor names
        return None


@dataclass
class _File:
    """One template: its tags, its parse tree, and where the one meets the other."""

    name: str
    items: list[_Item]
    tree: nodes.Template
    escape: bool
    parent: str | None  # the template it extends
    extends_at: int  # index of the extends tag in items, or -1
    special: dict[int, nodes.Node]  # item index -> Block, Include or super() Call
    ends: dict[int, int]  # index of a block tag -> index of its endblock
    tag_of: dict[int, int]  # id(Block) -> index of its tag
    above: dict[int, tuple[nodes.Node, ...]]  # id(node) -> its ancestors

    def where(self, node: nodes.Node) -> str:
        return f"{self.name}, line {node.lineno}"


@dataclass(frozen=True)
class _Piece:
    """What is being written: the body of `root` (a Block, or a whole Template)."""

    file: _File
    root: nodes.Node
    defs: dict[str, list[tuple[_File, nodes.Block]]]  # the block definitions in force
    level: int  # for a block body: its index in defs[root.name] (super() goes to level+1)
    hidden: frozenset[str]  # names the flat source shows here and Jinja would not
    escape: bool  # autoescape in force where the piece starts
    stack: tuple[str, ...]  # the templates it sits in, to find loops
    open: frozenset[tuple[int, str, int]] = frozenset()  # blocks being written: (defs, name, level)


class _Flattener:
    def __init__(self, folder: Path, env: MailEnvironment) -> None:
        self.folder = folder.resolve()
        self.env = env
        self.files: dict[str, _File] = {}
        self.out: list[_Item] = []

    # -- reading -------------------------------------------------------------------

    def find(self, name: str) -> Path | None:
        """The file of template `name`, never outside the folder (nor by a symlink)."""
        try:
            path = self.folder.joinpath(*split_template_path(name)).resolve()
        except TemplateNotFound:
            return None
        return path if self.folder in path.parents and path.is_file() else None

    def read(self, name: str) -> str:
        path = self.find(name)
        if path is None:
            raise TemplateProblem(f"Template not found: {name}")
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateProblem(f"{name}: cannot be read ({exc})") from None

    def load(self, name: str, source: str | None = None) -> _File:
        if source is None and name in self.files:
            return self.files[name]
        text = self.read(name) if source is None else source
        try:
            tree = self.env.parse(text, name)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"{exc.name or name}, line {exc.lineno}: {exc.message}"
                                  ) from None
        escape = bool(self.env.autoescape(name) if callable(self.env.autoescape)
                      else self.env.autoescape)
        file = _File(name, _lex(self.env, text, name), tree, escape, None, -1, {}, {}, {},
                     {})
        self._index(file)
        if source is None:
            self.files[name] = file
        return file

    def _index(self, file: _File) -> None:
        """Check what can be flattened and pair the tags with their nodes."""
        blocks: list[nodes.Block] = []
        includes: list[nodes.Include] = []
        supers: list[nodes.Call] = []
        extends: list[nodes.Extends] = []
        for node, above in _walk(file.tree):
            file.above[id(node)] = above
            at = file.where(node)
            if isinstance(node, nodes.Extends):
                if len(above) != 1 or extends:
                    raise TemplateProblem(f"{at}: extends must stand once, at the top of the "
                                          "template, outside any other tag")
                if not (isinstance(node.template, nodes.Const)
                        and isinstance(node.template.value, str)):
                    raise TemplateProblem(f"{at}: extends needs a quoted file name, not a "
                                          "variable (the layout is resolved before any "
                                          "recipient)")
                extends.append(node)
            elif isinstance(node, nodes.Include):
                self._check_include(file, node)
                includes.append(node)
            elif isinstance(node, nodes.Import | nodes.FromImport):
                raise TemplateProblem(f"{at}: {{% import %}} and {{% from %}} are not "
                                      "supported in mail templates: define the macro in "
                                      "the template, or include a partial")
            elif isinstance(node, nodes.Block):
                if any(b.name == node.name for b in blocks):
                    raise TemplateProblem(f"{at}: block '{node.name}' defined twice")
                blocks.append(node)
            elif isinstance(node, nodes.Name) and node.name == "self":
                raise TemplateProblem(f"{at}: self.… (calling a block by name) cannot be "
                                      "resolved before rendering; include a partial "
                                      "instead")
            elif isinstance(node, nodes.Name) and node.name == "super":
                supers.append(self._check_super(file, node, above))
        tags = [(i, t) for i, t in enumerate(file.items) if isinstance(t, _Tag)]
        block_tags = [i for i, t in tags if t.keyword == "block"]
        names = [file.items[i].words[1:2] for i in block_tags]  # type: ignore[union-attr]
        if names != [(b.name,) for b in blocks]:
            raise TemplateProblem(f"{file.name}: the block tags and Jinja's parse do not "
                                  "agree (unsupported syntax around a block tag)")
        opened: list[int] = []
        for i, tag in tags:
            if tag.keyword == "block":
                opened.append(i)
            elif tag.keyword == "endblock":
                file.ends[opened.pop()] = i
        for i, block in zip(block_tags, blocks, strict=True):
            file.special[i] = block
            file.tag_of[id(block)] = i
        include_tags = [i for i, t in tags if t.keyword == "include"]
        super_tags = [i for i, t in tags if t.kind == "variable"
                      and t.words == ("super", "(", ")")]
        if len(super_tags) != len(supers):
            at = file.where(supers[0]) if supers else file.name
            raise TemplateProblem(f"{at}: write super() alone, as {{{{ super() }}}}")
        for i, node in [*zip(include_tags, includes, strict=True),
                        *zip(super_tags, supers, strict=True)]:
            file.special[i] = node
        if extends:
            assert extends[0].template.value is not None
            file.parent = extends[0].template.value
            file.extends_at = next(i for i, t in tags if t.keyword == "extends")
            self._check_child(file, extends[0])

    def _check_include(self, file: _File, node: nodes.Include) -> None:
        at = file.where(node)
        template = node.template
        names = template.items if isinstance(template, nodes.List | nodes.Tuple) else [
            template]
        if not all(isinstance(n, nodes.Const) and isinstance(n.value, str) for n in names):
            raise TemplateProblem(f"{at}: include needs a quoted file name, not a variable "
                                  "(partials are put in before any recipient)")
        if not node.with_context:
            raise TemplateProblem(f"{at}: include … without context is not supported: the "
                                  "partial would see only what the whole template sees")

    def _check_super(self, file: _File, node: nodes.Name,
                     above: tuple[nodes.Node, ...]) -> nodes.Call:
        at = file.where(node)
        call = above[-1]
        if not (isinstance(call, nodes.Call) and call.node is node and not call.args
                and not call.kwargs and call.dyn_args is None and call.dyn_kwargs is None
                and isinstance(above[-2], nodes.Output)):
            raise TemplateProblem(f"{at}: super() can only stand alone, as {{{{ super() }}}} "
                                  "(it is replaced by the parent's block)")
        if not any(isinstance(a, nodes.Block) for a in above):
            raise TemplateProblem(f"{at}: super() outside a block")
        return call

    def _check_child(self, file: _File, extends: nodes.Extends) -> None:
        """A template that extends another: Jinja shows only what is before the extends
        tag, and its blocks; one-line {% set %}s run before the layout."""
        body = file.tree.body
        at = next(i for i, n in enumerate(body) if n is extends)
        for node in body[:at]:
            block = node if isinstance(node, nodes.Block) else node.find(nodes.Block)
            if block is not None:
                raise TemplateProblem(f"{file.where(block)}: a block before extends")
        for node in body[at + 1:]:
            if isinstance(node, nodes.Block | nodes.Assign):
                continue
            if isinstance(node, nodes.Output) and all(
                    isinstance(n, nodes.TemplateData) and not n.data.strip()
                    for n in node.nodes):
                continue
            raise TemplateProblem(f"{file.where(node)}: outside a block, a template that "
                                  "extends a layout shows nothing: put this in a block "
                                  "(only a one-line {% set %} may stand there)")

    # -- writing -------------------------------------------------------------------

    def emit(self, item: _Item) -> None:
        self.out.append(item)
        if len(self.out) > _MAX_ITEMS:
            raise TemplateProblem("the flattened template grows without end (a partial "
                                  "included again and again?)")

    def template(self, file: _File, stack: tuple[str, ...], escape: bool,
                 hidden: frozenset[str]) -> None:
        """The whole of `file`: its layouts resolved, its blocks filled."""
        if len(stack) > _MAX_DEPTH:
            raise TemplateProblem(f"{file.name}: templates nest more than {_MAX_DEPTH} deep")
        chain = [file]
        while chain[-1].parent is not None:
            child = chain[-1]
            name = child.parent
            if name in stack or name in (f.name for f in chain):
                raise TemplateProblem(f"{child.name}: templates extend or include each "
                                      f"other in a loop ({' -> '.join((*stack, name))})")
            if len(stack) + len(chain) > _MAX_DEPTH:
                raise TemplateProblem(f"{child.name}: templates nest more than {_MAX_DEPTH} "
                                      "deep")
            chain.append(self.load(name))
        for layout in chain[1:]:
            if layout.escape != escape:
                raise TemplateProblem(
                    f"{layout.name}: {'escapes' if layout.escape else 'does not escape'} "
                    f"HTML and {file.name} {'does' if escape else 'does not'}: a template "
                    "and its layouts must be all HTML or all text")
        if hidden:
            self._may_read(file, file.tree, hidden, "the partial")
            for layout in chain[1:]:
                self._may_read(layout, layout.tree, hidden, "the partial")
        stack = (*stack, *(f.name for f in chain))
        defs: dict[str, list[tuple[_File, nodes.Block]]] = {}
        for f in chain:
            for block in f.tree.find_all(nodes.Block):
                defs.setdefault(block.name, []).append((f, block))
        for child in chain[:-1]:
            piece = _Piece(child, child.tree, defs, 0, hidden, escape, stack)
            self.range(piece, 0, child.extends_at)
            index = child.extends_at + 1
            while index < len(child.items):
                item = child.items[index]
                if isinstance(item, _Tag) and item.keyword == "block":
                    index = child.ends[index]
                elif isinstance(item, _Tag) and item.keyword == "set":
                    self.emit(item)
                index += 1
        base = chain[-1]
        self.range(_Piece(base, base.tree, defs, 0, hidden, escape, stack), 0,
                   len(base.items))

    def range(self, piece: _Piece, start: int, stop: int) -> None:
        file = piece.file
        index = start
        while index < stop:
            item = file.items[index]
            node = file.special.get(index)
            if node is None:
                self.emit(item)
            elif isinstance(node, nodes.Block):
                self.block(piece, node)
                index = file.ends[index]
            elif isinstance(node, nodes.Include):
                self.include(piece, node)
            else:
                self.super(piece, node)
            index += 1

    def _inside(self, piece: _Piece, node: nodes.Node) -> tuple[nodes.Node, ...]:
        """The ancestors of `node` within the piece (a block body counts as one)."""
        above = piece.file.above[id(node)]
        if isinstance(piece.root, nodes.Template):
            return above[1:]
        return above[next(i for i, a in enumerate(above) if a is piece.root):]

    def _locals(self, piece: _Piece, node: nodes.Node) -> set[str]:
        names: set[str] = set()
        for scope in self._inside(piece, node):
            if not isinstance(scope, _SCOPES):
                continue
            names.update(n.name for n in scope.find_all(nodes.Name)
                         if n.ctx in ("store", "param"))
            names.update(m.name for m in scope.find_all(nodes.Macro))
            if isinstance(scope, nodes.For):
                names.add("loop")
            if isinstance(scope, nodes.Macro | nodes.CallBlock):
                names.update(("caller", "varargs", "kwargs"))
        return names

    def _escape_at(self, piece: _Piece, node: nodes.Node) -> bool | None:
        """Autoescape where `node` stands, None if an {% autoescape %} decides."""
        inside = self._inside(piece, node)
        if any(isinstance(a, nodes.EvalContextModifier) for a in inside):
            return None
        return piece.escape

    def _reads(self, tree: nodes.Node) -> set[str]:
        """The names the body of `tree` takes from the context (nested blocks aside)."""
        body = copy.deepcopy(tree.body, {id(self.env): self.env})  # type: ignore[attr-defined]
        template = nodes.Template(body, lineno=1)
        template.set_environment(self.env)
        _NoBlocks().visit(template)
        names = meta.find_undeclared_variables(template)
        # find_undeclared_variables leaves out the environment's globals (range, …)
        names |= {n.name for n in template.find_all(nodes.Name)
                  if n.ctx == "load" and n.name in self.env.globals}
        return names - {"super"}

    def _may_read(self, file: _File, tree: nodes.Node, hidden: frozenset[str],
                  what: str) -> None:
        clash = sorted(self._reads(tree) & hidden)
        if clash:
            raise TemplateProblem(
                f"{file.where(tree)}: {what} uses {', '.join(clash)}, which is a local "
                "name where it is put (a loop variable or a {% set %} around it); Jinja "
                "does not pass local names into a block, so this cannot be flattened. "
                "Rename it, or mark the block `scoped`.")

    def _not_in_autoescape(self, piece: _Piece, node: nodes.Node, what: str) -> None:
        # Jinja compiles a block's escaping from its own file but changes the context's
        # at run time (what super() and filters like join see): no one flat source is
        # equal to that in every case.
        if self._escape_at(piece, node) is None:
            raise TemplateProblem(f"{piece.file.where(node)}: {what} inside "
                                  "{% autoescape %}: put the {% autoescape %} inside the "
                                  "block instead")

    def block(self, piece: _Piece, tag: nodes.Block) -> None:
        self._not_in_autoescape(piece, tag, f"block '{tag.name}'")
        hidden = piece.hidden
        if not tag.scoped:
            hidden = hidden | self._locals(piece, tag)
        self.body(piece, tag.name, 0, frozenset(hidden))

    def super(self, piece: _Piece, call: nodes.Call) -> None:
        assert isinstance(piece.root, nodes.Block)
        name = piece.root.name
        self._not_in_autoescape(piece, call, "super()")
        if piece.level + 1 >= len(piece.defs[name]):
            raise TemplateProblem(f"{piece.file.where(call)}: super() in block '{name}', "
                                  "which no layout above defines")
        hidden = frozenset(piece.hidden | self._locals(piece, call))
        self.body(piece, name, piece.level + 1, hidden)

    def body(self, piece: _Piece, name: str, level: int, hidden: frozenset[str]) -> None:
        """The body of definition `level` of block `name`, written where `piece` is."""
        file, block = piece.defs[name][level]
        key = (id(piece.defs), name, level)
        if key in piece.open:
            raise TemplateProblem(f"{file.where(block)}: block '{name}' contains itself "
                                  "(through blocks inside blocks, or super()); Jinja would "
                                  "never finish it")
        if block.required:
            raise TemplateProblem(f"{file.where(block)}: block '{name}' is required: the "
                                  "template that extends this layout must fill it")
        if hidden:
            self._may_read(file, block, hidden, f"block '{name}'")
        start = file.tag_of[id(block)]
        inner = _Piece(file, block, piece.defs, level, hidden, piece.escape, piece.stack,
                       piece.open | {key})
        with _Wrap(self, None, block.find(_BINDS) is not None):
            self.range(inner, start + 1, file.ends[start])

    def include(self, piece: _Piece, node: nodes.Include) -> None:
        template = node.template
        consts = template.items if isinstance(template, nodes.List | nodes.Tuple) else [
            template]
        for const in consts:
            name = const.value  # type: ignore[attr-defined]
            if name in piece.stack:
                raise TemplateProblem(
                    f"{piece.file.where(node)}: templates extend or include each other in "
                    f"a loop ({' -> '.join((*piece.stack, name))})")
            if self.find(name) is None:
                continue
            file = self.load(name)
            binds = any(f.tree.find(_BINDS) is not None for f in self._chain(file))
            here = self._escape_at(piece, node)
            with _Wrap(self, None if here == file.escape else file.escape, binds):
                self.template(file, piece.stack, file.escape, piece.hidden)
            return
        if not node.ignore_missing:
            raise TemplateProblem(f"{piece.file.where(node)}: template not found: "
                                  f"{', '.join(c.value for c in consts)}")  # type: ignore

    def _chain(self, file: _File) -> Iterator[_File]:
        seen = set()
        while True:
            yield file
            if file.parent is None or file.parent in seen:
                return
            seen.add(file.name)
            file = self.load(file.parent)


class _Wrap:
    """`{% autoescape x %}` where the escaping changes, `{% with %}` where names are set
    that must stay inside (a block's or a partial's own scope in Jinja)."""

    def __init__(self, flattener: _Flattener, escape: bool | None, scope: bool) -> None:
        self.flattener, self.escape, self.scope = flattener, escape, scope

    def __enter__(self) -> None:
        if self.escape is not None:
            self.flattener.emit(_synthetic(f"autoescape {str(self.escape).lower()}"))
        if self.scope:
            self.flattener.emit(_synthetic("with"))

    def __exit__(self, *_: object) -> None:
        if self.scope:
            self.flattener.emit(_synthetic("endwith"))
        if self.escape is not None:
            self.flattener.emit(_synthetic("endautoescape"))


def flatten(folder: Path, name: str, *, compiled_as: str | None = None) -> str:
    """The source of template `name` (in `folder`) with extends and includes resolved."""
    flattener = _Flattener(folder, make_environment(folder))
    return _flat(flattener, flattener.load(name), compiled_as or name)


def flatten_source(folder: Path, source: str, name: str, *,
                   compiled_as: str | None = None) -> str:
    """`source` (the text of template `name`) with extends and includes resolved from
    `folder`. `compiled_as`: the name the result is compiled under, which decides its
    escaping (default `name`)."""
    flattener = _Flattener(folder, make_environment(folder))
    return _flat(flattener, flattener.load(name, source), compiled_as or name)


def _flat(flattener: _Flattener, file: _File, compiled_as: str) -> str:
    env = flattener.env
    escape = bool(env.autoescape(compiled_as) if callable(env.autoescape)
                  else env.autoescape)
    flattener.template(file, (), escape, frozenset())
    items = _merged(flattener.out)
    source = _write(env, items)
    try:
        again = _merged(_lex(env, source, file.name))
    except TemplateSyntaxError:
        again = []
    if _canonical(again) != _canonical(items):
        raise TemplateProblem(f"{file.name}: cannot be flattened exactly: text next to a "
                              "block or include tag would read as Jinja (a '{' just before "
                              "one?)")
    return source
