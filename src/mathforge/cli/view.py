"""``mathforge view``: browse a run's problems, samples, verdicts and rejects in a local web page."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(add_completion=False)
console = Console()


@app.command()
def view(
    run: Path = typer.Argument(..., help="run directory"),
    port: int = typer.Option(8765, "--port", "-p", help="port on 127.0.0.1 (0 = any free port)"),
    open_browser: bool = typer.Option(False, "--open", help="open the page in the default browser"),
) -> None:
    """Serve a page on 127.0.0.1 with filters (correct / incorrect / rejected reason / teacher) and text search."""
    from mathforge.errors import ConfigError
    from mathforge.view import make_server

    if not run.is_dir():
        raise ConfigError(f"{run}: not a run directory")
    server = make_server(run, port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    console.print(f"viewing {run} ({len(server.RequestHandlerClass.viewer.items)} records) at {url}  (Ctrl-C stops)")
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
