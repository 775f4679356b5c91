"""`tlcli cache info|clear`: the frozen-feature cache."""

from __future__ import annotations

import typer

from tlcli.cli import Debug, Json, app, command, output
from tlcli.paths import cache_root
from tlcli.settings import CACHE_DIR

cache_app = typer.Typer(
    help=f"The frozen-feature cache (${CACHE_DIR.name}, default ~/.cache/tlcli).", no_args_is_help=True
)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@command
def cache_info(json_output: Json = False, debug: Debug = False) -> None:
    """Show where the cache is, its size and cap, and what it holds."""
    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from tlcli.features.store import cache_entries, max_bytes

    entries = cache_entries()
    facts = {
        "folder": str(cache_root()),
        "bytes": sum(e.bytes for e in entries),
        "cap_bytes": max_bytes(),
        "entries": [
            {
                "key": e.key,
                "files": e.files,
                "bytes": e.bytes,
                "base": e.describe.get("base"),
                "image_size": e.describe.get("image_size"),
                "cut": e.describe.get("cut"),
            }
            for e in entries
        ],
    }
    if json_output:
        output().print_json(facts)
        return
    output().stdout.print(
        f"{facts['folder']}: {facts['bytes'] / 1e6:.1f} MB of {facts['cap_bytes'] / 1024**3:.1f} GiB cap, "
        f"{len(entries)} model key(s)",
        highlight=False,
    )
    if entries:
        from rich.table import Table

        table = Table()
        for column in ("key", "base", "image size", "cut", "images", "MB"):
            table.add_column(column)
        for entry in facts["entries"]:
            table.add_row(
                entry["key"][:12],
                str(entry["base"]),
                str(entry["image_size"]),
                str(entry["cut"]),
                str(entry["files"]),
                f"{entry['bytes'] / 1e6:.1f}",
            )
        output().stdout.print(table)


@cache_app.command("clear")
@command
def cache_clear(debug: Debug = False) -> None:
    """Delete every cached feature (runs are not touched)."""
    from tlcli.features.store import clear_cache

    freed = clear_cache()
    output().stdout.print(f"cleared {cache_root() / 'features'} ({freed / 1e6:.1f} MB)", highlight=False)
