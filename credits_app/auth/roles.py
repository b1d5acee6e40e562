"""The roles a token can carry (its `role` claim). What each may do is auth.RULES.

admin: everything. service: the platform's backend (users and balance changes). user: one
end user reading its own balance, ledger and holds. support: a person answering questions
about users (reads any user's balance, ledger, holds, the grant runs and the webhooks'
deliveries; changes nothing)."""
ROLES = ("admin", "service", "user", "support")
