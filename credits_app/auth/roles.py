"""The roles a token can carry (its `role` claim). What each may do is auth.RULES."""
ROLES = ("admin", "service", "user")
