"""The results page: a results JSON (with its videos, saved scores and, optionally, the truth) -> one
self-contained HTML file that plays each video beside its segments (``refineloc-e2e view``, ``detect --html``).

``inputs`` gathers what the page shows from the files; ``page`` writes it. Stage order: after ``detection``
(whose curves it draws the same way as ``detect --plot``), before ``tools`` and ``cli``.
"""
