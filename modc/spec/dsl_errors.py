"""Lark syntax errors of the DSL, told in plain words at the offending token."""

from __future__ import annotations

from lark import Token, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from modc.errors import ModcError, did_you_mean
from modc.source import Source, Span

#: Statement keywords, in the order the docs list them.
STATEMENTS = ("name", "include", "param", "input", "output", "def", "network", "train", "optimizer")

_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string in double quotes",
    "THEN": "'>'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "DSTAR": "'**'",
    "SLASH": "'/'",
    "DSLASH": "'//'",
    "PERCENT": "'%'",
    "CARET": "'^'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "EQ": "'='",
}
_KEYWORDS = {
    "INCLUDE",
    "KW_NAME",
    "PARAM",
    "INPUT",
    "OUTPUT",
    "DEF",
    "NETWORK",
    "SECTION",
}
_OPERATORS = {"THEN", "PLUS", "MINUS", "STAR", "DSTAR", "SLASH", "DSLASH", "PERCENT", "CARET"}
_OPENERS = {"NAME", "NUMBER", "LPAR", "MINUS"}
_CLOSERS = {"RPAR": "'('", "RSQB": "'['", "RBRACE": "'{'"}


def syntax_error(err: UnexpectedInput, source: Source) -> ModcError:
    """A ModcError for a lark parse error: what was found, and what could come there."""
    if isinstance(err, UnexpectedCharacters):
        char = source.text[err.pos_in_stream] if err.pos_in_stream < len(source.text) else "?"
        hint = "strings are written in double quotes" if char == "'" else None
        return ModcError(f"unexpected character {char!r}", Span(source, err.line, err.column), hint)
    if isinstance(err, UnexpectedEOF) or (
        isinstance(err, UnexpectedToken) and err.token.type == "$END"
    ):
        expected = set(getattr(err, "expected", ()) or ())
        if isinstance(err, UnexpectedToken):
            expected = set(err.accepts or err.expected)
        return ModcError(f"unexpected end of file; expected {_expected(expected)}", _end(source))
    assert isinstance(err, UnexpectedToken)
    tok, accepts = err.token, set(err.accepts or err.expected)
    span = _token_span(tok, source)
    found = describe(tok)
    hint = None
    if tok.type == "NAME" and accepts & _KEYWORDS:
        hint = did_you_mean(str(tok), STATEMENTS)
    if hint:
        pass
    elif tok.type in _CLOSERS and tok.type not in accepts:
        return ModcError(f"unexpected {found} without a matching {_CLOSERS[tok.type]}", span)
    elif tok.type in ("NAME", "NUMBER", "LPAR") and accepts & _OPERATORS:
        hint = "use '*' to multiply and '>' to compose"
    elif tok.type == "EQ" and "EQ" not in accepts:
        hint = "'=' gives a parameter, definition or setting its value"
    return ModcError(f"unexpected {found}; expected {_expected(accepts)}", span, hint)


def describe(tok: Token) -> str:
    """A token in words: "name 'x'", "number '3'", "'+'", "keyword 'param'"."""
    if tok.type == "NAME":
        return f"name '{tok}'"
    if tok.type == "NUMBER":
        return f"number '{tok}'"
    if tok.type == "STRING":
        return f"string {tok}"
    if tok.type in _KEYWORDS:
        return f"keyword '{tok}'"
    return f"'{tok}'"


def _expected(accepts: set[str]) -> str:
    """What the parser could accept, in words, shortest first."""
    if accepts & _KEYWORDS and not accepts & _OPENERS:
        words = "a statement (" + ", ".join(STATEMENTS) + ")"
        return words + (" or the end of the file" if "$END" in accepts else "")
    wanted: list[str] = []
    if accepts >= _OPENERS:
        wanted.append("a network or a number")
    elif "NUMBER" in accepts and "STRING" in accepts:
        wanted.append("a value (a number, a string, true/false, or a [list])")
    if accepts & _OPERATORS and len(accepts & _OPERATORS) > 2:
        wanted.append("an operator")
    covered = _OPENERS if wanted and wanted[0].startswith("a network") else set()
    if wanted and wanted[0].startswith("a value"):
        covered = {"NUMBER", "STRING", "NAME", "MINUS", "LSQB"}
    if "an operator" in wanted:
        covered = covered | _OPERATORS
    rest = accepts - covered - _KEYWORDS
    if wanted or len(rest) > 1:
        rest.discard("LBRACE")  # only constructs take a { body }; rarely what was meant
    wanted += [word for t, word in _WORDS.items() if t in rest]
    if accepts & _KEYWORDS:
        wanted.append("the next statement")
    if not wanted:
        return "something else"
    return wanted[0] if len(wanted) == 1 else ", ".join(wanted[:-1]) + " or " + wanted[-1]


def _token_span(tok: Token, source: Source) -> Span:
    width = tok.end_column - tok.column if tok.end_line == tok.line else 1
    return Span(source, tok.line, tok.column, max(width, 1))


def _end(source: Source) -> Span:
    """The position just after the last non-blank character of the file."""
    body = source.text.rstrip()
    line = body.count("\n") + 1
    col = len(body) - (body.rfind("\n") + 1) + 1
    return Span(source, line, col)
