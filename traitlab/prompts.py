"""Versioned prompt templates and the fence that keeps dialogue text from acting as instructions.

A template is a file ``<name>.v<version>.md`` in a stage's ``prompts/`` folder, with two sections::

    ### system
    You rate ...
    ### user
    Rate the speaker in $dialogue ...

Placeholders use ``$name`` (``string.Template``) so JSON examples with braces need no escaping. Every
rendered request records ``template.id`` (``name@vN``) and ``template.sha`` so a rating can be traced to
the exact words that produced it.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from pathlib import Path
from string import Template

from pydantic import BaseModel

FENCE_OPEN = "<<<UNTRUSTED-{kind}-{tag}>>>"
FENCE_CLOSE = "<<<END-UNTRUSTED-{kind}-{tag}>>>"


# Characters that read as < or > (NFKC-equal ones are found by unicodedata below).
_ANGLES_LEFT = "<‹«〈《⟨❮❬⧼ᐸ˂⟪⦑⧀"
_ANGLES_RIGHT = ">›»〉》⟩❯❭⧽ᐳ˃⟫⦒⧁"
# Invisible characters that can hide inside a marker: zero-width, word joiners, BOM, soft hyphen, bidi controls.
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069"
                        "\ufeff]")
_JOINER_NEAR_ASCII = re.compile("(?<=[\x00-\x7f])[\u200c\u200d]+|[\u200c\u200d]+(?=[\x00-\x7f])")
# Look-alikes NFKC leaves alone (Cyrillic, Greek) for the letters of the marker word.
_HOMOGLYPHS = {"u": "υ", "n": "ηΝν", "t": "ТтΤτ", "r": "ГгΡ", "s": "ЅѕꜱƽᏚ", "e": "ЕеΕε", "d": "ԁᎠ"}
_MARKER_WORD = "untrusted"


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """Runs of left/right angle look-alikes and the marker word in any NFKC/homoglyph spelling (built once)."""
    plain = {c: unicodedata.normalize("NFKC", c) for c in map(chr, (*range(0x20, 0x3000), *range(0xFE00, 0x10000),
                                                                   *range(0x1D400, 0x1D800)))}
    left = _ANGLES_LEFT + "".join(c for c, p in plain.items() if p == "<")
    right = _ANGLES_RIGHT + "".join(c for c, p in plain.items() if p == ">")
    letters = {ch: set(_HOMOGLYPHS.get(ch, "")) for ch in _MARKER_WORD}
    for c, p in plain.items():
        if p.casefold() in letters:
            letters[p.casefold()].add(c)
    word = "[\u200c\u200d]*".join("[" + re.escape("".join(sorted(letters[ch]))) + "]" for ch in _MARKER_WORD)
    return (re.compile(f"[{re.escape(left)}]{{2,}}"), re.compile(f"[{re.escape(right)}]{{2,}}"),
            re.compile(word, re.IGNORECASE))


def neutralise(text: str) -> str:
    """Untrusted text with nothing in it that reads as a fence marker.

    Invisible characters (zero-width, bidi controls) are dropped (joiners only next to ASCII, so emoji
    sequences survive); runs of two or more ``<``/``>`` look-alikes (``‹‹‹``, fullwidth ``＜＜＜``...) become
    ``(((``/``)))``; the marker word in any look-alike spelling becomes plain lowercase ``untrusted``.
    """
    left, right, word = _patterns()
    text = _JOINER_NEAR_ASCII.sub("", _INVISIBLE.sub("", text))
    text = left.sub(lambda m: "(" * len(m.group()), text)
    text = right.sub(lambda m: ")" * len(m.group()), text)
    return word.sub(_MARKER_WORD, text)


def fence(text: str, kind: str = "DIALOGUE") -> str:
    """Wrap untrusted text between markers the text itself cannot forge.

    The markers carry a tag derived from the text's own hash, so a dialogue would need to contain its own
    hash to close the fence; anything inside that reads as a marker (look-alike brackets, fullwidth or
    zero-width-split forms) is neutralised as well (:func:`neutralise`). The result is deterministic, so
    identical requests stay cache hits.
    """
    safe = neutralise(text)
    tag = hashlib.sha256(safe.encode()).hexdigest()[:12]
    return f"{FENCE_OPEN.format(kind=kind, tag=tag)}\n{safe}\n{FENCE_CLOSE.format(kind=kind, tag=tag)}"


def fenced_spans(prompt: str) -> list[tuple[int, int]]:
    """Character spans of the fenced regions in a rendered prompt (used to audit where text landed)."""
    spans = []
    for m in re.finditer(r"<<<UNTRUSTED-(\w+)-([0-9a-f]{12})>>>\n", prompt):
        close = FENCE_CLOSE.format(kind=m.group(1), tag=m.group(2))
        end = prompt.find(close, m.end())
        if end >= 0:
            spans.append((m.end(), end))
    return spans


class PromptTemplate(BaseModel):
    """A system + user prompt pair with a name and version."""

    name: str
    version: int
    system: str
    user: str

    @property
    def id(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def sha(self) -> str:
        return hashlib.sha256(f"{self.system}\0{self.user}".encode()).hexdigest()[:12]

    def render(self, **values: str) -> list[dict[str, str]]:
        """Chat messages with every ``$placeholder`` filled; a missing value is an error."""
        return [{"role": "system", "content": Template(self.system).substitute(values)},
                {"role": "user", "content": Template(self.user).substitute(values)}]


def load_template(folder: str | Path, name: str, version: int | None = None) -> PromptTemplate:
    """Load ``name.vN.md`` from ``folder``; without ``version``, the highest one present."""
    folder = Path(folder)
    found = {int(m.group(1)): p for p in folder.glob(f"{name}.v*.md")
             if (m := re.fullmatch(rf"{re.escape(name)}\.v(\d+)\.md", p.name))}
    if not found:
        raise FileNotFoundError(f"no prompt template {name!r} in {folder}")
    if version is None:
        version = max(found)
    if version not in found:
        raise FileNotFoundError(f"prompt {name!r} has versions {sorted(found)}, not {version}")
    text = found[version].read_text(encoding="utf-8")
    parts = re.split(r"^### (system|user)\s*$", text, flags=re.MULTILINE)
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    if set(sections) != {"system", "user"}:
        raise ValueError(f"{found[version]}: needs exactly a '### system' and a '### user' section")
    return PromptTemplate(name=name, version=version, system=sections["system"], user=sections["user"])
