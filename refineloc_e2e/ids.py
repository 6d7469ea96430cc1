"""THE video id: a video file's own name, in any script, made safe as a file name everywhere.

Every source of ids goes through :func:`video_id` (``extract``, ``detect``, ``import-features``,
``export-features``, the Ray workers, plot and score file names, and the annotation keys ``train`` and
``evaluate`` match them to):

- the file stem (``跳高.mp4`` -> ``跳高``, ``my clip (1).mp4`` -> ``my clip (1)``), Unicode kept and
  NFC-normalised (macOS hands out decomposed names: ``e`` + U+0301 becomes ``é``);
- only what cannot be in a file name on Linux, macOS or Windows is changed: each of ``/ \\ : * ? " < > |``,
  control characters and unpaired surrogates (undecodable bytes in a Linux name) becomes ``_``; trailing dots
  and spaces are dropped; a Windows reserved device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9, also with
  superscript digits, any case) as the part before the first dot gets a ``_`` (``CON`` -> ``CON_``,
  ``nul.tar`` -> ``nul_.tar``: Windows reserves ``NUL.anything`` too); an empty result is ``video``;
- an id longer than :data:`MAX_ID_BYTES` UTF-8 bytes is cut on a character boundary and ends in ``-`` plus
  8 hex digits of the full id's sha1, so that the writers' temp names (``.<id>.json.<pid>-<random>.tmp``)
  stay under the usual 255-byte name limit; an id with a collision suffix keeps to the same budget
  (:func:`suffixed_id`).

One property holds for every id the package hands out, the suffixed and cut ones included: ``video_id(i) == i``
(tests/core/test_video_ids.py checks it on generated names). So an id typed by a user, read from an annotation file or
from a file name is matched after the same normalisation, and an entry is always found under the id it was
written with. Ids that end up equal for different files, including ones that differ only in case (one file on
macOS and Windows), get a collision suffix (``features.cache.assign_video_ids``) through :func:`suffixed_id`,
which keeps the result within :data:`MAX_ID_BYTES` too.

A collision is never silent. Where several names (videos, cache entries, annotation keys, prediction keys) give
one id, :func:`index_by_id` finds them and :func:`collision_text` names them together in one line; each caller
then either refuses (training, evaluation: a result would be wrong) or warns and takes one by
:data:`TAKEN_RULE` (:func:`one_per_id`). docs/conventions.md, "Video ids", lists each case.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Callable, Iterable

MAX_ID_BYTES = 200
_FORBIDDEN = set('/\\:*?"<>|')
_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[1-9\u00b9\u00b2\u00b3]|LPT[1-9\u00b9\u00b2\u00b3])", re.IGNORECASE)
_HASH_CHARS = 8
_CUT_BYTES = MAX_ID_BYTES - 1 - _HASH_CHARS  # what is left of a cut id before its "-<hash>"
_HASH_TAIL = re.compile(r"-[0-9a-f]{%d}$" % _HASH_CHARS)
TAKEN_RULE = "the name that is the id itself, else the first in code-point order"


def _safe_char(c: str) -> str:
    return "_" if c in _FORBIDDEN or unicodedata.category(c) in ("Cc", "Cs") else c


def video_id(name: str) -> str:
    """The video id of a file stem or a given id (see the module docstring)."""
    vid = "".join(_safe_char(c) for c in unicodedata.normalize("NFC", name)).rstrip(". ")
    if not vid:
        return "video"
    base, dot, rest = vid.partition(".")
    if _RESERVED.fullmatch(base.rstrip(" ")):
        vid = f"{base.rstrip(' ')}_{base[len(base.rstrip(' ')):]}{dot}{rest}"
    if len(vid.encode("utf-8")) > MAX_ID_BYTES:
        vid = _cut(vid, hashed=vid)
    return vid


def _cut(visible: str, *, hashed: str) -> str:
    """``visible`` cut to :data:`_CUT_BYTES` on a character boundary, then ``-`` and 8 hex digits of the sha1 of
    ``hashed`` (a prefix of an NFC string is NFC, and it ends in hex digits: the result is its own id)."""
    digest = hashlib.sha1(hashed.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    cut = visible.encode("utf-8")[:_CUT_BYTES].decode("utf-8", errors="ignore")  # drops a split last character
    return f"{cut}-{digest}"


def suffixed_id(vid: str, suffix: str) -> str:
    """``<vid>-<suffix>`` (a collision suffix, e.g. a hash of the video's folder) as an id, within
    :data:`MAX_ID_BYTES`: where it would be longer, ``vid``'s own characters (less the hash an earlier cut gave
    it) are cut to fit and the hash covers the whole ``<vid>-<suffix>``, so distinct pairs stay apart.
    ``video_id(suffixed_id(v, s)) == suffixed_id(v, s)`` for any name ``v`` and hex ``s``."""
    vid = video_id(vid)
    full = f"{vid}-{suffix}"
    if len(full.encode("utf-8")) <= MAX_ID_BYTES:
        return full
    visible = _HASH_TAIL.sub("", vid) if len(vid.encode("utf-8")) > _CUT_BYTES else vid
    return _cut(visible, hashed=full)


def video_id_of(path: str | Path) -> str:
    """The video id of a video file: :func:`video_id` of its stem."""
    return video_id(Path(path).stem)


def collision_key(vid: str) -> str:
    """Ids with equal keys name one file on a case-insensitive file system (macOS, Windows)."""
    return vid.casefold()


def index_by_id(names: Iterable[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``({id: the name taken for it}, {id: every name that gives it, where several do})`` for ``names`` read as
    ids (:func:`video_id`), in the order given. Of several names that give one id, the one taken follows
    :data:`TAKEN_RULE`."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(video_id(name), []).append(name)
    taken = {vid: vid if vid in group else min(group) for vid, group in groups.items()}
    shared = {vid: group for vid, group in groups.items() if len(group) > 1}
    return taken, shared


def one_per_id(names: Iterable[str], what: str, log: Callable[[str], None], *, where: str = "") -> dict[str, str]:
    """{video id: the name taken for it} of ``names`` (:func:`index_by_id`), with one warning line per id that
    several names give, naming them all and the one taken; ``where`` (a file or folder) opens the line."""
    taken, shared = index_by_id(names)
    for vid, group in shared.items():
        log(f"warning: {where + ': ' if where else ''}{collision_text(vid, group, what)}; using '{taken[vid]}' "
            f"({TAKEN_RULE})")
    return taken


def collision_text(vid: str, names: Iterable[str], what: str) -> str:
    """One line naming every one of ``names`` (``what``: "annotation keys", "cache entries", ...) that give the
    id ``vid``; names that look alike (equal but for their Unicode normal form) are shown with their code points."""
    names = list(names)
    look_alike = len({unicodedata.normalize("NFC", n) for n in names}) < len(names)
    shown = [f"'{n}' ({ascii(n)[1:-1]})" if look_alike else f"'{n}'" for n in names]
    listed = " and ".join(shown) if len(shown) == 2 else ", ".join(shown[:-1]) + " and " + shown[-1]
    return f"{what} {listed} {'both give' if len(shown) == 2 else 'all give'} the video id '{vid}'"
