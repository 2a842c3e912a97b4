"""Privacy computing for the zone: private set intersection and labeled PSI.

Pure cryptography shared by the gateway (the zone's side) and the institution
SDK (the bank's side): nothing here imports the rest of datazone, opens a
database or reads settings.

- `oprf`: the ECDH OPRF over P-256 behind the HTTP-native PSI path.
- `openmined`: OpenMined PSI's wire format, so an institution can use its own
  `openmined-psi` client against the zone.
- `labels`: labeled PSI, the matched enterprises' fields sealed under keys only
  an OPRF output unlocks.
- `engine`: SecretFlow's PSI engine (RR22, unbalanced ECDH-OPRF) for batch jobs.

The submodules are not imported here: the engine pulls in SecretFlow's native
library, which a caller of the OPRF alone should not pay for.
"""
