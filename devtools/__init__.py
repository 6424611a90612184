"""Local development hosting: serve function_app.py without Core Tools, run the local stack.

- `devtools.host`: `DevHost` serves a FunctionApp's HTTP routes, static web UI and timers.
- `python -m devtools`: the same from the command line.
- `python -m devtools.stack`: Azurite + the Cosmos emulator + the local host, one command.
"""
