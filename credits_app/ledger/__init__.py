"""The only code that changes balances.

Guarantees:
- a balance never goes below zero (the UPDATE is conditional and the CHECK constraint backs
  it), and an add never takes it above MAX_BALANCE;
- each change writes exactly one ledger row in the same transaction as the balance;
- an Idempotency-Key (scoped to the actor) takes effect at most once: the claim is written in
  the same transaction, and a UNIQUE index on the ledger refuses a second entry even if two
  requests race.

Rules for every statement that decides on a balance (refuse, cap, skip):
- A decision is made on the newest committed balance, read under the row lock, and a
  refusal reports that balance: on PostgreSQL the change statement locks the row first
  (`cur`) and computes both the condition and the new balance from it (postgres.py says why
  the UPDATE's own view of the row will not do); on SQLite BEGIN IMMEDIATE serialises
  writers, so the balance read inside the transaction is the newest.
- A credit checks `<= MAX_BALANCE` only, a debit `>= 0` only, a reset nothing (rules.ALLOWED).
- A stored (keyed) refusal is written in the same statement as the decision, with the
  balance it was made on, so it was right when it was made.
- The daily grant's cap skip is the one decision left to the UPDATE's own WHERE, on the
  statement's snapshot: a row that passes is re-checked on its newest version when another
  change committed first, and a row skipped as at the cap was at the cap at the snapshot,
  so each user's outcome is that of the grant running just before or just after the
  concurrent change (serializable per user). It reports no figures, and locking whole
  chunks first to decide on the newest rows would stall every change to those users.

On PostgreSQL a change is ONE autocommit statement (lock row, conditional UPDATE, ledger
INSERT, key claim), so the success path costs one round trip, run straight on the pooled
driver connection (fast_path.py). SQLite runs the same steps as separate statements
inside one BEGIN IMMEDIATE transaction, which serialises writers.

Every entry's time follows the time rule (rules.PG_ENTRY_TIME): taken under the row lock and
after the user's previous entry, so a user's entries in time order are in entry order. The
reads by time (history.py: as of an instant, a chart's points; export.py) rest on it.

Holds (holds.py) keep part of a balance for a later capture: a debit spends only what they
do not keep, and every hold operation decides on the locked row too.

Modules: changes (add, deduct, reset, replays), holds (hold, capture, release, expiry), reversals (a compensating entry for one
entry), rules (what a change may do, the refusals, the time rule), postgres and sqlite (each
dialect's statement), fast_path (the PostgreSQL seam), reads (balance, entries, verify),
history (as-of, points), export, records, grant (the daily grant's SQL).
"""
from . import alerts, holds
from .changes import add, deduct, reset
from .export import export
from .grant import GRANT_ACTOR, grant_daily_chunk
from .history import as_of, history
from .reads import balance, entries, position, purge_idempotency_keys, verify
from .reversals import over_reversed, reverse
from .records import ENTRY_COLUMNS, Balance, Change, Entry

__all__ = ["add", "deduct", "reset", "alerts", "holds", "reverse", "over_reversed", "balance", "entries", "position",
           "purge_idempotency_keys", "verify", "as_of", "history", "export", "grant_daily_chunk", "GRANT_ACTOR",
           "ENTRY_COLUMNS", "Balance", "Change", "Entry"]
