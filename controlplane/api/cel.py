"""A syntax check of Common Expression Language (CEL) expressions, as istiod's webhook makes
one (``celEnv.Parse`` of cel-go) for a Telemetry's access log filter: the expression must
parse by CEL's grammar (cel-spec, doc/langdef.md); names and types are not checked (nor does
istiod check them). Envoy parses the expression again when it builds the filter, so what is
accepted here is what Envoy accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RESERVED = frozenset(
    {
        "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let",
        "loop", "package", "namespace", "return", "var", "void", "while",
    }
)  # fmt: skip
_TOKEN = re.compile(
    r"""
    (?P<space>[\t\n\f\r ]+|//[^\n]*)
  | (?P<string>[rR]?[bB]?[rR]?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"
        |'(?:\\.|[^\\'\n])*'|"(?:\\.|[^\\"\n])*"))
  | (?P<number>0[xX][0-9a-fA-F]+[uU]?
        |(?:[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)
        |[0-9]+[uU]?)
  | (?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<op>\|\||&&|<=|>=|==|!=|[-+*/%!<>?:.,()\[\]{}])
    """,
    re.VERBOSE,
)
_RELOPS = frozenset({"<", "<=", ">=", ">", "==", "!=", "in"})
_LITERAL_WORDS = frozenset({"true", "false", "null"})


class CelSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class _Token:
    kind: str  # string, number, ident, op, end
    text: str
    at: int


def _tokens(expression: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:
            raise CelSyntaxError(f"unexpected character {expression[pos]!r} at {pos}")
        kind = match.lastgroup or ""
        if kind != "space":
            out.append(_Token(kind, match.group(), pos))
        pos = match.end()
    out.append(_Token("end", "", len(expression)))
    return out


class _Parser:
    def __init__(self, expression: str) -> None:
        self.tokens = _tokens(expression)
        self.pos = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.pos]

    def take(self, text: str) -> bool:
        if self.token.kind in ("op", "ident") and self.token.text == text:
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.take(text):
            self.fail(f"expected {text!r}")

    def fail(self, reason: str) -> None:
        token = self.token
        found = "end of expression" if token.kind == "end" else repr(token.text)
        raise CelSyntaxError(f"{reason} at {token.at}, found {found}")

    def parse(self) -> None:
        self.expr()
        if self.token.kind != "end":
            self.fail("unexpected input")

    def expr(self) -> None:
        self.binary(0)
        if self.take("?"):
            self.binary(0)
            self.expect(":")
            self.expr()

    _LEVELS: tuple[frozenset[str], ...] = (
        frozenset({"||"}),
        frozenset({"&&"}),
        _RELOPS,
        frozenset({"+", "-"}),
        frozenset({"*", "/", "%"}),
    )

    def binary(self, level: int) -> None:
        if level == len(self._LEVELS):
            self.unary()
            return
        self.binary(level + 1)
        while self.token.kind in ("op", "ident") and self.token.text in self._LEVELS[level]:
            self.pos += 1
            self.binary(level + 1)

    def unary(self) -> None:
        while self.take("!") or self.take("-"):
            pass
        self.member()

    def member(self) -> None:
        self.primary()
        while True:
            if self.take("."):
                self.identifier()
                if self.take("("):
                    self.expr_list(")")
            elif self.take("["):
                self.expr()
                self.expect("]")
            else:
                return

    def identifier(self) -> str:
        token = self.token
        if token.kind != "ident" or token.text in _RESERVED or token.text in _LITERAL_WORDS:
            self.fail("expected an identifier")
        if token.text == "in":
            self.fail("expected an identifier")
        self.pos += 1
        return token.text

    def primary(self) -> None:
        token = self.token
        if token.kind in ("string", "number"):
            self.pos += 1
            return
        if token.kind == "ident" and token.text in _LITERAL_WORDS:
            self.pos += 1
            return
        if self.take("("):
            self.expr()
            self.expect(")")
            return
        if self.take("["):
            self.expr_list("]")
            return
        if self.take("{"):
            self.inits("}", keyed_by_expr=True)
            return
        self.take(".")
        self.identifier()
        if self.take("("):
            self.expr_list(")")
            return
        # A qualified name followed by "{": a message construction.
        end = self.pos
        while self.tokens[end].text == "." and self.tokens[end + 1].kind == "ident":
            end += 2
        if self.tokens[end].kind == "op" and self.tokens[end].text == "{":
            while self.pos < end:
                self.expect(".")
                self.identifier()
            self.expect("{")
            self.inits("}", keyed_by_expr=False)

    def expr_list(self, close: str) -> None:
        if self.take(close):
            return
        self.expr()
        while self.take(","):
            if self.take(close):
                return
            self.expr()
        self.expect(close)

    def inits(self, close: str, keyed_by_expr: bool) -> None:
        if self.take(close):
            return
        while True:
            if keyed_by_expr:
                self.expr()
            else:
                self.identifier()
            self.expect(":")
            self.expr()
            if not self.take(","):
                break
            if self.take(close):
                return
        self.expect(close)


def cel_syntax_problem(expression: str) -> str | None:
    """Why ``expression`` does not parse as CEL, or None."""
    if not expression.strip():
        return "the expression is empty"
    try:
        _Parser(expression).parse()
    except CelSyntaxError as exc:
        return str(exc)
    except RecursionError:
        return "the expression is nested too deeply"
    return None
