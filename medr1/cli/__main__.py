"""`python -m medr1.cli`: the same as the `medr1` command."""

from medr1.cli.app import main

main()
