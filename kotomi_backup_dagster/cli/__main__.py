"""`python -m kotomi_backup_dagster.cli`: the same as `kotomi-backup`."""

from .main import main

raise SystemExit(main())
