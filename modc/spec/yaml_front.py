"""The YAML front end: a spec file in YAML to the spec AST, with line and column kept.

The text is read with yaml.compose (safe loader, no Python objects), and the node tree
is walked here so that every AST node gets the Span of the YAML text it came from.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from modc.errors import ModcError, did_you_mean
from modc.source import Source, Span
from modc.spec import ast
from modc.spec.dsl_terms import RESERVED
from modc.spec.settings import setting_number
from modc.spec.yaml_terms import (
    _FLOAT_TEXT,
    _TAG,
    TermWalker,
    _Entry,
    _is_null,
    _kind,
)

TOP_KEYS = (
    "name",
    "include",
    "params",
    "input",
    "output",
    "network",
    "defs",
    "train",
    "optimizer",
)


_PLAIN_TAGS = ("str", "int", "float", "bool", "null")
#: YAML 1.1 breaks lines at U+0085, U+2028 and U+2029, which editors (and YAML 1.2) do
#: not: the parser sees private-use stand-ins, and scalars get the characters back.
_BREAKS = {"\x85": "\uf8f0", "\u2028": "\uf8f1", "\u2029": "\uf8f2"}


def load_yaml(source: Source, library: bool = False) -> ast.Spec:
    """Parse a YAML spec into the spec AST. A `library` file needs no input or network."""
    text = source.text
    hidden = any(c in text for c in _BREAKS) and not any(c in text for c in _BREAKS.values())
    try:
        root = yaml.compose(
            text.translate(str.maketrans(_BREAKS)) if hidden else text, Loader=yaml.SafeLoader
        )
        back = str.maketrans({v: k for k, v in _BREAKS.items()} if hidden else {})
        _scalars(root, back, source, set())
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(source, err) from None
    except yaml.reader.ReaderError as err:
        raise ModcError(f"invalid YAML: {err.reason}", source.span_at(err.position)) from None
    except RecursionError:
        raise ModcError("spec nested too deeply", Span(source, 1, 1)) from None
    try:
        return _Walker(source).spec(root, library)
    except RecursionError:
        raise ModcError("spec nested too deeply", Span(source, 1, 1)) from None


def _scalars(node: Node | None, back: dict, source: Source, seen: set[int]) -> None:
    """Check every scalar under `node`: put back what _BREAKS hid (`back`), and refuse a
    lone surrogate (from a YAML escape such as \\udcff), which no file or generated code
    can hold."""
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, ScalarNode):
        node.value = node.value.translate(back)
        bad = next((c for c in node.value if "\ud800" <= c <= "\udfff"), None)
        if bad is not None:
            raise ModcError(
                f"a lone surrogate (U+{ord(bad):04X}) is not a character",
                source.span_at(node.start_mark.index),
                "write the character itself, or its code point as \\U followed by 8 hex digits",
            )
    elif isinstance(node, SequenceNode):
        for child in node.value:
            _scalars(child, back, source, seen)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            _scalars(key, back, source, seen)
            _scalars(value, back, source, seen)


def _yaml_error(source: Source, err: yaml.MarkedYAMLError) -> ModcError:
    """A ModcError at the problem mark of a PyYAML error."""
    mark = err.problem_mark or err.context_mark
    span = source.span_at(mark.index) if mark else Span(source, 1, 1)
    problem, hint = err.problem or err.context or "syntax error", None
    if err.context and err.problem and problem.startswith("but "):
        problem = f"{err.context}, {problem}"  # "expected a single document ..., but found ..."
    elif err.context and err.context_mark and err.context_mark is not mark:
        ctx = source.span_at(err.context_mark.index)
        hint = f"{err.context} at line {ctx.line}, column {ctx.col}"
    return ModcError(f"invalid YAML: {problem}", span, hint)


class _Walker(TermWalker):
    """Walks a composed YAML node tree and builds the spec AST."""

    def spec(self, root: Node | None, library: bool = False) -> ast.Spec:
        if root is None and library:
            return ast.Spec(Path(self.source.name).stem, (), (), None, span=Span(self.source, 1, 1))
        if root is None:
            raise ModcError("empty spec; expected 'input' and 'network'", Span(self.source, 1, 1))
        start = self.span(root)
        if not isinstance(root, MappingNode):
            raise ModcError(
                f"a spec must be a mapping with 'input' and 'network', got {_kind(root)}",
                start,
            )
        found: dict[str, _Entry] = {}
        for entry in self.entries(root, "a spec"):
            if entry.key not in TOP_KEYS:
                raise ModcError(
                    f"unknown key '{entry.key}'",
                    entry.span,
                    did_you_mean(entry.key, TOP_KEYS) or "the keys are " + ", ".join(TOP_KEYS),
                )
            found[entry.key] = entry
        for needed in () if library else ("input", "network"):
            if needed not in found:
                article = "an" if needed == "input" else "a"
                raise ModcError(f"the spec needs {article} '{needed}'", start)
        name = Path(self.source.name).stem
        if "name" in found:
            name = self.string(found["name"].value, "the spec's 'name'")
        get = found.get
        return ast.Spec(
            name=name,
            params=self.params(get("params")),
            input=self.sizes(found["input"].value) if "input" in found else (),
            network=self.term(found["network"].value) if "network" in found else None,
            defs=self.defs(get("defs")),
            output=self.sizes(found["output"].value) if "output" in found else None,
            train=self.settings(get("train")),
            optimizer=self.settings(get("optimizer")),
            span=start,
            includes=self.includes(get("include")),
        )

    def includes(self, entry: _Entry | None) -> tuple[ast.Include, ...]:
        """`include: path` or a list of paths."""
        if entry is None or _is_null(entry.value):
            return ()
        node = entry.value
        nodes = node.value if isinstance(node, SequenceNode) else [node]
        return tuple(ast.Include(self.string(n, "an included path"), self.span(n)) for n in nodes)

    def string(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag != _TAG + "str" or not node.value:
            got = node.value if isinstance(node, ScalarNode) else _kind(node)
            raise ModcError(f"{what} must be a string, got {got or 'nothing'}", self.span(node))
        return node.value

    def params(self, entry: _Entry | None) -> tuple[ast.Param, ...]:
        if entry is None or _is_null(entry.value):
            return ()
        return tuple(
            ast.Param(
                self.check_ident(e.key, e.span, "a parameter name"),
                self.expr(e.value),
                e.span,
            )
            for e in self.entries(entry.value, "'params'")
        )

    def sizes(self, node: Node) -> tuple[ast.Expr, ...]:
        """A size or a list of sizes (`input`, `output`)."""
        if isinstance(node, SequenceNode):
            if not node.value:
                raise ModcError("expected at least one size", self.span(node))
            return tuple(self.expr(n) for n in node.value)
        return (self.expr(node),)

    def defs(self, entry: _Entry | None) -> tuple[ast.Def, ...]:
        if entry is None or _is_null(entry.value):
            return ()
        out = []
        for e in self.entries(entry.value, "'defs'"):
            self.check_ident(e.key, e.span, "a definition name")
            if e.key in RESERVED:
                raise ModcError(
                    f"'{e.key}' is a keyword or built-in function; pick another name", e.span
                )
            parts = {p.key: p for p in self.entries(e.value, f"definition '{e.key}'")}
            for p in parts.values():
                if p.key not in ("params", "body"):
                    hint = (
                        did_you_mean(p.key, ("params", "body"))
                        or "a definition has 'params' and 'body'"
                    )
                    raise ModcError(f"unknown key '{p.key}' in definition '{e.key}'", p.span, hint)
            if "body" not in parts:
                raise ModcError(f"definition '{e.key}' needs a 'body'", e.span)
            out.append(
                ast.Def(
                    e.key,
                    self.def_params(parts.get("params")),
                    self.term(parts["body"].value),
                    e.span,
                )
            )
        return tuple(out)

    def def_params(self, entry: _Entry | None) -> tuple[str, ...]:
        if entry is None or _is_null(entry.value):
            return ()
        nodes = entry.value.value if isinstance(entry.value, SequenceNode) else [entry.value]
        names: list[str] = []
        for n in nodes:
            name = self.ident(n, "a definition parameter")
            if name in names:
                raise ModcError(f"duplicate parameter '{name}'", self.span(n))
            names.append(name)
        return tuple(names)

    def settings(self, entry: _Entry | None) -> tuple[ast.Setting, ...]:
        if entry is None or _is_null(entry.value):
            return ()
        return tuple(
            ast.Setting(
                self.check_ident(e.key, e.span, "a setting name"),
                self.setting(e.value),
                e.span,
            )
            for e in self.entries(entry.value, f"'{entry.key}'")
        )

    def setting(self, node: Node, in_list: bool = False) -> object:
        """A plain value: a number, string, boolean or null, or a list of those (a tuple)."""
        self.visit(node)
        if isinstance(node, SequenceNode) and not in_list:
            return tuple(self.setting(n, in_list=True) for n in node.value)
        if not isinstance(node, ScalarNode) or node.tag not in [_TAG + t for t in _PLAIN_TAGS]:
            got = node.value if isinstance(node, ScalarNode) else _kind(node)
            what = "a number, a string or true/false" + ("" if in_list else ", or a list of those")
            raise ModcError(f"expected {what}, got {got}", self.span(node))
        try:
            value = self.constructor.construct_object(node)
        except ValueError:  # an integer of over 4,300 digits
            value = math.inf
        if node.tag == _TAG + "str" and node.style is None and _FLOAT_TEXT.match(value):
            value = float(value)  # YAML 1.1 reads 1e-3 as a string
        return setting_number(value, node.value, self.span(node))

    # ------------------------------------------------------------ network terms
