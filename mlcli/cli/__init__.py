"""The command line: the Typer app, the error boundary and one module per command."""
