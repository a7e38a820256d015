"""What the SMS language detector costs in memory, and what each lingua mode decides.

Each mode runs in its own fresh process: RSS after importing the app's modules, then after
detecting every text of a corpus (the spoken-needs corpus of tests/voice, labelled English or
Spanish, plus short first texts), with ``sms.language.detect`` on the example routing. Reported
per mode: RSS added, how many texts were decided (confidence at least the routing's
``sms.language_confidence``), and how many of those were decided wrongly (a texter answered in
the wrong language), and mean time per detection.

    .venv/bin/python -m bench.language_memory
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("high", "low")
EXTRA = [
    ("en", "hi"), ("es", "hola"), ("en", "I need help"), ("es", "necesito ayuda"), ("en", "can you talk"),
    ("es", "puedo hablar con alguien"), ("en", "my son took pills"), ("es", "mi hijo tomo pastillas"),
    ("en", "please help me"), ("es", "ayudame por favor"),
]  # fmt: skip


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(mode: str) -> dict[str, Any]:
    """In this process: RSS and decisions of ``sms.language.detect`` in ``mode``."""
    from crisisline.settings import DEFAULT_ROUTING_FILE
    from routing.validation import load_document
    from sms import language
    from tests.voice.test_spoken_needs_corpus import ENGLISH, SPANISH

    language.ACCURACY = mode
    document = load_document(DEFAULT_ROUTING_FILE.read_text())
    threshold = document.sms.language_confidence
    corpus = [("en", text) for text, _ in ENGLISH] + [("es", text) for text, _ in SPANISH] + EXTRA
    before = _rss_mib()
    decided = wrong = by_lingua = 0
    decisions = []
    started = time.perf_counter()
    for expected, text in corpus:
        found, confidence = language.detect(document, text)
        by_lingua += confidence < 1.0 and found is not None
        chosen = found.code.split("-")[0] if found is not None and confidence >= threshold else None
        decisions.append(chosen)
        if chosen is not None:
            decided += 1
            wrong += chosen != expected
    seconds = time.perf_counter() - started
    return {
        "mode": mode,
        "texts": len(corpus),
        "decided": decided,
        "decided_wrongly": wrong,
        "scored_by_lingua": by_lingua,
        "decisions": decisions,
        "rss_mib_before": round(before, 1),
        "rss_mib_added": round(_rss_mib() - before, 1),
        "ms_per_text": round(seconds * 1000 / len(corpus), 3),
    }


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2])))
        return 0
    rows = []
    for mode in MODES:
        output = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench.language_memory", "--child", mode],
            cwd=ROOT, check=True, capture_output=True, text=True, timeout=300,
        ).stdout  # fmt: skip
        rows.append(json.loads(output.strip().splitlines()[-1]))
    print("| lingua mode | texts | scored by lingua | decided | decided wrongly | RSS added (MiB) | ms per text |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['mode']} | {row['texts']} | {row['scored_by_lingua']} | {row['decided']} | "
              f"{row['decided_wrongly']} | {row['rss_mib_added']} | {row['ms_per_text']} |")  # fmt: skip
    differ = sum(a != b for a, b in zip(rows[0]["decisions"], rows[1]["decisions"], strict=True))
    print(f"\nTexts decided differently by the two modes: {differ} of {rows[0]['texts']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
