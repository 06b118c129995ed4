"""IAM's wildcards, matched in time linear in the value (never a backtracking regex).

`*` matches any run of characters (none too, newlines too), `?` exactly one character,
everything else itself. Used for Action, NotAction, Resource, NotResource and the
StringLike/ArnLike family of conditions:
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html

How: the pattern is cut at each `*` into segments of fixed length. The first segment
must start the value, the last must end it, and the ones between must occur in order
in what is left; taking each one's leftmost occurrence is always right (a later one
leaves less room for the rest). A segment without `?` is found by `str.find`; one with
`?` by Shift-And, one pass over the value with the segment's positions as bits. Each
segment's search starts where the previous one ended, so the value is read about once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

# A literal * or ? in a pattern: what the policy variables ${*} and ${?} become.
LITERAL_STAR, LITERAL_QUESTION = "\ue000", "\ue001"
_LITERAL_TABLE = str.maketrans({LITERAL_STAR: "*", LITERAL_QUESTION: "?"})
# Compiled patterns are cached only up to this length, and only so many: patterns can come
# from policy variables holding request values, and Shift-And masks grow with the square
# (at most about 20 KB a pattern here, 40 MB in all).
_CACHED_CHARS = 256


def fold(text: str) -> str:
    """Lower case, one character for one (so `?` still counts the same characters)."""
    if text.isascii():
        return text.lower()
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


@dataclass(frozen=True, eq=False)
class _Segment:
    """The pattern between two `*`: literal runs at their offsets, `?` in the gaps."""

    length: int
    runs: tuple[tuple[int, str], ...]
    text: str  # the whole segment when it has no `?`
    holes: bool  # it has a `?`: found by Shift-And (see _shift_and)

    @classmethod
    def parse(cls, part: str) -> _Segment:
        runs: list[tuple[int, str]] = []
        offset = 0
        for piece in part.split("?"):  # str methods throughout: no loop per character
            if piece:
                runs.append((offset, piece.translate(_LITERAL_TABLE)))
            offset += len(piece) + 1
        holes = "?" in part
        text = "" if holes else "".join(run for _, run in runs)
        return cls(len(part), tuple(runs), text, holes)

    @cached_property
    def _shift_and(self) -> tuple[dict[str, int], int]:
        """Character -> bit j set where it may stand at offset j; and the `?` offsets.
        Built when first searched for: first and last segments never are."""
        masks: dict[str, int] = {}
        literal = 0
        for offset, run in self.runs:
            literal |= ((1 << len(run)) - 1) << offset
            for j, char in enumerate(run, offset):
                masks[char] = masks.get(char, 0) | 1 << j
        return masks, ((1 << self.length) - 1) & ~literal

    def at(self, value: str, start: int) -> bool:
        """Does the segment match value[start:start + length]? (The caller checks it fits.)"""
        return all(value.startswith(run, start + offset) for offset, run in self.runs)

    def find(self, value: str, start: int, end: int) -> int:
        """The leftmost offset >= start where the segment matches inside value[:end], or -1."""
        if not self.holes:
            return value.find(self.text, start, end)
        (masks, any_bits), top = self._shift_and, 1 << (self.length - 1)
        state = 0  # bit j: value[index - j:index + 1] matches the segment's first j + 1
        for index in range(start, end):
            state = ((state << 1) | 1) & (masks.get(value[index], 0) | any_bits)
            if state & top:
                return index - self.length + 1
        return -1


@dataclass(frozen=True)
class Glob:
    segments: tuple[_Segment, ...]  # one more than the pattern has `*`

    def matches(self, value: str) -> bool:
        segments = self.segments
        first = segments[0]
        if len(segments) == 1:
            return len(value) == first.length and first.at(value, 0)
        last = segments[-1]
        end = len(value) - last.length
        if end < first.length or not first.at(value, 0) or not last.at(value, end):
            return False
        position = first.length
        for segment in segments[1:-1]:
            found = segment.find(value, position, end)
            if found < 0:
                return False
            position = found + segment.length
        return True


def _compile(pattern: str) -> Glob:
    return Glob(tuple(_Segment.parse(part) for part in pattern.split("*")))


_compile_cached = lru_cache(maxsize=2048)(_compile)


def compile_glob(pattern: str, *, case_sensitive: bool = True) -> Glob:
    pattern = pattern if case_sensitive else fold(pattern)
    return _compile_cached(pattern) if len(pattern) <= _CACHED_CHARS else _compile(pattern)


def like(value: str, pattern: str, *, case_sensitive: bool = True) -> bool:
    """Does `value` match the IAM wildcard `pattern`?"""
    glob = compile_glob(pattern, case_sensitive=case_sensitive)
    return glob.matches(value if case_sensitive else fold(value))


__all__ = ["LITERAL_QUESTION", "LITERAL_STAR", "Glob", "compile_glob", "fold", "like"]
