"""The keeper: the trusted side of a split deployment (docs/immutability.md).

The writer on Kotomi's host puts new objects and reads; it cannot delete, overwrite or lock.
The keeper, elsewhere, holds the rights the writer lacks and uses them carefully:

    guard.py     what a store shows before anything is decided: versions, the store's own
                 times, tampering, whether and how it locks (and the role settings)
    tamper.py    rewritten, hidden or early-unlocked objects; the store's time of a manifest
    horizons.py  how long a kept backup must stay locked: to the end of its longest tier
    locks.py     extending locks (never shortening), at a bounded cost
    roles.py     a command on the wrong host fails at once, in one line

prune.py applies them; survey.py shows them (list, health, the backup catalog).
"""
