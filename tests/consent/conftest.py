from tests.grant.builders import catalog  # noqa: F401  (fixture)
