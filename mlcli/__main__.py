"""`python -m mlcli`."""

from mlcli.cli.app import main

if __name__ == "__main__":
    main()
