"""Secret redaction: any run of 8+ characters that also occurs in a secret is replaced, not just the whole key."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "[redacted]"
MIN_RUN = 8


class Redactor:
    """Finds every 8-character window of the text that is also a window of a secret, and replaces each
    run of such windows: an upstream echoing a key's prefix or suffix ("sk-abc12...wxyz9") hides it too."""

    def __init__(self, secrets: Iterable[str], min_run: int = MIN_RUN) -> None:
        self.min_run = min_run
        self.windows = frozenset(secret[i : i + min_run] for secret in secrets
                                 for i in range(len(secret) - min_run + 1))

    def __call__(self, text: str) -> str:
        n = self.min_run
        if not self.windows or len(text) < n:
            return text
        windows = self.windows
        out: list[str] = []
        kept = 0  # text[:kept] is already in ``out``
        run_end = -1
        for i in range(len(text) - n + 1):
            if text[i : i + n] in windows:
                if i > run_end:  # a new run starts here
                    out.append(text[kept:i])
                    out.append(REDACTED)
                run_end = i + n
                kept = run_end
        if not out:
            return text
        out.append(text[kept:])
        return "".join(out)

    def __bool__(self) -> bool:
        return bool(self.windows)
