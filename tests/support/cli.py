"""Helpers of the factory CLI's unit tests: an enrolled factory's config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

API = "http://fleet.test/api"


def enrolled(env: dict[str, str], **extra: Any) -> Path:
    """Write the config of factory ``fa`` of product ``p`` (token ``flf_tok``) where ``env``'s
    FLEET_CONFIG_DIR points, mode 0600 as `enroll` writes it."""
    path = Path(env["FLEET_CONFIG_DIR"]) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"api": API, "product": "p", "factoryId": "fa", "token": "flf_tok", **extra}
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path
