"""``python -m lowbit`` runs the command-line tool."""

from lowbit.cli import main

raise SystemExit(main())
