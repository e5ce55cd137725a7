#!/usr/bin/env python3
"""tools/sql-replay.py FILE... — the part of isa's SQL that every upgrade
script runs again (docs/architecture.md, "Versions and upgrades").

Prints, in order, the statements of FILEs that can be run on a database that
already has them and leave it as a fresh install would: every CREATE FUNCTION
or PROCEDURE (as CREATE OR REPLACE), every COMMENT ON, GRANT and REVOKE, and
the catalogue's registering calls, which are upserts (isa.register_event_type,
isa.subscribe_to_events, isa.http_route).  Tables, types, triggers, views,
indexes, other rows, data and removals are left to the hand-written upgrade
fragments, which run before this part.

The splitter knows what psql knows about where a statement ends: quoted
strings and identifiers, dollar quotes, comments, and the BEGIN ATOMIC … END
bodies of SQL-standard functions, whose semicolons do not end the statement.
"""
import re
import sys

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
ROUTINE = re.compile(r"CREATE\s+(FUNCTION|PROCEDURE)\b", re.I)
REPLAYED = re.compile(r"^(CREATE\s+(FUNCTION|PROCEDURE)|COMMENT\s+ON|GRANT|REVOKE)\b"
                      r"|^SELECT\s+isa\.(register_event_type|subscribe_to_events|http_route)\(", re.I)


def statements(text):
    """Yields each statement of text, without its comments' lines around it."""
    i, n, start = 0, len(text), 0
    depth = 0            # BEGIN/CASE … END nesting inside a CREATE FUNCTION
    routine = None       # whether the statement is a CREATE FUNCTION/PROCEDURE
    while i < n:
        c = text[i]
        if text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                sys.exit("sql-replay: unterminated /* comment")
            i = j + 2
        elif c == "'" or c == '"':
            escapes = c == "'" and i > 0 and text[i - 1] in "eE" and not text[i - 2:i - 1].isalnum()
            j = i + 1
            while True:
                if j >= n:
                    sys.exit("sql-replay: unterminated quote")
                if escapes and text[j] == "\\":
                    j += 2
                    continue
                if text[j] == c:
                    if text.startswith(c * 2, j):
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
        elif c == "$" and DOLLAR.match(text, i) and not (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")):
            tag = DOLLAR.match(text, i).group(0)
            j = text.find(tag, i + len(tag))
            if j < 0:
                sys.exit(f"sql-replay: unterminated {tag} quote")
            i = j + len(tag)
        elif c.isalpha() or c == "_":
            m = WORD.match(text, i)
            w = m.group(0).upper()
            if routine is None:
                routine = bool(ROUTINE.match(text, i))
            if routine:
                if w in ("BEGIN", "CASE"):
                    depth += 1
                elif w == "END":
                    depth -= 1
            i = m.end()
        elif c == ";" and depth == 0:
            yield text[start:i + 1]
            i += 1
            start, routine = i, None
        else:
            i += 1
    if text[start:].strip():
        rest = re.sub(r"--[^\n]*", "", text[start:]).strip()
        if rest:
            sys.exit(f"sql-replay: text after the last statement: {rest[:60]!r}")


def code(stmt):
    """The statement without the comment lines before it."""
    lines = stmt.split("\n")
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "\n".join(lines)


def main(files):
    for path in files:
        text = open(path, encoding="utf-8").read()
        out = [code(s) for s in statements(text)]
        out = [s for s in out if REPLAYED.match(s)]
        if not out:
            continue
        print(f"\n-- ==== replayed from {path}")
        for s in out:
            print(ROUTINE.sub(lambda m: "CREATE OR REPLACE " + m.group(1), s, count=1))


if __name__ == "__main__":
    main(sys.argv[1:])
