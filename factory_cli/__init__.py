"""fleet-factory: the CLI that joins a machine to an agent-fleet coordinator."""

__version__ = "0.1.0"
