"""The mathforge command line: one thin subcommand per stage over the library."""
