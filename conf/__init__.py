"""lopt's Hydra configs (``pkg://conf``). Importing the package registers the resolvers they use
(:mod:`lopt_cli.commands.resolvers`), so that any composition of them resolves."""
import lopt_cli.commands.resolvers  # noqa: F401
