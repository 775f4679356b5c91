"""`python -m tlcli ...` is the same as `tlcli ...`."""

from tlcli.cli import main

main()
