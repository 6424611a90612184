"""The path parameters several areas share, declared once."""

from __future__ import annotations

from fleet.coordinator.identity import NAME
from fleet.http.operation import path_param

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

JOB_ID = path_param("id", "The job id: 'j' and 26 lower-case letters or digits.")
FACTORY_ID = path_param("id", "The factory's name.", NAME.pattern)
ARTIFACT_ID = path_param("artifactId", "The artifact's id (from the list).")
PRODUCT_ID = path_param("productId", "The product.", NAME_PATTERN)
CHANNEL = path_param("channel", "The channel.", NAME_PATTERN)
