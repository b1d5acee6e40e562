"""Who may call what: tokens and their claims, the roles, and the request check.

- auth/access.py: the before_request check (401/403), `require(permission)`, the rules table;
- auth/tokens.py: issue, verify (with the verified-token cache), revoke, purge;
- auth/claims.py: the rules a token's claims must meet, and the reserved actor names;
- auth/roles.py: the roles a token can carry.
Modules are imported by name (`from ..auth.access import require`): config imports roles, and
tokens imports config, so this package imports nothing itself.
"""
