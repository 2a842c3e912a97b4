"""The subcommands of `datazone-client`, one module per family, each with its own Typer app.

`datazone.client.cli` loads a module only when one of its commands runs, so `--help` and the
plain HTTP commands never import what PSI (OpenMined's PSI, SecretFlow's engine) or secure
scoring (gmpy2, the Paillier circuit) need.
"""
