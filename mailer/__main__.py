"""`python -m mailer` runs the command-line interface."""

from mailer.cli import main

if __name__ == "__main__":
    main()
