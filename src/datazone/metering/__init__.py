"""Plans, meters, usage events and idempotent answers: what each product call may use and what it used."""
