"""Local development hosting: serve function_app.py without Core Tools, run the local stack.

- `fleet.devhost.host`: `DevHost` serves a FunctionApp's HTTP routes, static web UI and timers.
- `python -m fleet.devhost`: the same from the command line.
- `python -m fleet.devhost.stack`: Azurite + the Cosmos emulator + the local host, one command.
"""
