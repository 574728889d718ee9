"""The `medr1` command line (medr1/cli/app.py puts the command groups together)."""
