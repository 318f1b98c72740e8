"""`python -m modernenc ...` is the `modernenc` command."""

from modernenc.cli import main

if __name__ == "__main__":
    main()
