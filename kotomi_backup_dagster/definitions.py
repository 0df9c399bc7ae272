"""The code location configured by the environment (KOTOMI_* variables): every area, for
every configured database. A bad value fails here, at load, with one line."""

from .defs.factory import definitions_from_env

defs = definitions_from_env()
