"""Orchestration: submit, claim, lease, fence, reap, explain. Talks only to the store ports."""

from fleet.coordinator.service import ClaimResult, Coordinator, CoordinatorConfig

__all__ = ["ClaimResult", "Coordinator", "CoordinatorConfig"]
