"""The ledger of debits and credits, and the monthly statements drawn from it."""
