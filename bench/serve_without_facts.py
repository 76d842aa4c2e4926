"""`access-audit serve` without recording facts: for bench/replay.py's ingest cost only.

The one thing changed is what recording facts costs: the facts builder
(`app.access.service.actor_facts`) returns nothing without looking at the profile, and the
event builder (`app.access.service._event`) records no `details.facts`. Judging, the
reasons with their data, hashing, the append: all as shipped. One worker only (uvicorn
runs the app in this process, so the replacement holds).

    python bench/serve_without_facts.py serve --port N --workers 1
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(ROOT))


def without_facts() -> None:
    from app.access import service

    shipped = service._event

    def _event(*args: Any, **kwargs: Any) -> Any:
        event = shipped(*args, **kwargs)
        event.details.pop("facts", None)
        return event

    service.actor_facts = lambda actor, today: None  # type: ignore[assignment]
    service._event = _event  # type: ignore[assignment]


if __name__ == "__main__":
    if "--workers" in sys.argv and sys.argv[sys.argv.index("--workers") + 1] != "1":
        raise SystemExit("one worker only: the replacement holds in this process")
    without_facts()
    from app.cli import main

    raise SystemExit(main(sys.argv[1:]))
