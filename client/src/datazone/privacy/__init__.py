"""Privacy computing for the zone: PSI, anonymous query and secure scoring.

Pure cryptography shared by the gateway (the zone's side) and the institution
SDK (the bank's side): nothing here imports the rest of datazone, opens a
database or reads settings.

- `oprf`: the ECDH OPRF over P-256 behind the HTTP-native PSI path.
- `openmined`: OpenMined PSI's wire format, so an institution can use its own
  `openmined-psi` client against the zone.
- `labels`: labeled PSI, the matched enterprises' fields sealed under keys only
  an OPRF output unlocks.
- `engine`: SecretFlow's PSI engine (RR22, unbalanced ECDH-OPRF) for batch jobs.
- `anonymous_query`: anonymous query (匿踪查询): hash-prefix buckets of at least k
  candidates, each candidate's answer sealed under its OPRF output.
- `paillier`: Paillier encryption over gmpy2 (keys of 2048 bits or more, with a
  proof that the modulus is a valid one), re-randomization factors.
- `scoring`: secure scoring (安全评分): the model file, encrypted registration, the
  zone's scoring circuit (fixed-base tables, packed and re-randomized outputs) and
  the institution's opening of the scores.

The submodules are not imported here: the engine pulls in SecretFlow's native
library, which a caller of the OPRF alone should not pay for.
"""
