"""The command line: a thin layer over the library.

Each module here registers one group of subcommands and imports the library
lazily inside its handlers, so that ``uvm --help`` stays instant.
"""
