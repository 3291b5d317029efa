import typer

app = typer.Typer(help="StreetSense command line.")


@app.command()
def version() -> None:
    """Print the version."""
    from streetsense import __version__

    print(__version__)
