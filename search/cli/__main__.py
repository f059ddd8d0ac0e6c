"""`python -m search.cli`: the same command line as `resnet-search`."""

from search.cli.main import entry_point

entry_point()
