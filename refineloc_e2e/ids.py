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
  8 hex digits of the full id's sha1, so that ``<id>-<collision suffix>`` and the writers' temp names
  (``.<id>.json.<pid>-<random>.tmp``) stay under the usual 255-byte name limit.

The function is idempotent (an id maps to itself), so an id typed by a user or read from an annotation file
is matched after the same normalisation. Ids that end up equal for different files, including ones that
differ only in case (one file on macOS and Windows), get a suffix: ``features.cache.assign_video_ids``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

MAX_ID_BYTES = 200
_FORBIDDEN = set('/\\:*?"<>|')
_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[1-9\u00b9\u00b2\u00b3]|LPT[1-9\u00b9\u00b2\u00b3])", re.IGNORECASE)
_HASH_CHARS = 8


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
        digest = hashlib.sha1(vid.encode("utf-8")).hexdigest()[:_HASH_CHARS]
        budget = MAX_ID_BYTES - 1 - _HASH_CHARS
        cut = vid.encode("utf-8")[:budget].decode("utf-8", errors="ignore")  # drops a split last character
        vid = f"{cut}-{digest}"
    return vid


def video_id_of(path: str | Path) -> str:
    """The video id of a video file: :func:`video_id` of its stem."""
    return video_id(Path(path).stem)


def collision_key(vid: str) -> str:
    """Ids with equal keys name one file on a case-insensitive file system (macOS, Windows)."""
    return vid.casefold()
