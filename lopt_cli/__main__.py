"""``python -m lopt_cli`` is ``lopt``."""
from lopt_cli.cli import main

if __name__ == "__main__":
    main()
